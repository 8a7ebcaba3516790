"""The `static` provider: machines gcpgpu did not create (on-prem GPU boxes, a VM made by hand).

A static node group lists its hosts; gcpgpu creates and deletes nothing for it (no resources,
desired or live) and yields the hosts to configuration like any other: same roles, inventory,
`configure`, `status`, Slurm. Each host's SSH host key is pinned under a stable id made from its
name, and a group may log in with its own user and private key instead of the cluster's.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from gcpgpu.errors import GcpgpuError, Problem
from gcpgpu.plugins import hookimpl
from gcpgpu.provider import Context, Host, Resource
from gcpgpu.spec import format_path

NAME = "static"
HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
GROUP_KEYS = ("hosts", "ssh_user", "ssh_private_key")

SCHEMA_FRAGMENT = {
    "node_group": {
        "properties": {
            "hosts": {
                "title": "Existing hosts",
                "description": "provider: static only. Machines gcpgpu did not create; the group's "
                               "nodes are the first `count` of them.",
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["address"],
                    "properties": {
                        "address": {"type": "string", "minLength": 1,
                                    "description": "IP address or DNS name SSH connects to."},
                        "name": {"type": "string",
                                 "description": "Node name in the inventory (and Slurm); default "
                                                "{cluster}-{group}-NNNN like created VMs."},
                        "gpus": {"type": "integer", "minimum": 0, "default": 0,
                                 "description": "GPUs of the host (/dev/nvidia0..N-1)."},
                    },
                },
                "examples": [[{"address": "10.0.0.5", "name": "box1", "gpus": 8}]],
            },
            "ssh_user": {
                "title": "SSH user",
                "description": "provider: static only. Login user on the hosts (sudo without a "
                               "password); default: the cluster's ssh.user.",
                "type": "string",
                "pattern": "^[a-z_][a-z0-9_.-]{0,31}$",
                "examples": ["ubuntu"],
            },
            "ssh_private_key": {
                "title": "SSH private key",
                "description": "provider: static only. Private key file for the hosts ('~' and paths "
                               "relative to cluster.yaml work); default: the cluster's own key.",
                "type": "string",
                "examples": ["~/.ssh/id_ed25519"],
            },
        },
        "allOf": [{"if": {"required": ["provider"], "properties": {"provider": {"const": NAME}}},
                   "then": {"required": ["hosts"],  # the example is the hint when it is missing
                            "properties": {"hosts": {"examples": [[{"address": "10.0.0.5"}]]}}}}],
    }
}


def host_name(cluster: str, group: str, index: int, entry: dict) -> str:
    return entry.get("name") or f"{cluster}-{group}-{index:04d}"


def static_groups(spec: dict) -> dict:
    groups = spec.get("node_groups")
    if not isinstance(groups, dict):
        return {}
    return {name: g for name, g in groups.items() if isinstance(g, dict) and g.get("provider") == NAME}


def validate(spec: dict) -> list[Problem]:
    """Safe on schema-invalid specs: values of the wrong type are skipped."""
    problems = _keys_outside_static(spec)
    names: Counter = Counter()
    addresses: Counter = Counter()
    cluster = spec.get("name") if isinstance(spec.get("name"), str) else "cluster"
    for group_name, group in static_groups(spec).items():
        hosts = group.get("hosts")
        if not isinstance(hosts, list):
            continue
        path = format_path(("node_groups", group_name))
        count = group.get("count")
        if type(count) is int and count > len(hosts):
            problems.append(Problem(f"{path}.count", f"is {count} but only {len(hosts)} host(s) are listed",
                                    f"list {count - len(hosts)} more under hosts, or set count: {len(hosts)}"))
        for i, entry in enumerate(hosts):
            if not isinstance(entry, dict) or not isinstance(entry.get("name", ""), str):
                continue
            name = host_name(cluster, str(group_name), i, entry)
            if not HOSTNAME.match(name):
                problems.append(Problem(f"{path}.hosts[{i}].name", f"'{name}' is not a valid host name",
                                        "use letters, digits and '-' (at most 63), e.g. 'gpu-box-1'"))
            names[name] += 1
            if isinstance(entry.get("address"), str):
                addresses[entry["address"]] += 1
            if names[name] == 2:
                problems.append(Problem(f"{path}.hosts[{i}].name", f"host name '{name}' is used twice",
                                        "give each host its own name"))
            if addresses.get(entry.get("address")) == 2:
                problems.append(Problem(f"{path}.hosts[{i}].address",
                                        f"address '{entry['address']}' is listed twice",
                                        "list each machine once"))
    return problems


def _keys_outside_static(spec: dict) -> list[Problem]:
    groups = spec.get("node_groups")
    problems = []
    for group_name, group in (groups.items() if isinstance(groups, dict) else []):
        if not isinstance(group, dict) or group.get("provider") == NAME:
            continue
        for key in GROUP_KEYS:
            if key in group:
                problems.append(Problem(format_path(("node_groups", group_name, key)),
                                        f"'{key}' is only for existing hosts (provider: static)",
                                        "add `provider: static`, or remove it"))
    return problems


class StaticProvider:
    """Owns no cloud resource: nothing to create, observe or delete."""

    name = NAME

    def desired(self, spec: dict, group_name: str, group: dict) -> list[Resource]:
        return []

    def observe(self, ctx: Context) -> list[Resource]:
        return []

    def create(self, ctx: Context, resources: list[Resource]) -> None:
        return None

    def delete(self, ctx: Context, resources: list[Resource]) -> None:
        return None  # never called: static hosts have no resources; `down` leaves them alone

    def hosts(self, ctx: Context, live: list[Resource]) -> list[Host]:
        spec = ctx.spec
        found = []
        for group_name, group in static_groups(spec).items():
            key = _private_key(spec, group_name, group)
            for i, entry in enumerate(group["hosts"][: group["count"]]):
                name = host_name(spec["name"], group_name, i, entry)
                found.append(Host(
                    name=name, group=group_name, address=entry["address"],
                    # A stable id for host-key pinning (HostKeyAlias gcpgpu-static-<name>).
                    instance_id=f"static-{name}", status="RUNNING", gpus=entry.get("gpus", 0),
                    user=group.get("ssh_user", ""),
                    identity_file=key))
        return found


def _private_key(spec: dict, group_name: str, group: dict) -> str:
    if not group.get("ssh_private_key"):
        return ""
    path = Path(group["ssh_private_key"]).expanduser()
    if not path.is_absolute():
        path = Path(spec.get("_base_dir", ".")) / path
    if not path.is_file():
        raise GcpgpuError(f"node_groups.{group_name}.ssh_private_key: {path} is not a file "
                          f"(give the private key gcpgpu logs in to the hosts with)")
    return str(path)


@hookimpl
def gcpgpu_schema():
    return SCHEMA_FRAGMENT


@hookimpl
def gcpgpu_validate(spec):
    return validate(spec)


@hookimpl
def gcpgpu_register_providers(register):
    register(StaticProvider())
