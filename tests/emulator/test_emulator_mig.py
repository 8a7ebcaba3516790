"""Instance templates and managed instance groups in the emulator, through the real clients."""

from __future__ import annotations

import time

import pytest
from emulator_helpers import PROJECT, ZONE, gpu_properties
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

REGION = "us-central1"
A100 = "nvidia-tesla-a100"


class Groups:
    """Template and group clients pointed at the emulator, with waits on their own operations."""

    def __init__(self, url: str):
        options = dict(credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=url))
        self.templates = compute_v1.InstanceTemplatesClient(**options)
        self.region_templates = compute_v1.RegionInstanceTemplatesClient(**options)
        self.zonal = compute_v1.InstanceGroupManagersClient(**options)
        self.regional = compute_v1.RegionInstanceGroupManagersClient(**options)
        self.zone_ops = compute_v1.ZoneOperationsClient(**options)
        self.region_ops = compute_v1.RegionOperationsClient(**options)
        self.global_ops = compute_v1.GlobalOperationsClient(**options)

    def wait(self, operation) -> compute_v1.Operation:
        if operation.zone:
            return self.zone_ops.wait(project=PROJECT, zone=operation.zone.rsplit("/", 1)[1], operation=operation.name)
        if operation.region:
            return self.region_ops.wait(project=PROJECT, region=operation.region.rsplit("/", 1)[1],
                                        operation=operation.name)
        return self.global_ops.wait(project=PROJECT, operation=operation.name)

    def template(self, name: str = "tpl", **kwargs) -> str:
        body = compute_v1.InstanceTemplate(name=name, properties=gpu_properties(**kwargs))
        done = self.wait(self.templates.insert(project=PROJECT, instance_template_resource=body))
        assert not done.error.errors, done.error
        return f"projects/{PROJECT}/global/instanceTemplates/{name}"

    def zonal_group(self, size: int, template: str, name: str = "grp", **fields) -> None:
        body = compute_v1.InstanceGroupManager(name=name, base_instance_name=name, target_size=size,
                                               instance_template=template, **fields)
        self.wait(self.zonal.insert(project=PROJECT, zone=ZONE, instance_group_manager_resource=body))

    def get(self, name: str = "grp") -> compute_v1.InstanceGroupManager:
        return self.zonal.get(project=PROJECT, zone=ZONE, instance_group_manager=name)

    def managed(self, name: str = "grp") -> list:
        return list(self.zonal.list_managed_instances(project=PROJECT, zone=ZONE, instance_group_manager=name))

    def errors(self, name: str = "grp") -> list:
        return list(self.zonal.list_errors(project=PROJECT, zone=ZONE, instance_group_manager=name))


