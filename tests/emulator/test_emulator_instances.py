"""Instances through the real google-cloud-compute clients: create, list, label, lifecycle."""

from __future__ import annotations

import time
import uuid

import pytest
from emulator_helpers import PROJECT, ZONE, bulk_insert, gpu_instance
from google.api_core import exceptions
from google.cloud import compute_v1

Status = compute_v1.Operation.Status


def test_bulk_insert_64_is_one_operation_then_all_running(emu, gce):
    op = bulk_insert(gce, 64, request_id=str(uuid.uuid4()))
    assert op.status in (Status.PENDING, Status.RUNNING)
    assert op.operation_type == "bulkInsert"
    assert emu.count("compute.instances.bulkInsert") == 1

    done = gce.wait(op)
    assert done.status == Status.DONE and not done.error.errors
    assert done.name == op.name

    listing = gce.instances.aggregated_list(request=compute_v1.AggregatedListInstancesRequest(
        project=PROJECT, filter='labels.gcpgpu-cluster = "demo"'))
    found = [i for _, scoped in listing for i in scoped.instances]
    assert len(found) == 64
    assert {i.status for i in found} == {"RUNNING"}
    assert sorted(i.name for i in found)[:2] == ["demo-0001", "demo-0002"]
    first = found[0]
    assert first.self_link == f"{emu.url}/compute/v1/projects/{PROJECT}/zones/{ZONE}/instances/{first.name}"
    assert first.machine_type.endswith(f"/zones/{ZONE}/machineTypes/a2-highgpu-2g")
    assert first.guest_accelerators[0].accelerator_count == 2
    assert first.guest_accelerators[0].accelerator_type.endswith("/acceleratorTypes/nvidia-tesla-a100")
    assert first.disks[0].disk_size_gb == 200
    assert len({i.network_interfaces[0].network_i_p for i in found}) == 64


def test_instances_are_provisioning_until_their_operation_is_done(emu, gce):
    emu.state.latency = 0.5
    op = gce.instances.insert(project=PROJECT, zone=ZONE, instance_resource=gpu_instance("slow-1"))
    assert gce.instances.get(project=PROJECT, zone=ZONE, instance="slow-1").status in ("PROVISIONING", "STAGING")
    assert gce.wait(op).status == Status.DONE
    assert gce.instances.get(project=PROJECT, zone=ZONE, instance="slow-1").status == "RUNNING"


def test_request_id_replays_the_same_operation_and_does_nothing_again(emu, gce):
    request_id = str(uuid.uuid4())
    first = bulk_insert(gce, 3, request_id=request_id)
    second = bulk_insert(gce, 3, request_id=request_id)
    assert second.name == first.name and second.id == first.id
    gce.wait(first)
    third = bulk_insert(gce, 3, request_id=request_id)
    assert third.name == first.name and third.status == Status.DONE
    assert len(emu.instances()) == 3
    assert emu.count("compute.instances.bulkInsert") == 3


def test_request_id_must_be_a_uuid(gce):
    with pytest.raises(exceptions.BadRequest, match="requestId"):
        bulk_insert(gce, 1, request_id="not-a-uuid")


def test_insert_existing_name_is_409_already_exists(gce):
    gce.wait(gce.instances.insert(project=PROJECT, zone=ZONE, instance_resource=gpu_instance("dup")))
    with pytest.raises(exceptions.Conflict) as caught:
        gce.instances.insert(project=PROJECT, zone=ZONE, instance_resource=gpu_instance("dup"))
    assert caught.value.code == 409
    assert "already exists" in caught.value.message
    assert caught.value.errors[0]["reason"] == "alreadyExists"


def test_bulk_insert_counts_existing_named_instances(emu, gce):
    properties = gpu_instance("x")  # only to borrow a valid body
    names = {"node-a": compute_v1.BulkInsertInstanceResourcePerInstanceProperties(),
             "node-b": compute_v1.BulkInsertInstanceResourcePerInstanceProperties()}
    resource = compute_v1.BulkInsertInstanceResource(
        count=2, per_instance_properties=names, instance_properties=compute_v1.InstanceProperties(
            machine_type="a2-highgpu-2g", scheduling=properties.scheduling, disks=properties.disks,
            network_interfaces=properties.network_interfaces))
    for _ in range(2):  # the second call finds both and creates nothing
        op = gce.instances.bulk_insert(project=PROJECT, zone=ZONE, bulk_insert_instance_resource_resource=resource)
        assert not gce.wait(op).error.errors
    assert sorted(i["name"] for i in emu.instances()) == ["node-a", "node-b"]
    status = gce.wait(op).instances_bulk_insert_operation_metadata.per_location_status[f"zones/{ZONE}"]
    assert (status.target_vm_count, status.created_vm_count) == (2, 2)


