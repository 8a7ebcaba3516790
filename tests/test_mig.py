"""The mig provider through the CLI against the bundled emulator: a node group as an instance
template plus a managed instance group; resize and template changes in place; stockouts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gcpgpu.cli import cli
from gcpgpu.emulator import Emulator
from gcpgpu.errors import SpecError
from gcpgpu.plugins import Plugins
from gcpgpu.spec import load_spec

from emulated import gcpgpu

PROJECT = "demo-project"
ZONE = "us-central1-a"
A100 = "nvidia-tesla-a100"


def write_spec(tmp_path: Path, group: str, top: str = "") -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(f"name: demo\nproject: {PROJECT}\nzone: {ZONE}\n{top}node_groups:\n  workers:\n"
                    f"    provider: mig\n" + "".join(f"    {line}\n" for line in group.strip().splitlines()))
    return path


def plan(emu, spec) -> list[tuple[str, str, str]]:
    """The plan's rows for VMs and groups (the cluster's service account has rows of its own)."""
    rows = json.loads(gcpgpu(emu, "plan", str(spec), "--json").output)["changes"]
    return sorted((r["action"], r["kind"], r["name"]) for r in rows if r["provider"] in ("mig", "compute"))


def instances(emu) -> list[dict]:
    return [i for i in emu.instances() if i.get("labels", {}).get("gcpgpu-cluster") == "demo"]


def templates(emu) -> list[str]:
    return sorted(name for (_, _, name) in emu.state.templates)


def groups(emu) -> dict:
    return {name: g for (_, _, name), g in emu.state.groups.items()}


def test_create_plan_resize_down(emu, tmp_path):
    spec = write_spec(tmp_path, "count: 2\nmachine_type: a2-highgpu-2g")
    gcpgpu(emu, "up", str(spec))
    [template] = templates(emu)
    assert template.startswith("demo-workers-") and len(template) == len("demo-workers-") + 8
    assert list(groups(emu)) == ["demo-workers"]
    made = instances(emu)
    assert len(made) == 2 and {i["status"] for i in made} == {"RUNNING"}
    assert {i["labels"]["gcpgpu-group"] for i in made} == {"workers"}
    assert all(i["scheduling"]["onHostMaintenance"] == "TERMINATE" for i in made)

    assert {action for action, _, _ in plan(emu, spec)} == {"keep"}
    status = json.loads(gcpgpu(emu, "status", str(spec), "--json").output)
    assert sorted(n["name"] for n in status["nodes"]) == sorted(i["name"] for i in made)
    assert {n["group"] for n in status["nodes"]} == {"workers"} and all(n["address"] for n in status["nodes"])

    spec.write_text(spec.read_text().replace("count: 2", "count: 3"))
    assert plan(emu, spec) == [("keep", "instanceTemplate", template),
                               ("update", "instanceGroupManager", "demo-workers")]
    emu.reset_calls()
    gcpgpu(emu, "up", str(spec))
    mutating = {c.method_id for c in emu.calls if c.mutating}
    assert mutating == {"compute.instanceGroupManagers.resize"}  # only that change
    assert len(instances(emu)) == 3 and templates(emu) == [template]
    assert {i["name"] for i in made} < {i["name"] for i in instances(emu)}  # the first two kept

    gcpgpu(emu, "down", str(spec))
    assert instances(emu) == [] and templates(emu) == [] and groups(emu) == {}


def test_template_change_rolls_the_group_onto_a_new_template(emu, tmp_path):
    spec = write_spec(tmp_path, "count: 2\nmachine_type: a2-highgpu-2g")
    gcpgpu(emu, "up", str(spec))
    [old] = templates(emu)
    before = {i["name"] for i in instances(emu)}

    spec.write_text(spec.read_text().replace("a2-highgpu-2g", "a2-highgpu-1g"))
    rows = plan(emu, spec)
    [new] = [name for action, kind, name in rows if action == "create"]
    assert new != old and new.startswith("demo-workers-")
    assert rows == sorted([("create", "instanceTemplate", new), ("delete", "instanceTemplate", old),
                           ("update", "instanceGroupManager", "demo-workers")])
    gcpgpu(emu, "up", str(spec))
    assert templates(emu) == [new]  # the old one deleted once nothing used it
    assert groups(emu)["demo-workers"].resource["instanceTemplate"].endswith(f"/instanceTemplates/{new}")
    after = instances(emu)
    assert len(after) == 2 and not before & {i["name"] for i in after}  # every instance replaced
    assert {i["machineType"].rsplit("/", 1)[1] for i in after} == {"a2-highgpu-1g"}
    assert {action for action, _, _ in plan(emu, spec)} == {"keep"}


def test_stockout_names_zone_and_reason_and_leaves_nothing(emu, tmp_path):
    spec = write_spec(tmp_path, "count: 2\nstable_timeout_s: 2")
    emu.set_capacity(ZONE, A100, 0)
    result = gcpgpu(emu, "up", str(spec), expect=1)
    assert f"{ZONE}: ZONE_RESOURCE_POOL_EXHAUSTED" in result.output
    assert "not stable after 2s" in result.output and "deleted the group and its template" in result.output
    assert instances(emu) == [] and templates(emu) == [] and groups(emu) == {}

    emu.set_capacity(ZONE, A100, 8)  # capacity is back: a re-run converges
    gcpgpu(emu, "up", str(spec))
    assert len(instances(emu)) == 2 and len(templates(emu)) == 1


def test_keep_partial_keeps_what_was_made_and_rerun_tries_to_grow(emu, tmp_path):
    spec = write_spec(tmp_path, "count: 3\nstable_timeout_s: 2\nkeep_partial: true")
    emu.set_capacity(ZONE, A100, 4)  # two a2-highgpu-2g fit
    result = gcpgpu(emu, "up", str(spec), expect=1)
    assert "ZONE_RESOURCE_POOL_EXHAUSTED" in result.output and "kept 2 node(s)" in result.output
    assert len(instances(emu)) == 2 and groups(emu)["demo-workers"].resource["targetSize"] == 2
    assert ("update", "instanceGroupManager", "demo-workers") in plan(emu, spec)


def test_growth_that_stocks_out_is_resized_back(emu, tmp_path):
    spec = write_spec(tmp_path, "count: 1\nstable_timeout_s: 2")
    gcpgpu(emu, "up", str(spec))
    emu.set_capacity(ZONE, A100, 0)
    spec.write_text(spec.read_text().replace("count: 1", "count: 3"))
    result = gcpgpu(emu, "up", str(spec), expect=1)
    assert f"{ZONE}: ZONE_RESOURCE_POOL_EXHAUSTED" in result.output and "resized the group back to 1" in result.output
    assert len(instances(emu)) == 1 and groups(emu)["demo-workers"].resource["targetSize"] == 1


def test_regional_group_spreads_over_its_zones_and_names_the_zone_out_of_capacity(emu, tmp_path):
    spec = write_spec(tmp_path, "count: 4\nregional: true\nstable_timeout_s: 2\n"
                                "distribution_zones: [us-central1-a, us-central1-b]")
    gcpgpu(emu, "up", str(spec))
    zones = sorted(i["zone"].rsplit("/", 1)[1] for i in instances(emu))
    assert zones == ["us-central1-a", "us-central1-a", "us-central1-b", "us-central1-b"]
    [(scope, name)] = [(s, n) for (_, s, n) in emu.state.groups]
    assert (scope, name) == ("regions/us-central1", "demo-workers")
    assert {a for a, _, _ in plan(emu, spec)} == {"keep"}

    emu.set_capacity("us-central1-b", A100, 0)
    spec.write_text(spec.read_text().replace("count: 4", "count: 6"))
    result = gcpgpu(emu, "up", str(spec), expect=1)
    assert "us-central1-b: ZONE_RESOURCE_POOL_EXHAUSTED" in result.output
    # Resized back to 4: a VM zone a made meanwhile is being deleted (the emulator's latency).
    deadline = time.monotonic() + 30
    while len(instances(emu)) != 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(instances(emu)) == 4 and groups(emu)["demo-workers"].resource["targetSize"] == 4
    gcpgpu(emu, "down", str(spec))
    assert instances(emu) == [] and templates(emu) == [] and groups(emu) == {}


def test_compute_and_mig_groups_side_by_side_do_not_claim_each_others_vms(emu, tmp_path):
    spec = write_spec(tmp_path, "count: 2", top="")
    spec.write_text(spec.read_text() + "  head:\n    count: 1\n    machine_type: a2-highgpu-1g\n")
    gcpgpu(emu, "up", str(spec))
    assert len(instances(emu)) == 3
    rows = plan(emu, spec)
    assert {action for action, _, _ in rows} == {"keep"}
    assert [name for _, kind, name in rows if kind == "instance"] == ["demo-head-0000"]
    status = json.loads(gcpgpu(emu, "status", str(spec), "--json").output)
    assert sorted(n["group"] for n in status["nodes"]) == ["head", "workers", "workers"]
    gcpgpu(emu, "down", str(spec))
    assert instances(emu) == [] and groups(emu) == {}


def test_group_deleted_from_the_spec_is_deleted(emu, tmp_path):
    spec = write_spec(tmp_path, "count: 1")
    spec.write_text(spec.read_text() + "  other:\n    provider: mig\n    count: 1\n")
    gcpgpu(emu, "up", str(spec))
    assert sorted(groups(emu)) == ["demo-other", "demo-workers"]
    spec.write_text(spec.read_text().split("  other:")[0])
    gcpgpu(emu, "up", str(spec))
    assert sorted(groups(emu)) == ["demo-workers"] and len(templates(emu)) == 1 and len(instances(emu)) == 1


def test_template_of_someone_else_is_refused_not_adopted(emu, tmp_path):
    from google.cloud import compute_v1
    from gcpgpu.clients import ClientFactory
    from gcpgpu_plugins.mig import MigProvider

    spec = write_spec(tmp_path, "count: 1")
    loaded = load_spec(spec, Plugins())
    [template, _] = MigProvider().desired(loaded, "workers", loaded["node_groups"]["workers"])
    client = ClientFactory(emu.url).get(compute_v1.InstanceTemplatesClient)
    client.insert(project=PROJECT, instance_template_resource=compute_v1.InstanceTemplate(
        name=template.name, properties=compute_v1.InstanceProperties(
            machine_type="n1-standard-1", labels={"owner": "someone-else"},
            disks=[compute_v1.AttachedDisk(boot=True, initialize_params=compute_v1.AttachedDiskInitializeParams(
                source_image="projects/debian-cloud/global/images/family/debian-12"))])))
    result = gcpgpu(emu, "up", str(spec), expect=1)
    assert template.name in result.output and "not labelled gcpgpu-cluster=demo" in result.output
    assert groups(emu) == {}


def test_kill_9_during_up_then_rerun_converges_without_duplicates(tmp_path):
    spec = write_spec(tmp_path, "count: 2")
    with Emulator(latency=1.0) as emu:
        env = {**os.environ, "GCPGPU_ENDPOINT": emu.url}
        argv = [sys.executable, "-c", "from gcpgpu.cli import main; main()", "up", str(spec), "--no-configure"]
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while emu.count(method="compute.instanceGroupManagers.insert") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)  # the group's insert is in flight
        process.wait()
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert len(templates(emu)) == 1 and list(groups(emu)) == ["demo-workers"]
        assert len(instances(emu)) == 2


# -- cluster.yaml ---------------------------------------------------------------------------------

def problems_of(tmp_path, group: str, top: str = "") -> str:
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(tmp_path, group, top), Plugins())
    return str(info.value)


def test_mig_defaults_apply_to_mig_groups_only(tmp_path):
    spec = write_spec(tmp_path, "count: 1")
    spec.write_text(spec.read_text() + "  head: {}\n")
    loaded = load_spec(spec, Plugins())
    workers, head = loaded["node_groups"]["workers"], loaded["node_groups"]["head"]
    assert {k: workers[k] for k in ("regional", "distribution_zones", "stable_timeout_s", "keep_partial")} == \
        {"regional": False, "distribution_zones": [], "stable_timeout_s": 900, "keep_partial": False}
    assert "keep_partial" not in head and workers["machine_type"] == "a2-highgpu-2g"


def test_mig_fields_on_a_compute_group_are_reported(tmp_path):
    spec = tmp_path / "c.yaml"
    spec.write_text(f"name: demo\nproject: {PROJECT}\nnode_groups:\n  gpu:\n    keep_partial: true\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec, Plugins())
    assert "node_groups.gpu.keep_partial" in str(info.value) and "provider: mig" in str(info.value)


def test_distribution_zones_need_regional_and_the_same_region(tmp_path):
    assert "distribution_zones needs regional: true" in problems_of(
        tmp_path, "distribution_zones: [us-central1-b]")
    text = problems_of(tmp_path, "regional: true\ndistribution_zones: [us-central1-b, europe-west4-a]")
    assert "distribution_zones[1]" in text and "not in the group's region us-central1" in text


def test_compute_checks_apply_to_mig_groups(tmp_path):
    text = problems_of(tmp_path, "machine_type: a2-highgpu-3g")
    assert "node_groups.workers.machine_type" in text and "a2-highgpu" in text


def test_template_names_must_fit(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"name: {'c' * 30}\nproject: {PROJECT}\nnode_groups:\n  {'g' * 25}:\n    provider: mig\n")
    with pytest.raises(SpecError) as info:
        load_spec(path, Plugins())
    assert "instance template names like" in str(info.value)


# -- end to end on real test nodes ------------------------------------------------------------------



def test_up_configures_the_groups_nodes_and_a_resize_configures_the_new_one(node_rig, tmp_path):
    emu, pool = node_rig
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "train.py").write_text("print('train')\n")
    spec = write_spec(tmp_path, "count: 2\nmachine_type: g2-standard-8",
                      top="files: {src: code, dest: /opt/code}\nssh: {timeout_s: 60}\n")
    result = CliRunner().invoke(cli, ["--endpoint", emu.url, "up", str(spec)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    names = sorted(i["name"] for i in instances(emu))
    assert len(names) == 2 and all(n.startswith("demo-workers-") for n in names)
    for name in names:
        node = pool.node(name)
        assert node.path("/opt/code/train.py").read_text() == "print('train')\n"
        assert all(other in node.path("/etc/hosts").read_text() for other in names)

    spec.write_text(spec.read_text().replace("count: 2", "count: 3"))
    gcpgpu_up = CliRunner().invoke(cli, ["--endpoint", emu.url, "up", str(spec)], catch_exceptions=False)
    assert gcpgpu_up.exit_code == 0, gcpgpu_up.output
    [new] = sorted(set(i["name"] for i in instances(emu)) - set(names))
    assert pool.node(new).path("/opt/code/train.py").exists()

    gcpgpu(emu, "down", str(spec))
    assert instances(emu) == [] and pool.nodes() == []


def test_the_example_is_valid():
    spec = load_spec(Path(__file__).resolve().parents[1] / "examples" / "mig-workers.yaml", Plugins())
    from gcpgpu_plugins.mig import distribution_zones

    workers = spec["node_groups"]["workers"]
    assert distribution_zones(spec, workers) == ["us-central1-a", "us-central1-b", "us-central1-c"]
