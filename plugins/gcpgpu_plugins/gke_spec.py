"""The gke provider's part of cluster.yaml: the cluster-wide ``gke`` settings, the per-group
``gke`` settings of ``provider: gke`` groups, and the checks the schema cannot express.

Machine type and accelerator are the compute fields (same catalogue and checks); the boot image
is not used: GKE nodes run the node image of ``gke.image_type``.
"""
from __future__ import annotations

import ipaddress
import re

from gcpgpu.errors import Problem
from gcpgpu.spec import format_path, zone_problem
from gcpgpu_plugins import compute_spec

PROVIDER = "gke"
MAX_CLUSTER_NAME = 40  # GKE cluster and node-pool names: 1-40 characters
RELEASE_CHANNELS = ["rapid", "regular", "stable", "extended"]
GPU_DRIVERS = ["default", "latest", "disabled"]
REGION_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")

CLUSTER_SCHEMA = {
    "title": "GKE cluster",
    "description": "Settings of the GKE cluster that node groups with `provider: gke` become node "
                   "pools of (one cluster per gcpgpu cluster).",
    "type": "object",
    "additionalProperties": False,
    "default": {},
    "properties": {
        "location": {
            "type": "string",
            "description": "Zone (zonal cluster) or region (regional cluster: every node pool gets "
                           "its nodes in each zone of node_locations). Default: the cluster's `zone`.",
            "examples": ["us-central1-a", "us-central1"],
        },
        "node_locations": {
            "type": "array", "items": {"type": "string"}, "default": [],
            "description": "Zones of the nodes (within location). Default: the zone itself for a "
                           "zonal cluster, GKE's three zones for a regional one.",
        },
        "release_channel": {
            "type": "string", "enum": RELEASE_CHANNELS, "default": "regular",
            "description": "GKE release channel: how fast the control plane and nodes are upgraded.",
        },
        "private_nodes": {
            "type": "boolean", "default": True,
            "description": "Nodes get internal IPs only (reach the internet through Cloud NAT).",
        },
        "private_endpoint": {
            "type": "boolean", "default": False,
            "description": "Only the control plane's internal IP answers: kubectl then needs a machine "
                           "in the VPC. With false, the public endpoint answers only "
                           "master_authorized_networks.",
        },
        "master_cidr": {
            "type": "string", "default": "172.16.0.0/28",
            "description": "A /28 RFC 1918 range for the control plane of a private cluster; it must "
                           "not overlap the VPC's ranges.",
        },
        "master_authorized_networks": {
            "type": "array", "items": {"type": "string"}, "default": [],
            "description": "CIDR ranges allowed to reach the control plane (e.g. your address/32). "
                           "Empty: none from outside Google Cloud. Changed in place.",
            "examples": [["203.0.113.7/32"]],
        },
        "network": {
            "type": "string", "default": "default",
            "description": "VPC network of the cluster.",
        },
        "subnetwork": {
            "type": "string",
            "description": "Subnetwork of the nodes. Default: GKE picks the network's subnet in the region.",
        },
        "service_account": {
            "type": "string",
            "description": "Service account of the nodes. Default: the project's Compute Engine default "
                           "service account (GKE's default).",
        },
        "system_pool": {
            "type": "object", "additionalProperties": False, "default": {},
            "description": "A small CPU node pool for kube-system, so GPU pools can scale to zero.",
            "properties": {
                "machine_type": {"type": "string", "default": "e2-standard-4",
                                 "description": "Machine type of the system nodes."},
                "count": {"type": "integer", "minimum": 1, "default": 1,
                          "description": "System nodes per zone."},
            },
        },
        "kubeconfig": {
            "type": "boolean", "default": True,
            "description": "Write a kubectl context for the cluster after `up` ($KUBECONFIG, else "
                           "~/.kube/config), as `gcloud container clusters get-credentials` does.",
        },
    },
}

GROUP_SCHEMA = {
    "title": "GKE node pools",
    "description": "Node-pool settings of a `provider: gke` group (count is each pool's initial "
                   "node count per zone; the autoscaler owns the size afterwards).",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "pools": {
            "type": "integer", "minimum": 1, "default": 1,
            "description": "Number of identical node pools made from this group (GKE_NODE_POOL_COUNT).",
        },
        "min_nodes": {
            "type": "integer", "minimum": 0, "default": 0,
            "description": "Autoscaling minimum per pool and zone (GKE_MIN_NODE_COUNT). Changed in place.",
        },
        "max_nodes": {
            "type": "integer", "minimum": 1,
            "description": "Autoscaling maximum per pool and zone (GKE_MAX_NODE_COUNT). Default: the "
                           "group's count (at least 1). Changed in place.",
        },
        "gpu_driver": {
            "type": "string", "enum": GPU_DRIVERS, "default": "default",
            "description": "NVIDIA driver GKE installs on GPU nodes: the version's default, the "
                           "latest, or none (you install it, e.g. with NVIDIA's GPU operator).",
        },
        "image_type": {
            "type": "string", "default": "COS_CONTAINERD",
            "description": "Node image (COS_CONTAINERD or UBUNTU_CONTAINERD).",
            "examples": ["COS_CONTAINERD", "UBUNTU_CONTAINERD"],
        },
    },
}

SCHEMA_FRAGMENT = {
    "cluster": {"properties": {"gke": CLUSTER_SCHEMA}},
    "node_group": {
        "properties": {"gke": {"$ref": "#/$defs/gke_node_pools"}},
        "$defs": {"gke_node_pools": GROUP_SCHEMA},
        # The pool settings get their defaults in gke groups only.
        "allOf": [{"if": {"required": ["provider"], "properties": {"provider": {"const": PROVIDER}}},
                   "then": {"properties": {"gke": {"$ref": "#/$defs/gke_node_pools", "default": {}}}}}],
    },
}