@pytest.mark.parametrize("machine_type, maintenance", [
    ("a2-highgpu-2g", None), ("a2-highgpu-2g", "MIGRATE"), ("g2-standard-8", None), ("a3-highgpu-8g", "MIGRATE"),
])
def test_gpu_instances_must_terminate_on_host_maintenance(emu, gce, machine_type, maintenance):
    body = gpu_instance("gpu", machine_type=machine_type, on_host_maintenance=maintenance)
    with pytest.raises(exceptions.BadRequest, match="do not support live migration"):
        gce.instances.insert(project=PROJECT, zone=ZONE, instance_resource=body)
    assert emu.instances() == []


def test_n1_with_attached_t4_needs_terminate_and_cpu_only_does_not(emu, gce):
    body = gpu_instance("t4", machine_type="n1-standard-8", on_host_maintenance=None)
    body.guest_accelerators = [compute_v1.AcceleratorConfig(accelerator_type="nvidia-tesla-t4", accelerator_count=1)]
    with pytest.raises(exceptions.BadRequest, match="live migration"):
        gce.instances.insert(project=PROJECT, zone=ZONE, instance_resource=body)
    body.scheduling.on_host_maintenance = "TERMINATE"
    assert not gce.wait(gce.instances.insert(project=PROJECT, zone=ZONE, instance_resource=body)).error.errors
    cpu_only = gpu_instance("cpu", machine_type="e2-standard-4", on_host_maintenance=None)
    assert not gce.wait(gce.instances.insert(project=PROJECT, zone=ZONE, instance_resource=cpu_only)).error.errors


@pytest.mark.parametrize("change, message", [
    (lambda b: setattr(b, "machine_type", "zones/us-central1-a/machineTypes/a9-giant"), "does not exist in zone"),
    (lambda b: setattr(b, "guest_accelerators", [compute_v1.AcceleratorConfig(
        accelerator_type="nvidia-tesla-t4", accelerator_count=1)]), "not compatible"),
    (lambda b: setattr(b.disks[0].initialize_params, "source_image",
                       "projects/debian-cloud/global/images/family/no-such-family"), "cannot be found"),
    (lambda b: setattr(b, "name", "Bad_Name"), "Must be a match of regex"),
])
def test_invalid_insert_is_400_with_a_realistic_message(gce, change, message):
    body = gpu_instance("valid-name")
    change(body)
    with pytest.raises(exceptions.BadRequest, match=message):
        gce.instances.insert(project=PROJECT, zone=ZONE, instance_resource=body)


def test_accelerator_not_offered_in_zone_is_rejected(gce):
    body = gpu_instance("h100", zone="us-central1-f", machine_type="a3-highgpu-8g")
    with pytest.raises(exceptions.BadRequest, match="does not exist in zone 'us-central1-f'"):
        gce.instances.insert(project=PROJECT, zone="us-central1-f", instance_resource=body)
    with pytest.raises(exceptions.BadRequest, match="Unknown zone"):
        gce.instances.insert(project=PROJECT, zone="mars-north1-a", instance_resource=gpu_instance("x"))


def test_set_labels_requires_the_current_fingerprint(gce):
    gce.wait(gce.instances.insert(project=PROJECT, zone=ZONE, instance_resource=gpu_instance("lab")))
    current = gce.instances.get(project=PROJECT, zone=ZONE, instance="lab")
    stale = compute_v1.InstancesSetLabelsRequest(labels={"a": "b"}, label_fingerprint="c3RhbGU=")
    with pytest.raises(exceptions.PreconditionFailed) as caught:
        gce.instances.set_labels(project=PROJECT, zone=ZONE, instance="lab",
                                 instances_set_labels_request_resource=stale)
    assert caught.value.errors[0]["reason"] == "conditionNotMet"

    fresh = compute_v1.InstancesSetLabelsRequest(
        labels={**current.labels, "team": "ml"}, label_fingerprint=current.label_fingerprint)
    op = gce.instances.set_labels(project=PROJECT, zone=ZONE, instance="lab",
                                  instances_set_labels_request_resource=fresh)
    assert op.operation_type == "setLabels"
    assert gce.wait(op).status == Status.DONE
    updated = gce.instances.get(project=PROJECT, zone=ZONE, instance="lab")
    assert dict(updated.labels) == {"gcpgpu-cluster": "demo", "team": "ml"}
    assert updated.label_fingerprint != current.label_fingerprint
    with pytest.raises(exceptions.PreconditionFailed):  # the old fingerprint is now stale
        gce.instances.set_labels(project=PROJECT, zone=ZONE, instance="lab",
                                 instances_set_labels_request_resource=fresh)


