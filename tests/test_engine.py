"""The engine's ordering and in-place updates, with an in-memory provider (no emulator)."""
from __future__ import annotations

import pytest

from gcpgpu.engine import ApplyError, Cluster
from gcpgpu.errors import GcpgpuError
from gcpgpu.plugins import Plugins, entry_point_names, hookimpl
from gcpgpu.provider import Host, Resource
from gcpgpu.state import ClusterState


class MemoryProvider:
    """A network (stage 10, cluster-wide), a managed group (stage 50, resizable in place) per
    node group, and hosts that exist without any live resource (like existing machines)."""

    name = "memory"

    def __init__(self):
        self.live: dict[str, Resource] = {}
        self.log: list[str] = []
        self.fail_create: set[str] = set()

    def cluster_resources(self, spec):
        return [Resource("memory", "network", f"{spec['name']}-net", "", "global", "n1", stage=10)]

    def desired(self, spec, group_name, group):
        return [Resource("memory", "group", f"{spec['name']}-{group_name}", group_name, "zone-a",
                         group["shape"], update_digest=str(group["count"]))]

    def observe(self, ctx):
        return list(self.live.values())

    def create(self, ctx, resources):
        for r in resources:
            if r.name in self.fail_create:
                raise GcpgpuError(f"cannot create {r.name}")
            self.log.append(f"create {r.name}")
            self.live[r.key] = r

    def update(self, ctx, resources):
        for r in resources:
            self.log.append(f"update {r.name} {r.update_digest}")
            self.live[r.key] = r

    def delete(self, ctx, resources):
        for r in resources:
            self.log.append(f"delete {r.name}")
            self.live.pop(r.key, None)

    def hosts(self, ctx, live):
        return [Host("static-1", "existing", "10.0.0.1")]

    def variables(self, ctx, live):
        return {"networks": sorted(r.name for r in live if r.kind == "network")}


@pytest.fixture
def provider(monkeypatch):
    # `down` sweeps every provider: only this in-memory one may answer (no clients here).
    monkeypatch.setenv("GCPGPU_DISABLE_PLUGINS", ",".join(entry_point_names()))
    return MemoryProvider()


def cluster_for(provider, groups) -> Cluster:
    class Plugin:
        @hookimpl
        def gcpgpu_register_providers(self, register):
            register(provider)

    spec = {"name": "demo", "project": "p",
            "node_groups": {name: {"provider": "memory", **g} for name, g in groups.items()}}
    plugins = Plugins(extra=(Plugin(),))
    return Cluster(spec, plugins, clients=None, state=ClusterState.for_spec(spec))


def apply(cluster):
    plan = cluster.plan()
    cluster.apply(plan, lambda description, size: (lambda n: None))
    return plan


def test_cluster_resources_are_created_before_node_groups_and_deleted_after(provider):
    cluster = cluster_for(provider, {"a": {"shape": "s1", "count": 2}, "b": {"shape": "s1", "count": 1}})
    apply(cluster)
    assert provider.log[0] == "create demo-net" and len(provider.log) == 3
    provider.log.clear()
    cluster.apply(cluster.plan_down(), lambda d, s: (lambda n: None))
    assert provider.log[-1] == "delete demo-net" and len(provider.log) == 3


def test_a_changed_count_is_updated_in_place_and_nothing_else_changes(provider):
    apply(cluster_for(provider, {"a": {"shape": "s1", "count": 2}}))
    provider.log.clear()
    plan = apply(cluster_for(provider, {"a": {"shape": "s1", "count": 5}}))
    assert [r.name for r in plan.update] == ["demo-a"] and not plan.create and not plan.delete
    assert provider.log == ["update demo-a 5"]
    assert not cluster_for(provider, {"a": {"shape": "s1", "count": 5}}).plan().changes


def test_a_changed_shape_replaces(provider):
    apply(cluster_for(provider, {"a": {"shape": "s1", "count": 2}}))
    provider.log.clear()
    apply(cluster_for(provider, {"a": {"shape": "s2", "count": 2}}))
    assert provider.log == ["delete demo-a", "create demo-a"]


def test_a_failed_stage_stops_the_stages_after_it_and_rerun_converges(provider):
    provider.fail_create = {"demo-net"}
    with pytest.raises(ApplyError, match="not created, an earlier step failed: group/demo-a"):
        apply(cluster_for(provider, {"a": {"shape": "s1", "count": 1}}))
    assert provider.live == {}
    provider.fail_create = set()
    apply(cluster_for(provider, {"a": {"shape": "s1", "count": 1}}))
    assert sorted(provider.live) == ["group/demo-a", "network/demo-net"]


def test_hosts_and_variables_come_from_providers_even_without_live_resources(provider):
    cluster = cluster_for(provider, {"a": {"shape": "s1", "count": 1}})
    assert [h.name for h in cluster.hosts()] == ["static-1"]
    assert cluster.variables() == {"networks": []}
    apply(cluster)
    assert cluster.variables() == {"networks": ["demo-net"]}
