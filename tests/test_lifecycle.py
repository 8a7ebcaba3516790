"""validate -> plan -> up -> status -> down through the CLI, against the bundled emulator."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gcpgpu.emulator import Emulator
from gcpgpu.state import ClusterState

from emulated import gcpgpu

PROJECT = "demo-project"


def write_spec(tmp_path: Path, body: str = "", name: str = "demo") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nproject: {PROJECT}\nzone: us-central1-a\n" + body)
    return path


GROUPS = """node_groups:
  head:
    count: 1
    machine_type: n1-standard-8
    accelerator: {type: nvidia-tesla-t4, count: 1}
  workers:
    count: 3
    machine_type: a2-highgpu-2g
"""


def ours(emu, cluster="demo") -> list[dict]:
    return [i for i in emu.instances() if i.get("labels", {}).get("gcpgpu-cluster") == cluster]


def test_up_creates_each_group_with_one_bulk_insert_and_rerun_changes_nothing(emu, tmp_path):
    spec = write_spec(tmp_path, GROUPS)
    gcpgpu(emu, "up", str(spec))
    instances = {i["name"]: i for i in ours(emu)}
    assert sorted(instances) == ["demo-head-0000", "demo-workers-0000", "demo-workers-0001",
                                 "demo-workers-0002"]
    assert emu.count(method="compute.instances.bulkInsert") == 2
    head = instances["demo-head-0000"]
    assert head["labels"]["gcpgpu-group"] == "head"
    assert head["scheduling"]["onHostMaintenance"] == "TERMINATE"
    assert head["guestAccelerators"][0]["acceleratorCount"] == 1
    assert all(i["status"] == "RUNNING" for i in instances.values())

    emu.reset_calls()
    gcpgpu(emu, "up", str(spec))
    assert emu.count(mutating=True) == 0

    status = json.loads(gcpgpu(emu, "status", str(spec), "--json").output)
    assert {n["name"]: n["group"] for n in status["nodes"]}["demo-head-0000"] == "head"
    assert all(n["address"] for n in status["nodes"])


def test_plan_shows_creates_then_keeps_and_calls_nothing_mutating(emu, tmp_path):
    spec = write_spec(tmp_path, GROUPS)
    rows = json.loads(gcpgpu(emu, "plan", str(spec), "--json").output)["changes"]
    assert {r["action"] for r in rows} == {"create"}
    assert sorted(r["kind"] for r in rows) == ["iam-binding"] * 2 + ["instance"] * 4 + ["service-account"]
    assert emu.count(mutating=True) == 0
    gcpgpu(emu, "up", str(spec))
    rows = json.loads(gcpgpu(emu, "plan", str(spec), "--json").output)["changes"]
    assert {r["action"] for r in rows} == {"keep"}


def test_spec_changes_resize_and_replace(emu, tmp_path):
    spec = write_spec(tmp_path, GROUPS)
    gcpgpu(emu, "up", str(spec))
    spec.write_text(spec.read_text().replace("count: 3", "count: 1")
                    .replace("n1-standard-8", "n1-standard-16"))
    rows = json.loads(gcpgpu(emu, "plan", str(spec), "--json").output)["changes"]
    actions = sorted((r["action"], r["name"]) for r in rows)
    assert ("replace", "demo-head-0000") in actions
    assert ("delete", "demo-workers-0002") in actions and ("keep", "demo-workers-0000") in actions
    gcpgpu(emu, "up", str(spec))
    instances = {i["name"]: i for i in ours(emu)}
    assert sorted(instances) == ["demo-head-0000", "demo-workers-0000"]
    assert instances["demo-head-0000"]["machineType"].endswith("/n1-standard-16")


def test_resource_deleted_behind_our_back_is_recreated(emu, tmp_path):
    spec = write_spec(tmp_path, GROUPS)
    gcpgpu(emu, "up", str(spec))
    from google.cloud import compute_v1
    from gcpgpu.clients import ClientFactory

    ClientFactory(emu.url).get(compute_v1.InstancesClient).delete(
        project=PROJECT, zone="us-central1-a", instance="demo-workers-0001")
    time.sleep(0.2)
    emu.reset_calls()
    gcpgpu(emu, "up", str(spec))
    assert emu.count(mutating=True) == 1  # one bulkInsert of the missing VM
    assert len(ours(emu)) == 4


def test_down_removes_everything_even_without_state(emu, tmp_path):
    spec = write_spec(tmp_path, GROUPS)
    gcpgpu(emu, "up", str(spec))
    state_dir = ClusterState.for_spec({"name": "demo", "project": PROJECT}).dir
    assert state_dir.exists()
    import shutil

    shutil.rmtree(state_dir)
    result = gcpgpu(emu, "down", str(spec))
    assert "deleted 7 resource(s)" in result.output  # 4 VMs, the account and its 2 roles
    assert ours(emu) == []
    assert json.loads(gcpgpu(emu, "status", str(spec), "--json").output)["nodes"] == []


def test_down_leaves_other_clusters_alone(emu, tmp_path):
    gcpgpu(emu, "up", str(write_spec(tmp_path, name="keepme")))
    spec = write_spec(tmp_path, GROUPS)
    gcpgpu(emu, "up", str(spec))
    gcpgpu(emu, "down", str(spec))
    assert ours(emu) == [] and len(ours(emu, "keepme")) == 1


def test_stockout_falls_back_to_the_next_zone(emu, tmp_path):
    spec = write_spec(tmp_path, "fallback_zones: [us-central1-b]\n")
    emu.inject_fault("compute.instances.bulkInsert", "ZONE_RESOURCE_POOL_EXHAUSTED",
                     zone="us-central1-a", times=5)
    gcpgpu(emu, "up", str(spec))
    [instance] = ours(emu)
    assert instance["zone"].endswith("/us-central1-b")
    emu.reset_calls()
    gcpgpu(emu, "up", str(spec))  # the node lives in the fallback zone: nothing to change
    assert emu.count(mutating=True) == 0


def test_stockout_everywhere_explains_and_leaves_nothing(emu, tmp_path):
    spec = write_spec(tmp_path, "fallback_zones: [us-central1-b]\n")
    emu.set_capacity("us-central1-a", "nvidia-tesla-a100", 0)
    emu.set_capacity("us-central1-b", "nvidia-tesla-a100", 0)
    result = gcpgpu(emu, "up", str(spec), expect=1)
    assert "us-central1-a" in result.output and "us-central1-b" in result.output
    assert "fallback_zones" in result.output
    assert ours(emu) == []


def test_all_regions_quota_stops_without_trying_other_zones(emu, tmp_path):
    spec = write_spec(tmp_path, "fallback_zones: [us-east1-b]\nnode_groups:\n  gpu: {count: 4}\n")
    emu.set_quota("global", "GPUS_ALL_REGIONS", 4)
    result = gcpgpu(emu, "up", str(spec), expect=1)
    assert "GPUS_ALL_REGIONS" in result.output and "quota" in result.output
    assert emu.count(method="compute.instances.bulkInsert") == 1
    assert ours(emu) == []


def test_transient_errors_are_retried(emu, tmp_path):
    spec = write_spec(tmp_path)
    emu.inject_fault("compute.instances.bulkInsert", "backendError", http_status=503, times=2)
    gcpgpu(emu, "up", str(spec))
    assert len(ours(emu)) == 1
    assert emu.count(method="compute.instances.bulkInsert") == 3


def test_foreign_instance_with_our_name_is_refused_not_adopted(emu, tmp_path):
    from google.cloud import compute_v1
    from gcpgpu.clients import ClientFactory

    client = ClientFactory(emu.url).get(compute_v1.InstancesClient)
    client.insert(project=PROJECT, zone="us-central1-a", instance_resource=compute_v1.Instance(
        name="demo-gpu-0000", machine_type="zones/us-central1-a/machineTypes/n1-standard-1",
        labels={"owner": "someone-else"},
        disks=[compute_v1.AttachedDisk(boot=True, initialize_params=compute_v1.AttachedDiskInitializeParams(
            source_image="projects/debian-cloud/global/images/family/debian-12"))],
        network_interfaces=[compute_v1.NetworkInterface(network="global/networks/default")]))
    time.sleep(0.2)
    result = gcpgpu(emu, "up", str(write_spec(tmp_path)), expect=1)
    assert "demo-gpu-0000" in result.output and "not labelled gcpgpu-cluster=demo" in result.output


def test_instance_missed_by_a_stale_view_is_adopted_not_duplicated(emu, tmp_path, monkeypatch):
    spec = write_spec(tmp_path)
    gcpgpu(emu, "up", str(spec))
    from gcpgpu_plugins.compute import ComputeProvider

    monkeypatch.setattr(ComputeProvider, "observe", lambda self, ctx: [])  # a stale view
    gcpgpu(emu, "up", str(spec))
    assert len(ours(emu)) == 1  # bulkInsert counted the existing one of ours: no duplicate


def test_second_command_fails_fast_naming_the_lock_holder(emu, tmp_path):
    spec = write_spec(tmp_path)
    state = ClusterState.for_spec({"name": "demo", "project": PROJECT})
    with state.lock("gcpgpu up"):
        result = gcpgpu(emu, "up", str(spec), expect=1)
    assert f"pid {os.getpid()}" in result.output and "gcpgpu up" in result.output
    assert emu.count(mutating=True) == 0


def test_kill_9_during_up_then_rerun_converges_without_duplicates(tmp_path):
    spec = write_spec(tmp_path, "node_groups:\n  gpu: {count: 3}\n")
    with Emulator(latency=3.0) as emu:
        env = {**os.environ, "GCPGPU_ENDPOINT": emu.url}
        process = subprocess.Popen([sys.executable, "-c", "from gcpgpu.cli import main; main()",
                                    "up", str(spec), "--no-configure"], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while emu.count(method="compute.instances.bulkInsert") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)  # mid-operation: intent recorded, outcome unknown
        process.wait()
        state = ClusterState.for_spec({"name": "demo", "project": PROJECT})
        # The account and its roles (earlier stages) are done; the VMs' outcome is unknown.
        assert {e["status"] for e in state.resources.values() if e["kind"] == "instance"} == {"creating"}
        result = subprocess.run([sys.executable, "-c", "from gcpgpu.cli import main; main()",
                                 "up", str(spec), "--no-configure"], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert sorted(i["name"] for i in ours(emu)) == ["demo-gpu-0000", "demo-gpu-0001", "demo-gpu-0002"]
        final = ClusterState.for_spec({"name": "demo", "project": PROJECT}).resources
        assert {e["status"] for e in final.values()} <= {"created"}
