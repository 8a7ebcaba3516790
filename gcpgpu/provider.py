"""What a provider plugin implements, and the values it exchanges with the core.

The core plans and applies without knowing any resource kind: it compares the ``Resource`` values
a provider says are desired with the ones it finds live, and hands batches back to it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol


@dataclass
class Resource:
    """One cloud resource, desired or live. ``digest`` summarises the settings that, when they
    differ between desired and live, mean the resource must be replaced; ``update_digest`` those
    the provider can change in place (its ``update``), e.g. a managed group's size.
    ``stage`` orders dependencies: creates run in ascending stages (networks before VMs), deletes
    in descending ones."""

    provider: str
    kind: str
    name: str
    group: str
    location: str
    digest: str
    body: dict[str, Any] = field(default_factory=dict)
    status: str = ""
    request_id: str = ""
    update_digest: str = ""
    stage: int = 50

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass
class Host:
    """A machine configuration reaches over SSH."""

    name: str
    group: str
    address: str
    zone: str = ""
    instance_id: str = ""
    status: str = ""
    gpus: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    hostvars: dict[str, Any] = field(default_factory=dict)
    provider: str = ""  # set by the engine: the provider that serves this host
    preemptible: bool = False  # spot/preemptible: may be TERMINATED by the cloud at any time
    # How to log in when not as the cluster's user with the cluster's key (existing machines).
    user: str = ""
    identity_file: str = ""


@dataclass
class Context:
    """What a provider call gets from the core: who, where, and how to build clients."""

    spec: dict[str, Any]
    clients: Any  # gcpgpu.clients.ClientFactory
    progress: Callable[[int], None] = lambda advance: None
    ssh_keys: Any = None  # gcpgpu.ssh.ClusterKeys: put ssh_keys.metadata_entry() on new VMs
    log: Callable[[str], None] = lambda message: None

    @property
    def cluster(self) -> str:
        return self.spec["name"]

    @property
    def project(self) -> str:
        return self.spec["project"]


class Provider(Protocol):
    name: str

    def desired(self, spec: dict, group_name: str, group: dict) -> list[Resource]:
        """The resources one node group needs, with deterministic names."""

    def observe(self, ctx: Context) -> list[Resource]:
        """Every live resource of this provider labelled as this cluster's (few API calls)."""

    def create(self, ctx: Context, resources: list[Resource]) -> None:
        """Create the resources, waiting until done. Raise GcpgpuError on failure."""

    def delete(self, ctx: Context, resources: list[Resource]) -> None:
        """Delete the resources, waiting until done. Missing ones are not an error."""

    # Optional methods, used when a provider has them:
    #   hosts(ctx, live) -> list[Host]              the hosts among its live resources (called
    #                                                 for every provider in use that has it, with
    #                                                 an empty list when none of its resources is
    #                                                 live); only these providers are observed to
    #                                                 list hosts
    #   cluster_resources(spec) -> list[Resource]   cluster-wide resources (networks, shares,
    #                                                 buckets) that belong to no node group
    #   update(ctx, resources) -> None               apply changed update_digest settings in place
    #   power(ctx, hosts, on) -> None               start (on=True) or stop hosts, keeping disks
    #   variables(ctx, live) -> dict                 variables every host sees in the inventory
    #                                                 (e.g. a file share's address)