def until(condition, timeout: float = 10.0):
    """Poll until condition() is truthy (the emulator converges on its own ticker)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)
    return value


@pytest.fixture
def groups(emu) -> Groups:
    return Groups(emu.url)


def test_zonal_group_creates_its_instances_from_the_template(emu, groups):
    template = groups.template(cluster="demo")
    groups.zonal_group(3, template)
    manager = until(lambda: (m := groups.get()).status.is_stable and m)
    assert manager.target_size == 3 and manager.current_actions.none == 3
    assert manager.status.version_target.is_reached
    names = sorted(m.name for m in groups.managed())
    assert all(n.startswith("grp-") and len(n) == len("grp-") + 4 for n in names)
    made = {i["name"]: i for i in emu.instances()}
    assert sorted(made) == names
    vm = made[names[0]]
    assert vm["status"] == "RUNNING" and vm["labels"] == {"gcpgpu-cluster": "demo"}
    items = {i["key"]: i["value"] for i in vm["metadata"]["items"]}
    project, number, rest = items["created-by"].split("/", 2)
    assert project == "projects" and number.isdigit()  # GCE writes the project number here
    assert rest == f"zones/{ZONE}/instanceGroupManagers/grp"
    assert items["instance-template"] == "projects/test-project/global/instanceTemplates/tpl"
    assert emu.count(method="compute.instanceGroupManagers.insert") == 1


def test_resize_down_deletes_and_deleted_instances_come_back(emu, groups):
    groups.zonal_group(3, groups.template())
    until(lambda: groups.get().status.is_stable)
    groups.wait(groups.zonal.resize(project=PROJECT, zone=ZONE, instance_group_manager="grp", size=1))
    until(lambda: groups.get().status.is_stable and len(emu.instances()) == 1)
    [survivor] = emu.instances()
    instances = compute_v1.InstancesClient(credentials=AnonymousCredentials(),
                                           client_options=ClientOptions(api_endpoint=emu.url))
    instances.delete(project=PROJECT, zone=ZONE, instance=survivor["name"])
    until(lambda: not groups.get().status.is_stable)
    until(lambda: groups.get().status.is_stable)
    [back] = emu.instances()
    assert back["name"] == survivor["name"] and back["id"] != survivor["id"]  # the group made it again


def test_stockout_keeps_the_group_unstable_and_retrying_with_errors(emu, groups):
    emu.set_capacity(ZONE, A100, 2)  # one a2-highgpu-2g
    groups.zonal_group(2, groups.template())
    until(lambda: len(groups.errors()) >= 2)  # retried, not given up
    manager = groups.get()
    assert not manager.status.is_stable and manager.current_actions.creating == 1
    error = groups.errors()[0]
    assert error.error.code == "ZONE_RESOURCE_POOL_EXHAUSTED" and ZONE in error.error.message
    assert error.instance_action_details.action == "CREATING"
    assert f"/zones/{ZONE}/instances/grp-" in error.instance_action_details.instance
    waiting = [m for m in groups.managed() if m.current_action == "CREATING"]
    assert waiting[0].last_attempt.errors.errors[0].code == "ZONE_RESOURCE_POOL_EXHAUSTED"
    emu.set_capacity(ZONE, A100, 2)  # capacity comes back: the retry succeeds
    until(lambda: groups.get().status.is_stable)
    assert len(emu.instances()) == 2


def test_quota_applies_to_group_instances(emu, groups):
    emu.set_quota(REGION, "NVIDIA_A100_GPUS", 2)
    groups.zonal_group(2, groups.template())
    until(lambda: groups.errors())
    assert groups.errors()[0].error.code == "QUOTA_EXCEEDED" and len(emu.instances()) == 1


def test_injected_insert_fault_hits_group_creations(emu, groups):
    emu.inject_fault("compute.instances.insert", "ZONE_RESOURCE_POOL_EXHAUSTED", zone=ZONE, times=2)
    groups.zonal_group(1, groups.template())
    until(lambda: groups.get().status.is_stable)
    assert [e.error.code for e in groups.errors()] == ["ZONE_RESOURCE_POOL_EXHAUSTED"] * 2


def test_patch_to_a_new_template_replaces_every_instance(emu, groups):
    groups.zonal_group(2, groups.template("old"))
    until(lambda: groups.get().status.is_stable)
    before = {m.name for m in groups.managed()}
    new = groups.template("new", machine_type="a2-highgpu-1g")
    patch = compute_v1.InstanceGroupManager(
        versions=[compute_v1.InstanceGroupManagerVersion(instance_template=new)],
        update_policy=compute_v1.InstanceGroupManagerUpdatePolicy(
            type_="PROACTIVE", max_surge=compute_v1.FixedOrPercent(fixed=0),
            max_unavailable=compute_v1.FixedOrPercent(fixed=2)))
    groups.wait(groups.zonal.patch(project=PROJECT, zone=ZONE, instance_group_manager="grp",
                                   instance_group_manager_resource=patch))
    until(lambda: (m := groups.get()).status.is_stable and m.status.version_target.is_reached)
    after = groups.managed()
    assert not before & {m.name for m in after}
    assert {m.version.instance_template.rsplit("/", 1)[1] for m in after} == {"new"}
    assert {i["machineType"].rsplit("/", 1)[1] for i in emu.instances()} == {"a2-highgpu-1g"}
    groups.wait(groups.templates.delete(project=PROJECT, instance_template="old"))  # no longer in use


def test_opportunistic_set_instance_template_changes_only_new_instances(emu, groups):
    groups.zonal_group(1, groups.template("old"), update_policy=compute_v1.InstanceGroupManagerUpdatePolicy(
        type_="OPPORTUNISTIC"))
    until(lambda: groups.get().status.is_stable)
    new = groups.template("new")
    groups.wait(groups.zonal.set_instance_template(
        project=PROJECT, zone=ZONE, instance_group_manager="grp",
        instance_group_managers_set_instance_template_request_resource=compute_v1
        .InstanceGroupManagersSetInstanceTemplateRequest(instance_template=new)))
    groups.wait(groups.zonal.resize(project=PROJECT, zone=ZONE, instance_group_manager="grp", size=2))
    until(lambda: groups.get().status.is_stable)
    assert sorted(m.version.instance_template.rsplit("/", 1)[1] for m in groups.managed()) == ["new", "old"]
    assert not groups.get().status.version_target.is_reached


def test_template_in_use_cannot_be_deleted_and_names_are_unique(emu, groups):
    template = groups.template()
    with pytest.raises(exceptions.Conflict):
        groups.template()
    groups.zonal_group(0, template)
    with pytest.raises(exceptions.BadRequest, match="already being used by"):
        groups.templates.delete(project=PROJECT, instance_template="tpl")
    groups.wait(groups.zonal.delete(project=PROJECT, zone=ZONE, instance_group_manager="grp"))
    groups.wait(groups.templates.delete(project=PROJECT, instance_template="tpl"))
    assert list(groups.templates.list(project=PROJECT)) == []


def test_group_needs_an_existing_template(groups):
    with pytest.raises(exceptions.BadRequest, match="instance template resource cannot be found"):
        groups.zonal_group(1, f"projects/{PROJECT}/global/instanceTemplates/missing")


def test_template_machine_type_must_be_a_name(groups):
    with pytest.raises(exceptions.BadRequest, match="name of a machine type"):
        groups.template(machine_type=f"zones/{ZONE}/machineTypes/a2-highgpu-2g")


def test_delete_removes_the_group_and_its_instances_and_frees_capacity(emu, groups):
    emu.set_capacity(ZONE, A100, 4)
    groups.zonal_group(2, groups.template())
    until(lambda: groups.get().status.is_stable)
    groups.wait(groups.zonal.delete(project=PROJECT, zone=ZONE, instance_group_manager="grp"))
    assert emu.instances() == []
    with pytest.raises(exceptions.NotFound):
        groups.get()
    groups.zonal_group(2, f"projects/{PROJECT}/global/instanceTemplates/tpl", name="again")
    until(lambda: groups.get("again").status.is_stable)  # the GPUs were given back


def test_regional_group_spreads_evenly_over_its_zones(emu, groups):
    template = groups.template()
    body = compute_v1.InstanceGroupManager(
        name="reg", base_instance_name="reg", target_size=4, instance_template=template,
        distribution_policy=compute_v1.DistributionPolicy(zones=[
            compute_v1.DistributionPolicyZoneConfiguration(zone=f"zones/{z}") for z in ("us-central1-a", "us-central1-b")]))
    groups.wait(groups.regional.insert(project=PROJECT, region=REGION, instance_group_manager_resource=body))
    until(lambda: groups.regional.get(project=PROJECT, region=REGION, instance_group_manager="reg").status.is_stable)
    zones = sorted(i["zone"].rsplit("/", 1)[1] for i in emu.instances())
    assert zones == ["us-central1-a", "us-central1-a", "us-central1-b", "us-central1-b"]
    aggregated = dict(compute_v1.InstanceGroupManagersClient(
        credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=emu.url))
        .aggregated_list(project=PROJECT))
    assert [m.name for m in aggregated[f"regions/{REGION}"].instance_group_managers] == ["reg"]


def test_regional_group_rejects_zones_of_another_region(groups):
    body = compute_v1.InstanceGroupManager(
        name="reg", target_size=1, instance_template=groups.template(),
        distribution_policy=compute_v1.DistributionPolicy(zones=[
            compute_v1.DistributionPolicyZoneConfiguration(zone="zones/europe-west4-a")]))
    with pytest.raises(exceptions.BadRequest, match="must be in region"):
        groups.regional.insert(project=PROJECT, region=REGION, instance_group_manager_resource=body)


def test_regional_templates(groups):
    body = compute_v1.InstanceTemplate(name="rt", properties=gpu_properties())
    groups.wait(groups.region_templates.insert(project=PROJECT, region=REGION, instance_template_resource=body))
    got = groups.region_templates.get(project=PROJECT, region=REGION, instance_template="rt")
    assert got.region.endswith(f"/regions/{REGION}") and got.properties.machine_type == "a2-highgpu-2g"
    assert list(groups.templates.list(project=PROJECT)) == []  # not a global one
    groups.wait(groups.region_templates.delete(project=PROJECT, region=REGION, instance_template="rt"))


def test_group_instances_are_bound_to_nodes(emu, groups):
    bound = []

    class Binder:
        def acquire(self, name, instance):
            bound.append(name)
            return f"10.200.0.{len(bound) + 1}"

        def release(self, name):
            bound.remove(name)

    emu.bind_nodes(Binder())
    groups.zonal_group(2, groups.template())
    until(lambda: groups.get().status.is_stable)
    assert sorted(bound) == sorted(i["name"] for i in emu.instances())
    groups.wait(groups.zonal.delete(project=PROJECT, zone=ZONE, instance_group_manager="grp"))
    until(lambda: bound == [])
