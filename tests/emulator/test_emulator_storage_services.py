"""The emulator's Filestore and Cloud Storage services, through the real client libraries."""
from __future__ import annotations

import pytest
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import filestore_v1, storage
from google.protobuf import field_mask_pb2

from gcpgpu.emulator.filestore import FilestoreService
from gcpgpu.emulator.storage import StorageService

PARENT = "projects/p/locations/us-central1-a"


@pytest.fixture
def options(emu) -> dict:
    return {"credentials": AnonymousCredentials(), "client_options": ClientOptions(api_endpoint=emu.url)}


@pytest.fixture
def filestore(options):
    return filestore_v1.CloudFilestoreManagerClient(transport="rest", **options)


def share(tier="BASIC_HDD", capacity=1024, labels=None):
    return filestore_v1.Instance(tier=tier, labels=labels or {},
                                 file_shares=[filestore_v1.FileShareConfig(name="share1", capacity_gb=capacity)],
                                 networks=[filestore_v1.NetworkConfig(network="default")])


def test_filestore_instance_is_creating_then_ready_with_an_address(emu, filestore):
    operation = filestore.create_instance(parent=PARENT, instance_id="demo-a", instance=share())
    assert filestore.get_instance(name=f"{PARENT}/instances/demo-a").state.name == "CREATING"
    ready = operation.result(timeout=30)
    assert ready.state.name == "READY" and ready.networks[0].ip_addresses
    assert ready.networks[0].reserved_ip_range.endswith("/29")
    assert emu.count("file.projects.locations.instances.create") == 1
    with pytest.raises(exceptions.Conflict):
        filestore.create_instance(parent=PARENT, instance_id="demo-a", instance=share())


def test_filestore_list_across_locations_with_a_label_filter(filestore):
    ops = [filestore.create_instance(parent=PARENT, instance_id="a", instance=share(labels={"c": "x"})),
           filestore.create_instance(parent="projects/p/locations/us-east1", instance_id="b",
                                     instance=share("ENTERPRISE", labels={"c": "x"})),
           filestore.create_instance(parent=PARENT, instance_id="c", instance=share(labels={"c": "y"}))]
    for op in ops:
        op.result(timeout=30)
    found = filestore.list_instances(request={"parent": "projects/p/locations/-", "filter": 'labels.c="x"'})
    assert sorted(i.name for i in found) == [f"{PARENT}/instances/a",
                                             "projects/p/locations/us-east1/instances/b"]
    assert list(filestore.list_instances(parent="projects/other/locations/-")) == []


@pytest.mark.parametrize("parent, instance, message", [
    ("projects/p/locations/us-central1", share(), "need a zone"),
    (PARENT, share("ENTERPRISE"), "need a region"),
    (PARENT, share("BASIC_SSD", capacity=1024), "between 2560 and"),
])
def test_filestore_refuses_what_the_service_refuses(filestore, parent, instance, message):
    with pytest.raises(exceptions.BadRequest, match=message):
        filestore.create_instance(parent=parent, instance_id="bad", instance=instance)


def test_filestore_basic_tiers_grow_but_do_not_shrink(filestore):
    instance = filestore.create_instance(parent=PARENT, instance_id="g", instance=share()).result(timeout=30)
    instance.file_shares[0].capacity_gb = 2048
    mask = field_mask_pb2.FieldMask(paths=["file_shares"])
    grown = filestore.update_instance(instance=instance, update_mask=mask).result(timeout=30)
    assert grown.file_shares[0].capacity_gb == 2048
    grown.file_shares[0].capacity_gb = 1024
    with pytest.raises(exceptions.BadRequest, match="cannot shrink"):
        filestore.update_instance(instance=grown, update_mask=mask)


def test_filestore_delete_and_foreign_operation_ids(emu, filestore):
    filestore.create_instance(parent=PARENT, instance_id="d", instance=share()).result(timeout=30)
    filestore.delete_instance(name=f"{PARENT}/instances/d").result(timeout=30)
    with pytest.raises(exceptions.NotFound):
        filestore.get_instance(name=f"{PARENT}/instances/d")
    service = next(s for s in emu.services if isinstance(s, FilestoreService))
    # GKE's operations share this path: ids this service did not issue are not its to answer.
    assert service.serve("GET", f"/v1/{PARENT}/operations/operation-123", {}, {}, emu.url) is None
    assert service.serve("GET", "/v1/projects/p/locations/us-central1-a/clusters", {}, {}, emu.url) is None


def test_buckets_are_one_global_namespace_and_listed_per_project(options):
    mine = storage.Client(project="p", **options)
    theirs = storage.Client(project="q", **options)
    mine.create_bucket("shared-name", location="us-central1")
    with pytest.raises(exceptions.Conflict, match="not available"):
        theirs.create_bucket("shared-name")
    assert [b.name for b in mine.list_buckets()] == ["shared-name"]
    assert list(theirs.list_buckets()) == []


def test_bucket_labels_patch_and_iam_etag(emu, options):
    client = storage.Client(project="p", **options)
    bucket = client.bucket("demo-b")
    bucket.labels = {"a": "1", "b": "2"}
    bucket = client.create_bucket(bucket)
    bucket.labels = {"a": "1"}  # the library sends b: null
    bucket.patch()
    assert client.get_bucket("demo-b").labels == {"a": "1"}
    policy = bucket.get_iam_policy(requested_policy_version=3)
    stale = bucket.get_iam_policy(requested_policy_version=3)
    policy.bindings.append({"role": "roles/storage.objectViewer", "members": {"user:a@example.com"}})
    bucket.set_iam_policy(policy)
    stale.bindings.append({"role": "roles/storage.objectViewer", "members": {"user:b@example.com"}})
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.set_iam_policy(stale)


def test_a_bucket_with_object_versions_cannot_be_deleted(emu, options):
    client = storage.Client(project="p", **options)
    bucket = client.bucket("demo-v")
    bucket.versioning_enabled = True
    client.create_bucket(bucket)
    service = next(s for s in emu.services if isinstance(s, StorageService))
    service.put_object("demo-v", "x")
    service.put_object("demo-v", "x")
    assert len(list(client.list_blobs("demo-v"))) == 1
    versions = list(client.list_blobs("demo-v", versions=True))
    assert len(versions) == 2
    versions[-1].delete()  # the live one: a noncurrent version is left
    with pytest.raises(exceptions.Conflict, match="not empty"):
        client.bucket("demo-v").delete()
    versions[0].delete()
    client.bucket("demo-v").delete()
    assert list(client.list_buckets()) == []
