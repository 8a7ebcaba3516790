"""Capacity, quota, injected faults and preemption: failures where GCE reports them."""

from __future__ import annotations

import uuid

import pytest
from emulator_helpers import PROJECT, ZONE, bulk_insert, gpu_instance
from google.api_core import exceptions
from google.cloud import compute_v1

Status = compute_v1.Operation.Status


def test_stockout_fails_inside_the_operation_and_creates_nothing(emu, gce):
    emu.set_capacity(ZONE, "nvidia-tesla-a100", 6)
    op = bulk_insert(gce, 4)  # 4 x a2-highgpu-2g = 8 GPUs > 6 free
    assert op.status != Status.DONE and not op.error.errors  # the HTTP call itself succeeds
    done = gce.wait(op)
    assert done.error.errors[0].code == "ZONE_RESOURCE_POOL_EXHAUSTED"
    assert done.error.errors[0].message == (
        f"The zone 'projects/{PROJECT}/zones/{ZONE}' does not have enough resources available to fulfill "
        "the request.  Try a different zone, or try again later.")
    assert done.http_error_status_code == 503
    assert emu.instances() == []
    # Another zone still has A100s; three fit in the original one.
    assert not gce.wait(bulk_insert(gce, 4, zone="us-central1-b")).error.errors
    assert not gce.wait(bulk_insert(gce, 3, pattern="fit-#")).error.errors


def test_min_count_creates_what_fits(emu, gce):
    emu.set_capacity(ZONE, "nvidia-tesla-a100", 6)
    done = gce.wait(bulk_insert(gce, 4, min_count=2))
    assert not done.error.errors
    assert len(emu.instances()) == 3
    status = done.instances_bulk_insert_operation_metadata.per_location_status[f"zones/{ZONE}"]
    assert (status.created_vm_count, status.failed_to_create_vm_count) == (3, 1)


def test_deleting_frees_capacity(emu, gce):
    emu.set_capacity(ZONE, "nvidia-tesla-a100", 4)
    gce.wait(bulk_insert(gce, 2, pattern="one-#"))
    assert gce.wait(bulk_insert(gce, 1, pattern="two-#")).error.errors[0].code == "ZONE_RESOURCE_POOL_EXHAUSTED"
    gce.wait(gce.instances.delete(project=PROJECT, zone=ZONE, instance="one-1"))
    assert not gce.wait(bulk_insert(gce, 1, pattern="two-#")).error.errors


def test_quota_exceeded_inside_the_operation(emu, gce):
    emu.set_quota("us-central1", "NVIDIA_A100_GPUS", 8)
    gce.wait(bulk_insert(gce, 3, pattern="q-#"))  # 6 of 8
    done = gce.wait(bulk_insert(gce, 2, pattern="r-#"))  # 4 more
    error = done.error.errors[0]
    assert error.code == "QUOTA_EXCEEDED"
    assert error.message == "Quota 'NVIDIA_A100_GPUS' exceeded.  Limit: 8.0 in region us-central1."
    quota_info = error.error_details[0].quota_info
    assert quota_info.metric_name == "compute.googleapis.com/nvidia_a100_gpus"
    assert dict(quota_info.dimensions) == {"region": "us-central1"}
    assert quota_info.limit == 8.0
    assert done.http_error_status_code == 403
    assert len(emu.instances()) == 3
    # Spot VMs count against the PREEMPTIBLE_ metric instead.
    assert not gce.wait(bulk_insert(gce, 2, pattern="s-#", spot=True)).error.errors
    region = gce.regions.get(project=PROJECT, region="us-central1")
    usage = {q.metric: q.usage for q in region.quotas}
    assert usage["NVIDIA_A100_GPUS"] == 6 and usage["PREEMPTIBLE_NVIDIA_A100_GPUS"] == 4


def test_global_gpu_quota(emu, gce):
    emu.set_quota("global", "GPUS_ALL_REGIONS", 2)
    done = gce.wait(bulk_insert(gce, 2))
    assert done.error.errors[0].message == "Quota 'GPUS_ALL_REGIONS' exceeded.  Limit: 2.0 globally."