def test_set_metadata_requires_the_current_fingerprint(gce):
    gce.wait(gce.instances.insert(project=PROJECT, zone=ZONE, instance_resource=gpu_instance("meta")))
    current = gce.instances.get(project=PROJECT, zone=ZONE, instance="meta").metadata
    items = [compute_v1.Items(key="startup-script", value="echo hi")]
    gce.wait(gce.instances.set_metadata(project=PROJECT, zone=ZONE, instance="meta", metadata_resource=(
        compute_v1.Metadata(fingerprint=current.fingerprint, items=items))))
    assert gce.instances.get(project=PROJECT, zone=ZONE, instance="meta").metadata.items[0].value == "echo hi"
    with pytest.raises(exceptions.PreconditionFailed):
        gce.instances.set_metadata(project=PROJECT, zone=ZONE, instance="meta", metadata_resource=(
            compute_v1.Metadata(fingerprint=current.fingerprint, items=[])))


def test_stop_start_delete_lifecycle(emu, gce):
    gce.wait(gce.instances.insert(project=PROJECT, zone=ZONE, instance_resource=gpu_instance("life")))

    def status():
        return gce.instances.get(project=PROJECT, zone=ZONE, instance="life").status

    stop = gce.instances.stop(project=PROJECT, zone=ZONE, instance="life")
    assert stop.operation_type == "stop"
    gce.wait(stop)
    assert status() == "TERMINATED"
    gce.wait(gce.instances.start(project=PROJECT, zone=ZONE, instance="life"))
    assert status() == "RUNNING"
    delete = gce.instances.delete(project=PROJECT, zone=ZONE, instance="life")
    assert delete.target_link.endswith("/instances/life")
    gce.wait(delete)
    with pytest.raises(exceptions.NotFound, match="was not found"):
        gce.instances.get(project=PROJECT, zone=ZONE, instance="life")
    with pytest.raises(exceptions.NotFound):
        gce.instances.delete(project=PROJECT, zone=ZONE, instance="life")


def test_external_ip_only_when_an_access_config_is_requested(gce):
    gce.wait(bulk_insert(gce, 1, pattern="pub-#", external_ip=True))
    gce.wait(bulk_insert(gce, 1, pattern="priv-#"))
    public = gce.instances.get(project=PROJECT, zone=ZONE, instance="pub-1").network_interfaces[0]
    private = gce.instances.get(project=PROJECT, zone=ZONE, instance="priv-1").network_interfaces[0]
    assert public.access_configs[0].nat_i_p.startswith("203.0.113.")
    assert private.network_i_p.startswith("10.128.") and not private.access_configs


def test_aggregated_list_pagination_and_empty_zone_warnings(gce):
    gce.wait(bulk_insert(gce, 5, pattern="a-#"))
    gce.wait(bulk_insert(gce, 2, zone="europe-west4-a", pattern="e-#"))
    request = compute_v1.AggregatedListInstancesRequest(project=PROJECT, max_results=3)
    first_page = gce.instances.aggregated_list(request=request)
    raw = first_page._response  # one page as served
    assert len(raw.next_page_token) > 0
    assert raw.items["zones/us-east1-b"].warning.code == "NO_RESULTS_ON_PAGE"
    names = [i.name for _, scoped in first_page for i in scoped.instances]  # the pager follows pages
    assert sorted(names) == ["a-1", "a-2", "a-3", "a-4", "a-5", "e-1", "e-2"]


