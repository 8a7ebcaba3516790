"""Cluster state in a Cloud Storage bucket (`state.path: gs://BUCKET/PREFIX`), on the emulator:
the store's records and preconditions, its object lock and `gcpgpu unlock`, and `up` / `plan` /
`down` through the CLI with nothing but a working directory on the local disk."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gcpgpu.clients import ClientFactory
from gcpgpu.emulator.iam import IamService
from gcpgpu.emulator.storage import StorageService
from gcpgpu.errors import GcpgpuError, LockedError
from gcpgpu.plugins import Plugins
from gcpgpu.state import ClusterState, default_state_root

from emulated import gcpgpu

PROJECT = "demo-project"
BUCKET = "team-gcpgpu-state"
PREFIX = f"clusters/{PROJECT}/demo"  # the cluster's objects: <prefix>/<project>/<cluster>/<name>
SPEC = {"name": "demo", "project": PROJECT, "state": {"path": f"gs://{BUCKET}/clusters"}}
GROUPS = """node_groups:
  head: {count: 1, machine_type: n1-standard-8, accelerator: {type: nvidia-tesla-t4, count: 1}}
  workers: {count: 2, machine_type: a2-highgpu-2g}
"""


@pytest.fixture
def bucket(emu):
    from google.cloud import storage

    ClientFactory(emu.url).get(storage.Client, project=PROJECT).create_bucket(BUCKET)
    return next(s for s in emu.services if isinstance(s, StorageService))


def open_state(emu, spec=SPEC) -> ClusterState:
    """A command's view of the state: a client factory of its own, like a separate process."""
    return ClusterState.for_spec(spec, ClientFactory(emu.url), Plugins())


def stored(service: StorageService, name: str):
    data = service.object_data(BUCKET, f"{PREFIX}/{name}")
    return None if data is None else data.decode()


def write_spec(tmp_path: Path, state_path: str = f"gs://{BUCKET}/clusters", body: str = GROUPS) -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(f"name: demo\nproject: {PROJECT}\nzone: us-central1-a\n"
                    f"state: {{path: '{state_path}'}}\n{body}")
    return path


def local_files() -> list[str]:
    root = default_state_root()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------- the store

def test_records_round_trip_through_objects_named_after_project_and_cluster(emu, bucket):
    state = open_state(emu)
    assert state.where == f"gs://{BUCKET}/{PREFIX}"
    state.record({"compute/instance/demo-gpu-0000": {"status": "creating", "request_id": "r1"}})
    state.mark_stopped(["demo-gpu-0000"], True)
    state.remember_spec(SPEC, "demo.yaml")

    again = open_state(emu)
    assert again.resources["compute/instance/demo-gpu-0000"]["request_id"] == "r1"
    assert again.stopped == {"demo-gpu-0000"}
    assert again.remembered_spec()["spec"] == SPEC
    assert json.loads(stored(bucket, "state.json"))["resources"].keys() == {"compute/instance/demo-gpu-0000"}
    assert sorted(o["name"] for o in bucket.objects[BUCKET]) == [
        f"{PREFIX}/spec.json", f"{PREFIX}/state.json", f"{PREFIX}/stopped.json"]
    # Locally: the working directory and the spec copy `gcpgpu ls` reads, nothing else.
    assert local_files() == [f"{PROJECT}/demo/spec.json"]


def test_a_writer_that_bypassed_the_lock_is_detected_not_overwritten(emu, bucket):
    first, second = open_state(emu), open_state(emu)  # both read the (absent) state
    first.record({"a": {"status": "created"}})
    with pytest.raises(GcpgpuError, match=f"gs://{BUCKET}/{PREFIX}/state.json changed since this "
                                          "command read it") as info:
        second.record({"b": {"status": "created"}})
    assert "re-run" in str(info.value)
    assert json.loads(stored(bucket, "state.json"))["resources"].keys() == {"a"}
    third = open_state(emu)  # a command started now reads the current generation and goes on
    third.record({"b": {"status": "created"}})
    assert json.loads(stored(bucket, "state.json"))["resources"].keys() == {"a", "b"}


def test_a_held_lock_fails_the_next_command_naming_the_holder(emu, bucket):
    with open_state(emu).lock("gcpgpu up"):
        assert stored(bucket, "lock").startswith(f"pid {os.getpid()} on ")
        with pytest.raises(LockedError) as info:
            with open_state(emu).lock("gcpgpu down"):
                pass
    message = str(info.value)
    assert f"cluster 'demo' is locked by pid {os.getpid()} on " in message
    assert "running 'gcpgpu up'" in message and "gcpgpu unlock" in message
    assert stored(bucket, "lock") is None  # released on exit


@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt])
def test_the_lock_is_released_when_the_command_fails_or_is_interrupted(emu, bucket, interruption):
    with pytest.raises(interruption):
        with open_state(emu).lock("gcpgpu up"):
            raise interruption()
    assert stored(bucket, "lock") is None
    with open_state(emu).lock("gcpgpu up"):
        pass


def test_missing_bucket_is_one_clear_error(emu):
    with pytest.raises(GcpgpuError) as info:
        open_state(emu)
    assert str(info.value) == (
        f"state bucket gs://{BUCKET} does not exist or is not readable: create it (gcloud storage "
        f"buckets create gs://{BUCKET} --uniform-bucket-level-access --public-access-prevention) "
        f"or change state.path")


