"""Filestore shares and GCS buckets through the CLI against the emulator: create -> plan shows no
change -> an added share and bucket apply only that change -> down leaves nothing labelled, and
never touches a bucket gcpgpu did not create."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gcpgpu.clients import ClientFactory
from gcpgpu.emulator.filestore import FilestoreService
from gcpgpu.emulator.storage import StorageService

from emulated import gcpgpu

PROJECT = "demo-project"
SA = "serviceAccount:gcpgpu-demo@demo-project.iam.gserviceaccount.com"
BASE = """name: demo
project: demo-project
zone: us-central1-a
labels: {team: ml}
node_groups:
  cpu: {count: 1, machine_type: n1-standard-4}
"""
STORAGE = """storage:
  nfs:
    - {path: /mnt/shared, tier: BASIC_HDD, size_gb: 1024}
  gcs:
    - {bucket: existing-data, path: /mnt/data}
    - {bucket: demo-results, path: /mnt/results, create: true}
"""
# The env-var tool's string forms work as list items too.
ADDED = (STORAGE.replace("  gcs:\n", "    - /mnt/scratch:BASIC_SSD\n  gcs:\n")
         + "    - {bucket: demo-ckpt, path: /mnt/ckpt, create: true}\n")


def service(emu, kind):
    return next(s for s in emu.services if isinstance(s, kind))


@pytest.fixture
def existing_bucket(emu):
    """A bucket someone else made: mounted, never changed or deleted."""
    from google.cloud import storage

    client = ClientFactory(emu.url).get(storage.Client, project=PROJECT)
    client.create_bucket("existing-data", location="us-central1")
    service(emu, StorageService).put_object("existing-data", "train/shard-0")
    return client


def plan_rows(emu, spec: Path) -> list[tuple[str, str, str]]:
    rows = json.loads(gcpgpu(emu, "plan", str(spec), "--json").output)["changes"]
    return sorted((r["action"], r["kind"], r["name"]) for r in rows)


def shares(emu) -> dict[str, dict]:
    return {i["name"].rsplit("/", 1)[-1]: i for i in service(emu, FilestoreService).snapshot()
            if i["labels"].get("gcpgpu-cluster") == "demo"}


def buckets(emu) -> dict[str, dict]:
    return {b["name"]: b for b in service(emu, StorageService).snapshot()}


def mutations(emu) -> list[str]:
    return sorted(c.method_id for c in emu.calls if c.mutating)


def test_create_plan_add_and_down(emu, tmp_path, existing_bucket):
    spec = tmp_path / "demo.yaml"
    spec.write_text(BASE + STORAGE)
    gcpgpu(emu, "up", str(spec))

    [share] = shares(emu).values()
    assert share["name"] == "projects/demo-project/locations/us-central1-a/instances/demo-mnt-shared"
    assert share["state"] == "READY" and share["tier"] == "BASIC_HDD"
    assert share["fileShares"] == [{"name": "share1", "capacityGb": "1024"}]
    assert share["networks"][0]["network"] == "default" and share["networks"][0]["ipAddresses"]
    assert share["labels"]["team"] == "ml"
    results = buckets(emu)["demo-results"]
    assert results["versioning"] == {"enabled": True}
    assert results["labels"]["gcpgpu-cluster"] == "demo" and results["labels"]["team"] == "ml"
    assert results["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"] is True
    assert results["iamConfiguration"]["publicAccessPrevention"] == "enforced"
    assert results["location"] == "US-CENTRAL1"
    bindings = service(emu, StorageService).policy("demo-results")["bindings"]
    assert {"role": "roles/storage.objectUser", "members": [SA]} in bindings
    assert "labels" not in buckets(emu)["existing-data"]  # mounted, not adopted

    # The inventory hands every node the share's address and export.
    inventory = json.loads(gcpgpu(emu, "inventory", str(spec)).output)
    assert inventory["all"]["vars"]["gcpgpu_nfs_mounts"] == [{
        "server": share["networks"][0]["ipAddresses"][0], "export": "/share1",
        "path": "/mnt/shared", "options": "rw,hard,timeo=600,retrans=3,_netdev,nofail"}]

    emu.reset_calls()
    assert {action for action, _, _ in plan_rows(emu, spec)} == {"keep"}
    gcpgpu(emu, "up", str(spec))
    assert mutations(emu) == []

    # An added share and an added bucket: exactly those are created.
    spec.write_text(BASE + ADDED)
    changes = [row for row in plan_rows(emu, spec) if row[0] != "keep"]
    assert changes == [("create", "bucket", "demo-ckpt"),
                       ("create", "filestore-instance", "demo-mnt-scratch")]
    emu.reset_calls()
    gcpgpu(emu, "up", str(spec))
    assert mutations(emu) == ["file.projects.locations.instances.create", "storage.buckets.insert",
                              "storage.buckets.setIamPolicy"]
    assert sorted(shares(emu)) == ["demo-mnt-scratch", "demo-mnt-shared"]
    assert shares(emu)["demo-mnt-scratch"]["fileShares"][0]["capacityGb"] == "2560"

    gcpgpu(emu, "down", str(spec))
    assert shares(emu) == {}
    assert [name for name, b in buckets(emu).items() if "gcpgpu-cluster" in b.get("labels", {})] == []
    assert [i for i in emu.instances() if i.get("labels", {}).get("gcpgpu-cluster") == "demo"] == []
    assert "existing-data" in buckets(emu)  # never ours to delete


def test_resize_and_labels_change_in_place(emu, tmp_path):
    spec = tmp_path / "demo.yaml"
    spec.write_text(BASE.replace("count: 1", "count: 0") + STORAGE.replace(
        "    - {bucket: existing-data, path: /mnt/data}\n", ""))
    gcpgpu(emu, "up", str(spec))
    spec.write_text(spec.read_text().replace("size_gb: 1024", "size_gb: 2048")
                    .replace("team: ml", "team: infra"))
    changes = [row for row in plan_rows(emu, spec) if row[0] != "keep"]
    assert changes == [("update", "bucket", "demo-results"),
                       ("update", "filestore-instance", "demo-mnt-shared")]
    emu.reset_calls()
    gcpgpu(emu, "up", str(spec))
    assert mutations(emu) == ["file.projects.locations.instances.patch", "storage.buckets.patch"]
    share = shares(emu)["demo-mnt-shared"]
    assert share["fileShares"][0]["capacityGb"] == "2048" and share["labels"]["team"] == "infra"
    assert buckets(emu)["demo-results"]["labels"]["team"] == "infra"
    assert {action for action, _, _ in plan_rows(emu, spec)} == {"keep"}


def test_a_created_bucket_with_objects_is_kept_unless_forced(emu, tmp_path):
    spec = tmp_path / "demo.yaml"
    body = BASE.replace("count: 1", "count: 0") + "storage:\n  gcs:\n" \
        "    - {bucket: demo-results, path: /mnt/results, create: true}\n"
    spec.write_text(body)
    gcpgpu(emu, "up", str(spec))
    service(emu, StorageService).put_object("demo-results", "ckpt/step-1")
    service(emu, StorageService).put_object("demo-results", "ckpt/step-1")  # a noncurrent version

    result = gcpgpu(emu, "down", str(spec), expect=1)
    assert "still holds objects" in result.output and "force_destroy_all_objects" in result.output
    assert "demo-results" in buckets(emu)

    spec.write_text(body.replace("create: true", "create: true, force_destroy_all_objects: true"))
    gcpgpu(emu, "down", str(spec))
    assert "demo-results" not in buckets(emu)


def test_force_flag_recorded_on_the_bucket_works_without_the_spec_entry(emu, tmp_path):
    spec = tmp_path / "demo.yaml"
    entry = "storage:\n  gcs:\n    - {bucket: demo-results, path: /mnt/r, create: true, " \
            "force_destroy_all_objects: true}\n"
    spec.write_text(BASE.replace("count: 1", "count: 0") + entry)
    gcpgpu(emu, "up", str(spec))
    assert buckets(emu)["demo-results"]["labels"]["gcpgpu-force-destroy"] == "true"
    service(emu, StorageService).put_object("demo-results", "a")
    spec.write_text(BASE.replace("count: 1", "count: 0"))  # entry removed: up deletes it
    gcpgpu(emu, "up", str(spec))
    assert "demo-results" not in buckets(emu)


def test_buckets_of_others_are_refused_not_adopted(emu, tmp_path, existing_bucket):
    bucket = existing_bucket.bucket("other-results")
    bucket.labels = {"gcpgpu-cluster": "other"}
    existing_bucket.create_bucket(bucket, location="us-central1")
    spec = tmp_path / "demo.yaml"
    spec.write_text(BASE.replace("count: 1", "count: 0") + "storage:\n  gcs:\n"
                    "    - {bucket: other-results, path: /mnt/o, create: true}\n"
                    "    - {bucket: existing-data, path: /mnt/e, create: true}\n")
    result = gcpgpu(emu, "up", str(spec), expect=1)
    assert "belongs to gcpgpu cluster 'other'" in result.output
    assert "gcpgpu did not create it" in result.output
    assert buckets(emu)["other-results"]["labels"] == {"gcpgpu-cluster": "other"}
    gcpgpu(emu, "down", str(spec))
    assert {"other-results", "existing-data"} <= set(buckets(emu))


def test_a_share_left_by_a_killed_run_is_adopted(emu, tmp_path):
    spec = tmp_path / "demo.yaml"
    spec.write_text(BASE.replace("count: 1", "count: 0") + "storage:\n  nfs: /mnt/shared:BASIC_HDD:1024\n")
    gcpgpu(emu, "up", str(spec))
    import shutil

    from gcpgpu.state import ClusterState

    shutil.rmtree(ClusterState.for_spec({"name": "demo", "project": PROJECT}).dir)
    emu.reset_calls()
    assert {action for action, _, _ in plan_rows(emu, spec)} == {"keep"}  # found by its label
    gcpgpu(emu, "down", str(spec))
    assert shares(emu) == {}


def test_a_foreign_share_with_our_name_is_refused(emu, tmp_path):
    from google.cloud import filestore_v1

    client = ClientFactory(emu.url).get(filestore_v1.CloudFilestoreManagerClient, transport="rest")
    client.create_instance(parent="projects/demo-project/locations/us-central1-a",
                           instance_id="demo-mnt-shared", instance=filestore_v1.Instance(
                               tier="BASIC_HDD", file_shares=[{"name": "vol1", "capacity_gb": 1024}],
                               networks=[{"network": "default"}])).result(timeout=30)
    spec = tmp_path / "demo.yaml"
    spec.write_text(BASE.replace("count: 1", "count: 0") + "storage:\n  nfs: /mnt/shared:BASIC_HDD:1024\n")
    result = gcpgpu(emu, "up", str(spec), expect=1)
    assert "demo-mnt-shared" in result.output and "not labelled gcpgpu-cluster" in result.output
    gcpgpu(emu, "down", str(spec))
    assert len(service(emu, FilestoreService).snapshot()) == 1


def test_enterprise_share_lives_in_the_region(emu, tmp_path):
    spec = tmp_path / "demo.yaml"
    spec.write_text(BASE.replace("count: 1", "count: 0")
                    + "storage:\n  nfs: [{path: /mnt/e, tier: ENTERPRISE, size_gb: 1024}]\n")
    gcpgpu(emu, "up", str(spec))
    assert "/locations/us-central1/instances/demo-mnt-e" in shares(emu)["demo-mnt-e"]["name"]
    assert {action for action, _, _ in plan_rows(emu, spec)} == {"keep"}


def test_down_works_without_the_filestore_api_or_bucket_rights(emu, tmp_path):
    spec = tmp_path / "demo.yaml"
    spec.write_text(BASE)
    gcpgpu(emu, "up", str(spec))
    emu.inject_fault("file.projects.locations.instances.list", "SERVICE_DISABLED", http_status=403, message=(
        "Cloud Filestore API has not been used in project demo-project before or it is disabled. "
        "[reason: SERVICE_DISABLED]"))
    emu.inject_fault("storage.buckets.list", "forbidden", http_status=403, message="no storage.buckets.list")
    gcpgpu(emu, "down", str(spec))  # `down` looks at every provider; nothing of ours can be there
    assert [i for i in emu.instances() if i.get("labels", {}).get("gcpgpu-cluster") == "demo"] == []


def test_no_right_to_list_buckets_stops_a_cluster_that_creates_one_with_a_clear_error(emu, tmp_path):
    spec = tmp_path / "demo.yaml"
    spec.write_text(BASE.replace("count: 1", "count: 0")
                    + "storage:\n  gcs:\n    - {bucket: demo-results, path: /mnt/r, create: true}\n")
    emu.inject_fault("storage.buckets.list", "forbidden", http_status=403, message="no storage.buckets.list")
    result = gcpgpu(emu, "plan", str(spec), expect=1)
    assert "cannot list the buckets of demo-project" in result.output
