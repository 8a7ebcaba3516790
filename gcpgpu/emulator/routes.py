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
    routes += _group_routes(p)
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


def _group_routes(p: str) -> list[Route]:
    """Instance templates (global, regional) and managed instance groups (zonal, regional):
    served by gcpgpu.emulator.compute_groups."""
    routes = []
    for collection, base in (("instanceTemplates", f"{p}/global"),
                             ("regionInstanceTemplates", f"{p}/regions/{{region}}")):
        one = f"{base}/instanceTemplates/{{instanceTemplate}}"
        routes += [
            Route(f"compute.{collection}.insert", "POST", f"{base}/instanceTemplates", "instance_templates_insert",
                  mutating=True),
            Route(f"compute.{collection}.get", "GET", one, "instance_templates_get"),
            Route(f"compute.{collection}.list", "GET", f"{base}/instanceTemplates", "instance_templates_list"),
            Route(f"compute.{collection}.delete", "DELETE", one, "instance_templates_delete", mutating=True),
        ]
    h = "instance_group_managers_"
    for collection, base in (("instanceGroupManagers", f"{p}/zones/{{zone}}"),
                             ("regionInstanceGroupManagers", f"{p}/regions/{{region}}")):
        many = f"{base}/instanceGroupManagers"
        one = f"{many}/{{instanceGroupManager}}"
        routes += [
            Route(f"compute.{collection}.insert", "POST", many, h + "insert", mutating=True),
            Route(f"compute.{collection}.list", "GET", many, h + "list"),
            Route(f"compute.{collection}.get", "GET", one, h + "get"),
            Route(f"compute.{collection}.delete", "DELETE", one, h + "delete", mutating=True),
            Route(f"compute.{collection}.patch", "PATCH", one, h + "patch", mutating=True),
            Route(f"compute.{collection}.resize", "POST", f"{one}/resize", h + "resize", mutating=True),
            Route(f"compute.{collection}.setInstanceTemplate", "POST", f"{one}/setInstanceTemplate",
                  h + "set_instance_template", mutating=True),
            Route(f"compute.{collection}.listManagedInstances", "POST", f"{one}/listManagedInstances",
                  h + "list_managed_instances"),
            Route(f"compute.{collection}.listErrors", "GET", f"{one}/listErrors", h + "list_errors"),
        ]
    routes.append(Route("compute.instanceGroupManagers.aggregatedList", "GET",
                        f"{p}/aggregated/instanceGroupManagers", h + "aggregated_list"))
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
