"""Plain records shared by the emulator modules: a routed API request and a stored instance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from . import catalog
from .errors import invalid
from .resources import Links

if TYPE_CHECKING:
    from .compute import InjectedFault

GLOBAL = "global"


@dataclass
class ApiRequest:
    """One API call, already routed."""

    method_id: str
    project: str
    params: dict[str, str]
    query: dict[str, str]
    body: dict
    base_url: str
    fault: InjectedFault | None = None  # an in-operation fault this call must report
    user_images: list = field(default_factory=list)  # images made with images.insert (newest last)

    @property
    def links(self) -> Links:
        return Links(self.base_url, self.project)

    @property
    def request_id(self) -> str | None:
        return self.query.get("requestId") or None

    @property
    def region(self) -> str:
        """The ``region`` path parameter; 400 for a region the emulator does not know."""
        region = self.params["region"]
        if region not in catalog.REGION_DESCRIPTIONS:
            raise invalid(f"Invalid value for field 'region': '{region}'. Unknown region.")
        return region


@dataclass
class InstanceRecord:
    project: str
    zone: str
    resource: dict  # the instance JSON as served
    gpu_type: str | None = None
    gpu_count: int = 0
    preemptible: bool = False
    wants_nat_ips: int = 0
    allocated_ips: list[str] = field(default_factory=list)
    allocated_nat_ips: list[str] = field(default_factory=list)
    source_image: str = ""  # the boot disk's image ("project/name"): test nodes start from it

    @property
    def name(self) -> str:
        return self.resource["name"]

    @property
    def status(self) -> str:
        return self.resource["status"]

    @status.setter
    def status(self, value: str) -> None:
        self.resource["status"] = value

    @property
    def holds_gpus(self) -> bool:
        return self.gpu_count > 0 and self.status != "TERMINATED"

    def quota_demand(self) -> Iterable[tuple[tuple[str, str], int]]:
        if not self.gpu_count:
            return []
        metric = catalog.ACCELERATORS[self.gpu_type].quota_metric
        if self.preemptible:
            metric = "PREEMPTIBLE_" + metric
        region = catalog.region_of(self.zone)
        return [((region, metric), self.gpu_count), ((GLOBAL, catalog.GLOBAL_GPU_METRIC), self.gpu_count)]


def int_field(value: Any, field_name: str, default: int | None = None) -> int:
    if value is None or value == "":
        if default is None:
            raise invalid(f"Required field '{field_name}' not specified")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid(f"Invalid value for field '{field_name}': '{value}'. Must be an integer.") from None