def test_local_store_is_the_default_and_unchanged(tmp_path):
    state = ClusterState.for_spec({"name": "demo", "project": PROJECT, "state": {"path": str(tmp_path / "s")}})
    state.record({"a": {"status": "created"}})
    assert not state.store.remote and state.where == str(tmp_path / "s" / PROJECT / "demo")
    assert json.loads((tmp_path / "s" / PROJECT / "demo" / "state.json").read_text())["resources"]["a"]
    assert state.unlock() is None  # an flock dies with its holder: nothing to remove


# ---------------------------------------------------------------------------------- validation

def test_unknown_scheme_fails_validation_with_the_field_before_any_call(emu, tmp_path):
    result = gcpgpu(emu, "up", str(write_spec(tmp_path, "s3://bucket/state")), expect=2)
    assert "state.path: line 4: no plugin keeps state at s3:// ('s3://bucket/state'); " \
           "remote state schemes: gs://" in result.output
    assert "gs://BUCKET/PREFIX" in result.output
    assert emu.calls == []


def test_bad_bucket_name_fails_validation(emu, tmp_path):
    result = gcpgpu(emu, "validate", str(write_spec(tmp_path, "gs://Bad_Bucket/x")), expect=2)
    assert "state.path: line 4: 'Bad_Bucket' is not a Cloud Storage bucket name" in result.output
    assert emu.calls == []


def test_missing_bucket_fails_up_before_anything_is_created(emu, tmp_path):
    result = gcpgpu(emu, "up", str(write_spec(tmp_path)), expect=1)
    assert f"state bucket gs://{BUCKET} does not exist or is not readable" in result.output
    assert emu.count(mutating=True) == 0
    assert local_files() == []


# ---------------------------------------------------------------------------------- end to end

def test_up_plan_locked_up_and_down_keep_state_in_the_bucket(emu, bucket, tmp_path):
    spec = write_spec(tmp_path)
    gcpgpu(emu, "up", str(spec))
    vms = sorted(i["name"] for i in emu.instances() if i["labels"].get("gcpgpu-cluster") == "demo")
    assert vms == ["demo-head-0000", "demo-workers-0000", "demo-workers-0001"]
    recorded = json.loads(stored(bucket, "state.json"))["resources"]
    assert sorted(e["name"] for e in recorded.values() if e["kind"] == "instance") == vms
    assert {e["status"] for e in recorded.values()} == {"created"}
    assert json.loads(stored(bucket, "spec.json"))["spec"]["name"] == "demo"
    assert stored(bucket, "lock") is None
    # Nothing about the cluster on the local disk but the working directory's spec copy.
    assert local_files() == [f"{PROJECT}/demo/spec.json"]
    listed = json.loads(gcpgpu(emu, "ls", "--json").output)["clusters"]
    assert [(c["cluster"], c["resources"], c["state"]) for c in listed] == [
        ("demo", None, f"gs://{BUCKET}/clusters")]

    emu.reset_calls()
    rows = json.loads(gcpgpu(emu, "plan", str(spec), "--json").output)["changes"]
    assert {r["action"] for r in rows} == {"keep"}
    assert emu.count(mutating=True) == 0

    with open_state(emu).lock("gcpgpu configure"):  # someone else's command, on another machine
        emu.reset_calls()
        result = gcpgpu(emu, "up", str(spec), expect=1)
        tried = [(c.method_id, c.status) for c in emu.calls if c.mutating]
    assert f"locked by pid {os.getpid()}" in result.output and "gcpgpu configure" in result.output
    assert tried == [("storage.objects.insert", 412)]  # taking the lock, and nothing else

    gcpgpu(emu, "down", str(spec))
    assert [i for i in emu.instances() if i["labels"].get("gcpgpu-cluster") == "demo"] == []
    iam = next(s for s in emu.services if isinstance(s, IamService))
    assert iam.accounts == {}
    assert json.loads(stored(bucket, "state.json")) == {"resources": {}}  # as the local store leaves it
    assert stored(bucket, "spec.json") is None and stored(bucket, "lock") is None
    assert local_files() == []
    assert json.loads(gcpgpu(emu, "ls", "--json").output)["clusters"] == []


def test_a_lock_left_by_kill_9_is_named_then_removed_by_unlock(emu, bucket, tmp_path):
    spec = write_spec(tmp_path, body="node_groups:\n  gpu: {count: 1}\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time\n"
            "from gcpgpu.clients import ClientFactory\n"
            "from gcpgpu.state import ClusterState\n"
            f"state = ClusterState.for_spec({SPEC!r}, ClientFactory({emu.url!r}))\n"
            "with state.lock('gcpgpu up'):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(600)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
    finally:
        holder.send_signal(signal.SIGKILL)  # no chance to release the lock object
        holder.wait()
    result = gcpgpu(emu, "up", str(spec), expect=1)
    assert f"locked by pid {holder.pid} on " in result.output and "gcpgpu unlock" in result.output
    assert emu.count("compute.instances.bulkInsert") == 0

    result = gcpgpu(emu, "unlock", str(spec))
    assert f"removed the lock of cluster 'demo' (gs://{BUCKET}/{PREFIX}); it was held by pid {holder.pid}" \
           in result.output
    assert stored(bucket, "lock") is None
    assert "is not locked" in gcpgpu(emu, "unlock", str(spec)).output

    gcpgpu(emu, "up", str(spec))
    assert [i["name"] for i in emu.instances()] == ["demo-gpu-0000"]