def gke_groups(spec: dict) -> dict:
    groups = spec.get("node_groups")
    if not isinstance(groups, dict):
        return {}
    return {name: g for name, g in groups.items() if isinstance(g, dict) and g.get("provider") == PROVIDER}


def location(spec: dict) -> str:
    return (spec.get("gke") or {}).get("location") or spec["zone"]


def max_nodes(group: dict) -> int:
    settings = group.get("gke") or {}
    return settings.get("max_nodes") or max(group.get("count", 1), settings.get("min_nodes", 0), 1)


def pool_name(group_name: str, index: int) -> str:
    return f"{group_name}-{index}"


# -- validation -----------------------------------------------------------------------------------

def validate(spec: dict) -> list[Problem]:
    problems = _groups_elsewhere(spec)
    groups = gke_groups(spec)
    if not groups:
        return problems
    cluster = spec.get("gke") if isinstance(spec.get("gke"), dict) else {}
    problems += _cluster_name(spec.get("name"))
    problems += _location(spec, cluster)
    problems += _master(cluster)
    for name, group in groups.items():
        path = format_path(("node_groups", name))
        problems += compute_spec._machine_and_accelerator(path, group)
        problems += _pools(path, name, group)
    return problems


def _groups_elsewhere(spec: dict) -> list[Problem]:
    groups = spec.get("node_groups") if isinstance(spec.get("node_groups"), dict) else {}
    return [Problem(format_path(("node_groups", name, "gke")),
                    f"gke settings apply to `provider: gke` groups; this group's provider is "
                    f"{group.get('provider')!r}", "remove gke, or set `provider: gke`")
            for name, group in groups.items()
            if isinstance(group, dict) and "gke" in group and group.get("provider") != PROVIDER]


def _cluster_name(name) -> list[Problem]:
    if isinstance(name, str) and len(name) > MAX_CLUSTER_NAME:
        return [Problem("name", f"GKE cluster names are at most {MAX_CLUSTER_NAME} characters; "
                                f"'{name}' has {len(name)}", f"shorten it by {len(name) - MAX_CLUSTER_NAME}")]
    return []


def _location(spec: dict, cluster: dict) -> list[Problem]:
    where = cluster.get("location")
    problems = []
    if isinstance(where, str) and not REGION_RE.match(where) and (p := zone_problem(where, "gke.location")):
        problems.append(Problem(p.path, p.message, "a zone (us-central1-a) or a region (us-central1)"))
    anchor = where if isinstance(where, str) else spec.get("zone")
    region = anchor if isinstance(anchor, str) and REGION_RE.match(anchor) else (
        anchor.rsplit("-", 1)[0] if isinstance(anchor, str) else None)
    zones = cluster.get("node_locations")
    for i, zone in enumerate(zones if isinstance(zones, list) else []):
        path = f"gke.node_locations[{i}]"
        if p := zone_problem(zone, path):
            problems.append(p)
        elif isinstance(zone, str) and region and zone.rsplit("-", 1)[0] != region:
            problems.append(Problem(path, f"'{zone}' is not in the cluster's region {region}",
                                    f"use zones of {region}"))
    return problems


def _master(cluster: dict) -> list[Problem]:
    problems = []
    cidr = cluster.get("master_cidr")
    if cluster.get("private_nodes", True) and isinstance(cidr, str):
        try:
            network = ipaddress.ip_network(cidr)
        except ValueError:
            network = None
        if network is None or network.version != 4:
            problems.append(Problem("gke.master_cidr", f"'{cidr}' is not an IPv4 network",
                                    "e.g. 172.16.0.0/28 (the host bits must be 0)"))
        elif network.prefixlen != 28:
            problems.append(Problem("gke.master_cidr", f"private clusters need a /28; got /{network.prefixlen}",
                                    f"e.g. {network.network_address}/28"))
        elif not network.is_private:
            problems.append(Problem("gke.master_cidr", f"{cidr} is not an RFC 1918 range",
                                    "use one inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"))
    networks = cluster.get("master_authorized_networks")
    for i, block in enumerate(networks if isinstance(networks, list) else []):
        if not isinstance(block, str):
            continue
        try:
            ipaddress.ip_network(block)
        except ValueError:
            problems.append(Problem(f"gke.master_authorized_networks[{i}]", f"'{block}' is not a CIDR range",
                                    "e.g. 203.0.113.7/32 (host bits 0)"))
    return problems


def _pools(path: str, group_name: str, group: dict) -> list[Problem]:
    settings = group.get("gke") if isinstance(group.get("gke"), dict) else {}
    problems = []
    pools, low = settings.get("pools", 1), settings.get("min_nodes", 0)
    high, count = settings.get("max_nodes"), group.get("count", 1)
    if not all(type(v) is int for v in (pools, low, count)) or not (high is None or type(high) is int):
        return problems  # the schema reports the types
    if high is not None and low > high:
        problems.append(Problem(f"{path}.gke.min_nodes", f"min_nodes {low} is more than max_nodes {high}",
                                f"set min_nodes <= {high} or raise max_nodes"))
    top = max_nodes(group)
    if low <= top and not low <= count <= top:
        problems.append(Problem(f"{path}.count", f"count {count} (each pool's initial size) is outside "
                                                 f"min_nodes..max_nodes = {low}..{top}",
                                f"set count between {low} and {top}"))
    longest = pool_name(group_name, pools - 1) if pools >= 1 else group_name
    if len(longest) > MAX_CLUSTER_NAME:
        problems.append(Problem(path, f"node pools are named like '{longest}': more than "
                                      f"{MAX_CLUSTER_NAME} characters", "shorten the group name"))
    return problems
