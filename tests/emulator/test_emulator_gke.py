"""The emulator's GKE API, driven by the real google-cloud-container REST client."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from emulator_helpers import PROJECT, ZONE, bulk_insert
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import container_v1 as gke

PARENT = f"projects/{PROJECT}/locations/{ZONE}"
CLUSTER = f"{PARENT}/clusters/demo"
A100 = "nvidia-tesla-a100"
Status = gke.Operation.Status


@pytest.fixture
def cm(emu) -> gke.ClusterManagerClient:
    return gke.ClusterManagerClient(transport="rest", credentials=AnonymousCredentials(),
                                    client_options=ClientOptions(api_endpoint=emu.url))


def wait(cm, op) -> gke.Operation:
    while op.status != Status.DONE:
        time.sleep(0.02)
        op = cm.get_operation(name=f"{PARENT}/operations/{op.name}")
    return op


def gpu_pool(name="gpu-0", nodes=1, machine_type="a2-highgpu-2g", gpus=2, accelerator=A100, **config):
    return gke.NodePool(name=name, initial_node_count=nodes, config=gke.NodeConfig(
        machine_type=machine_type, **config, accelerators=[gke.AcceleratorConfig(
            accelerator_type=accelerator, accelerator_count=gpus,
            gpu_driver_installation_config=gke.GPUDriverInstallationConfig(
                gpu_driver_version=gke.GPUDriverInstallationConfig.GPUDriverVersion.LATEST))]),
        autoscaling=gke.NodePoolAutoscaling(enabled=True, min_node_count=0, max_node_count=4))


def create_cluster(cm, *pools, name="demo"):
    return cm.create_cluster(parent=PARENT, cluster=gke.Cluster(
        name=name, resource_labels={"gcpgpu-cluster": name},
        private_cluster_config=gke.PrivateClusterConfig(enable_private_nodes=True,
                                                        master_ipv4_cidr_block="172.16.0.0/28"),
        node_pools=list(pools) or [gke.NodePool(name="system", initial_node_count=1,
                                                config=gke.NodeConfig(machine_type="e2-standard-4"))]))


def slow(emu) -> None:
    """Operations started from now on take a minute: their in-progress state is certain to be seen."""
    emu.state.latency = 60.0


def test_cluster_is_provisioning_until_its_operation_is_done(emu, cm):
    slow(emu)
    op = create_cluster(cm)
    assert op.status in (Status.PENDING, Status.RUNNING) and op.operation_type == gke.Operation.Type.CREATE_CLUSTER
    assert cm.get_cluster(name=CLUSTER).status == gke.Cluster.Status.PROVISIONING
    # One operation at a time per cluster, as GKE does.
    with pytest.raises(exceptions.BadRequest, match="Please wait and try again"):
        cm.create_node_pool(parent=CLUSTER, node_pool=gpu_pool())
    with pytest.raises(exceptions.BadRequest, match=f"Operation {op.name} is currently creating cluster"):
        cm.delete_cluster(name=CLUSTER)
    assert emu.count("container.projects.locations.clusters.create", mutating=True) == 1


def test_a_created_cluster_and_pool(emu, cm):
    done = wait(cm, create_cluster(cm))
    assert not done.error.message and done.end_time
    cluster = cm.get_cluster(name=CLUSTER)
    assert cluster.status == gke.Cluster.Status.RUNNING
    assert cluster.private_cluster_config.private_endpoint == "172.16.0.2" and cluster.endpoint
    assert cluster.master_auth.cluster_ca_certificate and cluster.location == ZONE
    assert [p.name for p in cluster.node_pools] == ["system"]
    listed = cm.list_clusters(parent=f"projects/{PROJECT}/locations/-").clusters
    assert [c.name for c in listed] == ["demo"] and listed[0].resource_labels["gcpgpu-cluster"] == "demo"
    wait(cm, cm.create_node_pool(parent=CLUSTER, node_pool=gpu_pool()))
    pool = cm.get_node_pool(name=f"{CLUSTER}/nodePools/gpu-0")
    assert pool.status == gke.NodePool.Status.RUNNING
    accelerator = pool.config.accelerators[0]
    assert (accelerator.accelerator_type, accelerator.accelerator_count) == (A100, 2)
    assert accelerator.gpu_driver_installation_config.gpu_driver_version.name == "LATEST"


def test_node_pool_gpus_share_capacity_with_compute_instances(emu, cm):
    emu.set_capacity(ZONE, A100, 4)
    wait(cm, create_cluster(cm))
    assert not wait(cm, cm.create_node_pool(parent=CLUSTER, node_pool=gpu_pool(nodes=2))).error.message
    gce_op = bulk_insert_one(emu)
    assert gce_op.error.errors[0].code == "ZONE_RESOURCE_POOL_EXHAUSTED"  # the pool holds all 4

    failed = wait(cm, cm.create_node_pool(parent=CLUSTER, node_pool=gpu_pool("gpu-1")))
    assert "[ZONE_RESOURCE_POOL_EXHAUSTED]" in failed.error.message
    pool = cm.get_node_pool(name=f"{CLUSTER}/nodePools/gpu-1")
    assert pool.status == gke.NodePool.Status.ERROR and "ZONE_RESOURCE_POOL_EXHAUSTED" in pool.status_message

    wait(cm, cm.delete_node_pool(name=f"{CLUSTER}/nodePools/gpu-0"))
    assert not bulk_insert_one(emu).error.errors  # its GPUs are free again


def bulk_insert_one(emu):
    from emulator_helpers import make_clients

    clients = make_clients(emu.url)
    return clients.wait(bulk_insert(clients, 1, machine_type="a2-highgpu-2g"))


def test_regional_gpu_quota_counts_spot_nodes_as_preemptible(emu, cm):
    emu.set_quota("us-central1", "PREEMPTIBLE_NVIDIA_L4_GPUS", 2)
    wait(cm, create_cluster(cm))
    l4 = dict(machine_type="g2-standard-8", gpus=1, accelerator="nvidia-l4", spot=True)
    failed = wait(cm, cm.create_node_pool(parent=CLUSTER, node_pool=gpu_pool(nodes=3, **l4)))
    assert "[GCE_QUOTA_EXCEEDED]" in failed.error.message and "PREEMPTIBLE_NVIDIA_L4_GPUS" in failed.error.message
    assert not wait(cm, cm.create_node_pool(parent=CLUSTER, node_pool=gpu_pool("fits", nodes=2, **l4))).error.message


def test_set_autoscaling_changes_the_pool_in_place(emu, cm):
    wait(cm, create_cluster(cm, gpu_pool(nodes=2)))
    request = gke.SetNodePoolAutoscalingRequest(
        name=f"{CLUSTER}/nodePools/gpu-0",
        autoscaling=gke.NodePoolAutoscaling(enabled=True, min_node_count=1, max_node_count=6))
    op = cm.set_node_pool_autoscaling(request=request)
    assert not wait(cm, op).error.message
    scaling = cm.get_node_pool(name=f"{CLUSTER}/nodePools/gpu-0").autoscaling
    assert (scaling.min_node_count, scaling.max_node_count) == (1, 6)
    request.autoscaling.min_node_count = 7
    with pytest.raises(exceptions.BadRequest, match="min_node_count 7"):
        cm.set_node_pool_autoscaling(request=request)


def test_deleting_the_cluster_removes_it_and_its_pools(emu, cm):
    wait(cm, create_cluster(cm, gpu_pool()))
    wait(cm, cm.delete_cluster(name=CLUSTER))
    with pytest.raises(exceptions.NotFound):
        cm.get_cluster(name=CLUSTER)
    assert not cm.list_clusters(parent=PARENT).clusters
    assert bulk_insert_one(emu).error.errors == []  # nothing holds GPUs any more


def test_a_cluster_is_stopping_while_its_delete_runs(emu, cm):
    wait(cm, create_cluster(cm))
    slow(emu)
    cm.delete_cluster(name=CLUSTER)
    assert cm.get_cluster(name=CLUSTER).status == gke.Cluster.Status.STOPPING


def test_requests_are_checked_like_gke_does(emu, cm):
    with pytest.raises(exceptions.BadRequest, match="/28"):
        cm.create_cluster(parent=PARENT, cluster=gke.Cluster(
            name="demo", initial_node_count=1,
            private_cluster_config=gke.PrivateClusterConfig(enable_private_nodes=True,
                                                            master_ipv4_cidr_block="172.16.0.0/24")))
    with pytest.raises(exceptions.BadRequest, match="comes with 2 x nvidia-tesla-a100"):
        create_cluster(cm, gpu_pool(gpus=4))
    with pytest.raises(exceptions.BadRequest, match="does not exist in zone"):
        create_cluster(cm, gpu_pool(machine_type="n1-standard-8", accelerator="nvidia-tesla-p100", gpus=1))
    with pytest.raises(exceptions.BadRequest, match="3 x nvidia-tesla-t4 cannot be attached"):
        create_cluster(cm, gpu_pool(machine_type="n1-standard-8", accelerator="nvidia-tesla-t4", gpus=3))
    t4 = gpu_pool(machine_type="n1-standard-8", accelerator="nvidia-tesla-t4", gpus=1)
    assert not wait(cm, create_cluster(cm, t4)).error.message
    with pytest.raises(exceptions.Conflict, match="Already exists"):
        create_cluster(cm)
    with pytest.raises(exceptions.NotFound):
        cm.get_node_pool(name=f"{CLUSTER}/nodePools/nope")


def test_injected_faults_fail_the_call_or_the_operation(emu, cm):
    emu.inject_fault("container.projects.locations.clusters.list", "SERVICE_DISABLED", http_status=403,
                     message="Kubernetes Engine API has not been used in project 1 before or it is disabled.")
    with pytest.raises(exceptions.Forbidden, match="has not been used"):
        cm.list_clusters(parent=PARENT)
    cm.list_clusters(parent=PARENT)  # once only
    wait(cm, create_cluster(cm))
    emu.inject_fault("container.projects.locations.clusters.nodePools.create", "ZONE_RESOURCE_POOL_EXHAUSTED",
                     zone=ZONE)
    failed = wait(cm, cm.create_node_pool(parent=CLUSTER, node_pool=gpu_pool()))
    assert "[ZONE_RESOURCE_POOL_EXHAUSTED]" in failed.error.message
    with pytest.raises(ValueError, match="unknown method"):
        emu.inject_fault("container.projects.locations.clusters.explode", "X")


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_json_on_the_wire(emu, cm):
    """Google's error shape; enums as numbers only when asked; other services' operation ids
    are not answered here."""
    slow(emu)
    op = create_cluster(cm)
    base = f"{emu.url}/v1/{PARENT}"
    status, body = get_json(f"{base}/operations/{op.name}")
    assert status == 200 and body["status"] in ("PENDING", "RUNNING") and body["operationType"] == "CREATE_CLUSTER"
    status, body = get_json(f"{base}/operations/{op.name}?%24alt=json%3Benum-encoding%3Dint")
    assert body["status"] in (1, 2) and body["operationType"] == 1
    status, body = get_json(f"{base}/clusters/nope")
    assert status == 404 and body["error"]["status"] == "NOT_FOUND" and body["error"]["code"] == 404
    status, body = get_json(f"{base}/operations/operation-of-another-service")
    assert status == 404 and "was not found on this server" in body["error"]["message"]
    assert emu.calls[-1].method_id == "unknown"