def test_list_filters(gce):
    gce.wait(bulk_insert(gce, 3, pattern="f-#"))
    gce.wait(bulk_insert(gce, 2, pattern="g-#", cluster="other"))
    gce.wait(gce.instances.stop(project=PROJECT, zone=ZONE, instance="f-2"))

    def names(filter_):
        listed = gce.instances.list(request=compute_v1.ListInstancesRequest(project=PROJECT, zone=ZONE, filter=filter_))
        return sorted(i.name for i in listed)

    assert names('labels.gcpgpu-cluster = "demo"') == ["f-1", "f-2", "f-3"]
    assert names('name = "g-2"') == ["g-2"]
    assert names("status = RUNNING") == ["f-1", "f-3", "g-1", "g-2"]
    assert names('(labels.gcpgpu-cluster = "demo") (status != RUNNING)') == ["f-2"]
    assert names('(labels.gcpgpu-cluster = "demo") AND (status = RUNNING)') == ["f-1", "f-3"]
    with pytest.raises(exceptions.BadRequest):
        names("name = (")


def test_binder_acquire_and_release(emu, gce):
    class RecordingBinder:
        def __init__(self):
            self.acquired, self.released = [], []

        def acquire(self, name, instance):
            self.acquired.append((name, instance["labels"]["gcpgpu-cluster"]))
            return f"10.200.0.{9 + len(self.acquired)}"

        def release(self, name):
            self.released.append(name)

    binder = RecordingBinder()
    emu.bind_nodes(binder)
    gce.wait(bulk_insert(gce, 2, pattern="bound-#"))
    assert binder.acquired == [("bound-1", "demo"), ("bound-2", "demo")]
    assert gce.instances.get(project=PROJECT, zone=ZONE, instance="bound-2").network_interfaces[0].network_i_p \
        == "10.200.0.11"
    gce.wait(gce.instances.delete(project=PROJECT, zone=ZONE, instance="bound-1"))
    deadline = time.monotonic() + 2
    while not binder.released and time.monotonic() < deadline:
        time.sleep(0.01)
    assert binder.released == ["bound-1"]


def test_call_counts(emu, gce):
    gce.wait(bulk_insert(gce, 2))
    gce.instances.get(project=PROJECT, zone=ZONE, instance="demo-0001")
    with pytest.raises(exceptions.NotFound):
        gce.instances.get(project=PROJECT, zone=ZONE, instance="nope")
    assert emu.count() == 4
    assert emu.count(mutating=True) == 1
    assert emu.count("compute.instances.get") == 2
    assert emu.count("compute.zoneOperations.wait", mutating=False) == 1
    assert [c.status for c in emu.calls if c.method_id == "compute.instances.get"] == [200, 404]
    assert all(c.zone == ZONE for c in emu.calls)
    emu.reset_calls()
    assert emu.count() == 0


def test_operations_get_list_delete(gce):
    op = bulk_insert(gce, 1)
    gce.wait(op)
    got = gce.zone_operations.get(project=PROJECT, zone=ZONE, operation=op.name)
    assert got.status == Status.DONE and got.progress == 100 and got.end_time
    listed = gce.zone_operations.list(project=PROJECT, zone=ZONE)
    assert [o.name for o in listed] == [op.name]
    gce.zone_operations.delete(project=PROJECT, zone=ZONE, operation=op.name)
    with pytest.raises(exceptions.NotFound):
        gce.zone_operations.get(project=PROJECT, zone=ZONE, operation=op.name)


def test_a_call_that_failed_outright_is_not_replayed_by_its_request_id(emu, gce):
    class FlakyBinder:
        calls = 0

        def acquire(self, name, instance):
            FlakyBinder.calls += 1
            if FlakyBinder.calls == 1:
                raise RuntimeError("node did not start")
            return "10.200.0.50"

        def release(self, name):
            pass

    emu.bind_nodes(FlakyBinder())
    request = compute_v1.InsertInstanceRequest(
        project=PROJECT, zone=ZONE, instance_resource=gpu_instance("flaky-1"),
        request_id="0b6f7d2e-5a4c-4f7e-9d61-3c2b1a0f9e8d")
    with pytest.raises(exceptions.InternalServerError):
        gce.instances.insert(request=request)
    gce.wait(gce.instances.insert(request=request))  # the retry creates it, not a replay
    assert gce.instances.get(project=PROJECT, zone=ZONE, instance="flaky-1").status == "RUNNING"
