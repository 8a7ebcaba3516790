"""The mig provider's part of cluster.yaml.

A ``provider: mig`` node group uses the compute fields (machine_type, accelerator, image, disk,
spot, metadata, tags) for its instance template, plus the fields below. Their defaults apply to
mig groups only; setting them on another provider's group is reported.
"""
from __future__ import annotations

from gcpgpu.errors import Problem
from gcpgpu.spec import format_path
from gcpgpu_plugins import compute_spec

PROVIDER = "mig"
TEMPLATE_SUFFIX = "-0123abcd"  # templates are named {cluster}-{group}-{8 hex digits of the digest}
DEFAULTS = {"regional": False, "distribution_zones": [], "stable_timeout_s": 900, "keep_partial": False}

PROPERTIES = {
    "regional": {
        "title": "Regional group",
        "description": "mig only. A regional managed instance group spreading nodes evenly over "
                       "distribution_zones (GPU capacity in more than one zone), instead of a zonal group "
                       "in the cluster's zone.",
        "type": "boolean",
    },
    "distribution_zones": {
        "title": "Distribution zones",
        "description": "mig only, with regional: true. Zones of the region the group spreads over; "
                       "empty means the cluster's zone plus those fallback_zones in the same region.",
        "type": "array",
        "items": {"type": "string"},
        "uniqueItems": True,
        "examples": [["us-central1-a", "us-central1-b"]],
    },
    "stable_timeout_s": {
        "title": "Stable timeout (s)",
        "description": "mig only. How long to wait for the group to be stable (every node created and "
                       "running) before giving up. A group out of capacity retries forever; after this "
                       "deadline gcpgpu reports the zone and the reason from the group's errors.",
        "type": "integer",
        "minimum": 1,
    },
    "keep_partial": {
        "title": "Keep partial capacity",
        "description": "mig only. When the group cannot reach its size before the deadline, keep the "
                       "nodes it made (shrinking the group to them) instead of deleting the group and "
                       "its template. Re-running `up` tries to grow it again.",
        "type": "boolean",
    },
}

SCHEMA_FRAGMENT: dict = {
    "node_group": {
        "properties": PROPERTIES,
        "allOf": [{
            "if": {"required": ["provider"], "properties": {"provider": {"const": PROVIDER}}},
            "then": {"properties": {name: {"default": value} for name, value in DEFAULTS.items()}},
        }],
    }
}


def validate(spec: dict) -> list[Problem]:
    """Problems of mig groups (the compute checks apply to their templates) and mig-only fields
    set on other groups. Never calls an API; safe on schema-invalid specs."""
    groups = spec.get("node_groups")
    if not isinstance(groups, dict):
        return []
    problems: list[Problem] = []
    mig_groups = {}
    for name, group in groups.items():
        if not isinstance(group, dict):
            continue
        path = format_path(("node_groups", name))
        if group.get("provider", "compute") == PROVIDER:
            mig_groups[name] = group
            problems += _zones(path, spec, group)
            problems += _template_name(path, spec.get("name"), name)
        else:
            problems += [Problem(f"{path}.{field}", f"{field} applies to provider: mig only",
                                 f"remove it, or set provider: {PROVIDER}")
                         for field in PROPERTIES if field in group]
    # The compute checks skip other providers' groups: show them mig groups as compute ones.
    as_compute = {**spec, "node_groups": {n: {**g, "provider": "compute"} for n, g in mig_groups.items()}}
    return problems + compute_spec.validate(as_compute)


def _zones(path: str, spec: dict, group: dict) -> list[Problem]:
    zones = group.get("distribution_zones")
    if not isinstance(zones, list) or not zones:
        return []
    if not group.get("regional"):
        return [Problem(f"{path}.distribution_zones", "distribution_zones needs regional: true",
                        "add `regional: true`, or remove distribution_zones (a zonal group uses `zone`)")]
    zone = spec.get("zone")
    region = zone.rsplit("-", 1)[0] if isinstance(zone, str) else None
    return [Problem(f"{path}.distribution_zones[{i}]", f"'{z}' is not in the group's region {region}",
                    f"use zones of {region} (e.g. {region}-a), or change the cluster's zone")
            for i, z in enumerate(zones) if isinstance(z, str) and region and z.rsplit("-", 1)[0] != region]


def _template_name(path: str, cluster, group: str) -> list[Problem]:
    if not isinstance(cluster, str) or not isinstance(group, str):
        return []
    example = f"{cluster}-{group}{TEMPLATE_SUFFIX}"
    over = len(example) - compute_spec.MAX_NAME
    if over <= 0:
        return []
    return [Problem(path, f"instance template names like '{example}' are {len(example)} characters; "
                          f"GCE allows {compute_spec.MAX_NAME}",
                    f"shorten the cluster or group name by {over} characters in total")]
