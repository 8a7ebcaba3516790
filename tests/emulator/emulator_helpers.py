"""Helpers shared by the emulator tests: real compute clients and request bodies."""

from __future__ import annotations

from dataclasses import dataclass

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

PROJECT = "test-project"
ZONE = "us-central1-a"
DLVM_FAMILY = "projects/deeplearning-platform-release/global/images/family/pytorch-latest-gpu"


@dataclass
class Clients:
    """Real google-cloud-compute clients pointed at the emulator (plain http, no credentials)."""

    instances: compute_v1.InstancesClient
    zone_operations: compute_v1.ZoneOperationsClient
    zones: compute_v1.ZonesClient
    regions: compute_v1.RegionsClient
    machine_types: compute_v1.MachineTypesClient
    accelerator_types: compute_v1.AcceleratorTypesClient
    images: compute_v1.ImagesClient

    def wait(self, operation) -> compute_v1.Operation:
        # Never ExtendedOperation.result(): it polls the real Google host.
        zone = operation.zone.rsplit("/", 1)[-1]
        return self.zone_operations.wait(project=PROJECT, zone=zone, operation=operation.name)


def make_clients(url: str) -> Clients:
    options = dict(credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=url))
    return Clients(
        instances=compute_v1.InstancesClient(**options),
        zone_operations=compute_v1.ZoneOperationsClient(**options),
        zones=compute_v1.ZonesClient(**options),
        regions=compute_v1.RegionsClient(**options),
        machine_types=compute_v1.MachineTypesClient(**options),
        accelerator_types=compute_v1.AcceleratorTypesClient(**options),
        images=compute_v1.ImagesClient(**options),
    )


def gpu_properties(machine_type: str = "a2-highgpu-2g", cluster: str = "demo", *,
                   on_host_maintenance: str | None = "TERMINATE", spot: bool = False,
                   external_ip: bool = False) -> compute_v1.InstanceProperties:
    scheduling = compute_v1.Scheduling()
    if on_host_maintenance:
        scheduling.on_host_maintenance = on_host_maintenance
    if spot:
        scheduling.provisioning_model = "SPOT"
    nic = compute_v1.NetworkInterface(network="global/networks/default")
    if external_ip:
        nic.access_configs = [compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")]
    return compute_v1.InstanceProperties(
        machine_type=machine_type,
        scheduling=scheduling,
        labels={"gcpgpu-cluster": cluster},
        disks=[compute_v1.AttachedDisk(
            boot=True, auto_delete=True,
            initialize_params=compute_v1.AttachedDiskInitializeParams(
                source_image=DLVM_FAMILY, disk_size_gb=200, disk_type="pd-ssd"),
        )],
        network_interfaces=[nic],
    )


def gpu_instance(name: str, zone: str = ZONE, machine_type: str = "a2-highgpu-2g", **kwargs) -> compute_v1.Instance:
    """An Instance body, using the partial-path form of machineType that inserts accept."""
    props = gpu_properties(machine_type=f"zones/{zone}/machineTypes/{machine_type}", **kwargs)
    return compute_v1.Instance(
        name=name, machine_type=props.machine_type, scheduling=props.scheduling, labels=props.labels,
        disks=props.disks, network_interfaces=props.network_interfaces,
    )


def bulk_insert(gce: Clients, count: int, *, zone: str = ZONE, pattern: str = "demo-####",
                min_count: int | None = None, request_id: str | None = None, **kwargs):
    resource = compute_v1.BulkInsertInstanceResource(
        count=count, name_pattern=pattern, instance_properties=gpu_properties(**kwargs))
    if min_count is not None:
        resource.min_count = min_count
    request = compute_v1.BulkInsertInstanceRequest(
        project=PROJECT, zone=zone, bulk_insert_instance_resource_resource=resource)
    if request_id:
        request.request_id = request_id
    return gce.instances.bulk_insert(request=request)