def test_injected_http_fault_then_success(emu, gce):
    emu.inject_fault("compute.instances.bulkInsert", "backendError", times=2, http_status=503)
    request_id = str(uuid.uuid4())
    for _ in range(2):
        with pytest.raises(exceptions.ServiceUnavailable) as caught:
            bulk_insert(gce, 1, request_id=request_id)
        assert caught.value.errors[0]["reason"] == "backendError"
    assert emu.instances() == []
    assert not gce.wait(bulk_insert(gce, 1, request_id=request_id)).error.errors
    assert [c.status for c in emu.calls if c.mutating] == [503, 503, 200]


def test_injected_rate_limit_fault_has_google_error_body(emu, gce):
    emu.inject_fault("compute.instances.get", "rateLimitExceeded", http_status=403,
                     message="Rate Limit Exceeded")
    with pytest.raises(exceptions.Forbidden, match="Rate Limit Exceeded") as caught:
        gce.instances.get(project=PROJECT, zone=ZONE, instance="whatever")
    assert caught.value.errors[0]["reason"] == "rateLimitExceeded"
    with pytest.raises(exceptions.NotFound):  # times=1: the next call is normal
        gce.instances.get(project=PROJECT, zone=ZONE, instance="whatever")


def test_injected_in_operation_fault_only_in_its_zone(emu, gce):
    emu.inject_fault("compute.instances.insert", "ZONE_RESOURCE_POOL_EXHAUSTED", zone=ZONE)
    other = gce.instances.insert(project=PROJECT, zone="us-central1-b",
                                 instance_resource=gpu_instance("b", zone="us-central1-b"))
    assert not gce.wait(other).error.errors
    failed = gce.wait(gce.instances.insert(project=PROJECT, zone=ZONE, instance_resource=gpu_instance("a")))
    assert failed.error.errors[0].code == "ZONE_RESOURCE_POOL_EXHAUSTED"
    assert failed.http_error_status_code == 503
    assert [i["name"] for i in emu.instances()] == ["b"]


def test_unknown_fault_method_is_rejected(emu):
    with pytest.raises(ValueError, match="unknown method"):
        emu.inject_fault("compute.instances.bulkinsert", "x")


def test_preempt_terminates_and_records_an_operation(emu, gce):
    gce.wait(bulk_insert(gce, 2, spot=True, pattern="spot-#"))
    emu.set_capacity(ZONE, "nvidia-tesla-a100", 0)
    emu.preempt(ZONE, "spot-1")
    assert gce.instances.get(project=PROJECT, zone=ZONE, instance="spot-1").status == "TERMINATED"
    preempted = gce.zone_operations.list(request=compute_v1.ListZoneOperationsRequest(
        project=PROJECT, zone=ZONE, filter='operationType = "compute.instances.preempted"'))
    ops = list(preempted)
    assert len(ops) == 1 and ops[0].target_link.endswith("/instances/spot-1") and ops[0].status == Status.DONE
    # Preemption freed the GPUs; restarting needs them back.
    start = gce.wait(gce.instances.start(project=PROJECT, zone=ZONE, instance="spot-1"))
    assert not start.error.errors
    assert gce.instances.get(project=PROJECT, zone=ZONE, instance="spot-1").status == "RUNNING"
    emu.preempt(ZONE, "spot-1")
    emu.set_capacity(ZONE, "nvidia-tesla-a100", 0)
    start = gce.wait(gce.instances.start(project=PROJECT, zone=ZONE, instance="spot-1"))
    assert start.error.errors[0].code == "ZONE_RESOURCE_POOL_EXHAUSTED"
    assert gce.instances.get(project=PROJECT, zone=ZONE, instance="spot-1").status == "TERMINATED"


def test_concurrent_inserts_never_exceed_capacity(emu, gce):
    from concurrent.futures import ThreadPoolExecutor

    emu.set_capacity(ZONE, "nvidia-tesla-a100", 10)  # room for five a2-highgpu-2g

    def insert(index):
        return gce.wait(gce.instances.insert(project=PROJECT, zone=ZONE, instance_resource=gpu_instance(f"c-{index}")))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(insert, range(12)))
    failures = [r.error.errors[0].code for r in results if r.error.errors]
    assert failures == ["ZONE_RESOURCE_POOL_EXHAUSTED"] * 7
    assert len(emu.instances()) == 5
