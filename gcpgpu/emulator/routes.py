"""The REST routes the emulator serves, as in the Compute v1 discovery document.

Each route names the discovery method id (``compute.instances.bulkInsert``), its HTTP method,
its path template relative to ``/compute/v1/`` and the ComputeState handler that serves it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

API_PREFIX = "/compute/v1/"


@dataclass(frozen=True)
class Route:
    method_id: str
    http_method: str
    template: str
    handler: str
    mutating: bool = False
    pattern: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.template)
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))


def _routes() -> list[Route]:
    p = "projects/{project}"
    z = f"{p}/zones/{{zone}}"
    instance = f"{z}/instances/{{instance}}"
    routes = [
        Route("compute.zones.list", "GET", f"{p}/zones", "zones_list"),
        Route("compute.zones.get", "GET", z, "zones_get"),
        Route("compute.regions.list", "GET", f"{p}/regions", "regions_list"),
        Route("compute.regions.get", "GET", f"{p}/regions/{{region}}", "regions_get"),
        Route("compute.machineTypes.list", "GET", f"{z}/machineTypes", "machine_types_list"),
        Route("compute.machineTypes.get", "GET", f"{z}/machineTypes/{{machineType}}", "machine_types_get"),
        Route("compute.machineTypes.aggregatedList", "GET", f"{p}/aggregated/machineTypes",
              "machine_types_aggregated_list"),
        Route("compute.acceleratorTypes.list", "GET", f"{z}/acceleratorTypes", "accelerator_types_list"),
        Route("compute.acceleratorTypes.get", "GET", f"{z}/acceleratorTypes/{{acceleratorType}}",
              "accelerator_types_get"),
        Route("compute.acceleratorTypes.aggregatedList", "GET", f"{p}/aggregated/acceleratorTypes",
              "accelerator_types_aggregated_list"),
        Route("compute.images.get", "GET", f"{p}/global/images/{{image}}", "images_get"),
        Route("compute.images.getFromFamily", "GET", f"{p}/global/images/family/{{family}}",
              "images_get_from_family"),
        Route("compute.images.insert", "POST", f"{p}/global/images", "images_insert", mutating=True),
        Route("compute.images.delete", "DELETE", f"{p}/global/images/{{image}}", "images_delete",
              mutating=True),
        Route("compute.instances.list", "GET", f"{z}/instances", "instances_list"),
        Route("compute.instances.aggregatedList", "GET", f"{p}/aggregated/instances",
              "instances_aggregated_list"),
        Route("compute.instances.get", "GET", instance, "instances_get"),
        Route("compute.instances.getGuestAttributes", "GET", f"{instance}/getGuestAttributes",
              "instances_get_guest_attributes"),
        Route("compute.instances.insert", "POST", f"{z}/instances", "instances_insert", mutating=True),
        Route("compute.instances.bulkInsert", "POST", f"{z}/instances/bulkInsert", "instances_bulk_insert",
              mutating=True),
        Route("compute.instances.delete", "DELETE", instance, "instances_delete", mutating=True),
        Route("compute.instances.start", "POST", f"{instance}/start", "instances_start", mutating=True),
        Route("compute.instances.stop", "POST", f"{instance}/stop", "instances_stop", mutating=True),
        Route("compute.instances.setLabels", "POST", f"{instance}/setLabels", "instances_set_labels",
              mutating=True),
        Route("compute.instances.setMetadata", "POST", f"{instance}/setMetadata", "instances_set_metadata",
              mutating=True),
    ]
    scopes = {
        "zoneOperations": f"{z}/operations",
        "regionOperations": f"{p}/regions/{{region}}/operations",
        "globalOperations": f"{p}/global/operations",
    }
    for collection, base in scopes.items():
        routes += [
            Route(f"compute.{collection}.list", "GET", base, "operations_list"),
            Route(f"compute.{collection}.get", "GET", f"{base}/{{operation}}", "operations_get"),
            Route(f"compute.{collection}.wait", "POST", f"{base}/{{operation}}/wait", "operations_wait"),
            Route(f"compute.{collection}.delete", "DELETE", f"{base}/{{operation}}", "operations_delete",
                  mutating=True),
        ]
    return routes


ROUTES: list[Route] = _routes()
METHOD_IDS = frozenset(r.method_id for r in ROUTES)


def match_route(http_method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The route serving an absolute request path, with its URL-decoded path parameters."""
    if not path.startswith(API_PREFIX):
        return None
    relative = path[len(API_PREFIX):]
    for route in ROUTES:
        if route.http_method != http_method:
            continue
        found = route.pattern.match(relative)
        if found:
            return route, {k: unquote(v) for k, v in found.groupdict().items()}
    return None
