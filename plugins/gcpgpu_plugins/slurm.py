"""The Slurm orchestrator: `orchestrator: {type: slurm, controller_group: head, ...}`.

slurmctld runs on the first node of the controller group, slurmd on every node of the compute
groups; slurm.conf and gres.conf are rendered from the inventory (node names, addresses, CPUs and
memory from facts, GPUs from gcpgpu_gpus); partitions follow node groups. The munge key is made
once by gcpgpu on this machine, next to the cluster's SSH key (never in state), and copied to the
nodes by the `slurm` role.
"""
from __future__ import annotations

import os
import re
import threading

from gcpgpu.errors import Problem
from gcpgpu.plugins import hookimpl
from gcpgpu.spec import did_you_mean, orchestrator_rule

TYPE = "slurm"
CONTROLLER_GROUP = "slurm_controller"
COMPUTE_GROUP = "slurm_compute"
PARTITION_GROUP_PREFIX = "slurm_partition_"
PLAY_ORDER = 60  # after the core roles (10-50), before the startup command (90)
MUNGE_KEY_NAME = "munge.key"
MUNGE_KEY_BYTES = 1024
PARTITION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# slurm.conf keys gcpgpu writes from the inventory: `config` must not set them.
MANAGED_KEYS = {"ClusterName", "SlurmctldHost", "ControlMachine", "ControlAddr", "NodeName",
                "PartitionName", "NodeSet", "GresTypes", "Include"}
_KEY_LOCK = threading.Lock()

SCALAR = {"type": ["string", "integer", "number", "boolean"]}
PARTITION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["groups"],
    "properties": {
        "groups": {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True,
                   "description": "Compute node groups whose nodes are in the partition."},
        "default": {"type": "boolean", "default": False,
                    "description": "The partition jobs go to when they name none (one at most)."},
        "options": {"type": "object", "additionalProperties": SCALAR, "default": {},
                    "description": "More PartitionName settings, e.g. {MaxTime: '24:00:00'}."},
    },
}
SCHEMA = {
    "description": "Slurm: slurmctld on the controller group's first node, slurmd on the compute groups.",
    "required": ["controller_group"],
    "properties": {
        "controller_group": {"type": "string", "examples": ["head"],
                             "description": "Node group whose first node runs slurmctld."},
        "compute_groups": {
            "type": "array", "items": {"type": "string"}, "uniqueItems": True,
            "description": "Node groups whose nodes run slurmd. Default: every group but the "
                           "controller's (the controller's group itself when it is the only one)."},
        "partitions": {
            "type": "object", "additionalProperties": PARTITION,
            "description": "Partitions by name. Default: one per compute group, named after it; "
                           "the first one is the default partition.",
            "examples": [{"gpu": {"groups": ["workers"], "default": True, "options": {"MaxTime": "24:00:00"}}}]},
        "gpu_device_prefix": {
            "type": "string", "pattern": "^/", "default": "/dev/nvidia",
            "description": "GPU device files, numbered from 0: gres.conf gets File=<prefix>[0-N]."},
        "config": {
            "type": "object", "additionalProperties": SCALAR, "default": {},
            "description": "More slurm.conf settings (Key: value); they override gcpgpu's, e.g. "
                           "{ProctrackType: proctrack/linuxproc}."},
    },
}


def settings(spec: dict) -> dict | None:
    """The spec's Slurm settings, or None when another orchestrator (or none) is chosen."""
    orchestrator = spec.get("orchestrator")
    if isinstance(orchestrator, dict) and orchestrator.get("type") == TYPE:
        return orchestrator
    return None


def compute_groups(spec: dict, slurm: dict) -> list[str]:
    if "compute_groups" in slurm:
        return list(slurm["compute_groups"])
    others = [g for g in spec["node_groups"] if g != slurm["controller_group"]]
    return others or [slurm["controller_group"]]


def partitions(spec: dict, slurm: dict) -> list[dict]:
    """[{name, groups, default, options}], exactly one default when there is any partition."""
    given = slurm.get("partitions") or {
        group: {"groups": [group], "default": False, "options": {}} for group in compute_groups(spec, slurm)}
    found = [{"name": name, "groups": list(p["groups"]), "default": bool(p.get("default")),
              "options": dict(p.get("options") or {})} for name, p in given.items()]
    if found and not any(p["default"] for p in found):
        found[0]["default"] = True
    return found


def partition_group(name: str) -> str:
    from gcpgpu.inventory import group_name

    return group_name(PARTITION_GROUP_PREFIX + name)


# -- validation -----------------------------------------------------------------------------------

def validate(spec: dict) -> list[Problem]:
    """Safe on schema-invalid specs: values of the wrong type are skipped."""
    slurm = settings(spec)
    groups = spec.get("node_groups")
    if slurm is None or not isinstance(groups, dict):
        return []
    names = [g for g in groups if isinstance(g, str)]
    problems: list[Problem] = []
    controller = slurm.get("controller_group")
    if isinstance(controller, str):
        if controller not in groups:
            problems.append(_unknown_group("orchestrator.controller_group", controller, names))
        elif isinstance(groups[controller], dict) and groups[controller].get("count") == 0:
            problems.append(Problem(f"node_groups.{controller}.count",
                                    "is 0, but this group runs the Slurm controller",
                                    "give it at least 1 node"))
    given = slurm.get("compute_groups")
    for i, group in enumerate(given if isinstance(given, list) else []):
        if isinstance(group, str) and group not in groups:
            problems.append(_unknown_group(f"orchestrator.compute_groups[{i}]", group, names))
    if isinstance(controller, str) and controller in groups and isinstance(given, (list, type(None))):
        problems += _partition_problems(slurm, compute_groups(spec, slurm))
    problems += _config_problems(slurm.get("config"))
    return problems


def _unknown_group(path: str, group: str, names: list[str]) -> Problem:
    guess = did_you_mean(group, names)
    return Problem(path, f"'{group}' is not a node group",
                   f"did you mean '{guess}'?" if guess else "node groups: " + ", ".join(names))


def _partition_problems(slurm: dict, computes: list[str]) -> list[Problem]:
    given = slurm.get("partitions")
    if not isinstance(given, dict):
        return []
    problems = []
    defaults = [name for name, p in given.items() if isinstance(p, dict) and p.get("default") is True]
    if len(defaults) > 1:
        problems.append(Problem("orchestrator.partitions",
                                f"{len(defaults)} default partitions ({', '.join(map(str, defaults))})",
                                "mark one partition `default: true`"))
    for name, partition in given.items():
        path = f"orchestrator.partitions.{name}"
        if not PARTITION_NAME.match(str(name)):
            problems.append(Problem(path, f"'{name}' is not a valid partition name",
                                    "use letters, digits, '_' and '-'"))
        members = partition.get("groups") if isinstance(partition, dict) else None
        for i, group in enumerate(members if isinstance(members, list) else []):
            if isinstance(group, str) and group not in computes:
                problems.append(Problem(f"{path}.groups[{i}]", f"'{group}' is not a compute group",
                                        "compute groups: " + ", ".join(computes)
                                        + " (add it to orchestrator.compute_groups)"))
    return problems


def _config_problems(config) -> list[Problem]:
    if not isinstance(config, dict):
        return []
    return [Problem(f"orchestrator.config.{key}", f"'{key}' is written by gcpgpu from the cluster",
                    "use controller_group, compute_groups or partitions instead")
            for key in config if key in MANAGED_KEYS]


# -- the munge key --------------------------------------------------------------------------------

def munge_key(spec: dict) -> str:
    """The cluster's munge key, made once on this machine next to the SSH key (0600)."""
    from gcpgpu.ssh import ClusterKeys

    keys = ClusterKeys.for_spec(spec)
    path = keys.dir / MUNGE_KEY_NAME
    with _KEY_LOCK:
        if not path.exists():
            keys.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(os.urandom(MUNGE_KEY_BYTES))
    return str(path)


# -- hooks ----------------------------------------------------------------------------------------

@hookimpl
def gcpgpu_schema():
    return {"cluster": {"allOf": [orchestrator_rule(TYPE, SCHEMA)]}}


@hookimpl
def gcpgpu_validate(spec):
    return validate(spec)


@hookimpl
def gcpgpu_host_groups(spec, hosts):
    slurm = settings(spec)
    if slurm is None:
        return {}
    by_group: dict[str, list[str]] = {}
    for host in sorted(hosts, key=lambda h: h.name):
        by_group.setdefault(host.group, []).append(host.name)
    controller = by_group.get(slurm["controller_group"], [])[:1]
    found = {CONTROLLER_GROUP: controller,
             COMPUTE_GROUP: [h for g in compute_groups(spec, slurm) for h in by_group.get(g, [])]}
    for partition in partitions(spec, slurm):
        found[partition_group(partition["name"])] = [h for g in partition["groups"] for h in by_group.get(g, [])]
    return found


@hookimpl
def gcpgpu_plays(spec):
    slurm = settings(spec)
    if slurm is None:
        return []
    role_vars = {
        "slurm_cluster_name": spec["name"],
        "slurm_controller_group": CONTROLLER_GROUP,
        "slurm_compute_group": COMPUTE_GROUP,
        "slurm_partitions": [{"name": p["name"], "group": partition_group(p["name"]),
                              "default": p["default"], "options": p["options"]}
                             for p in partitions(spec, slurm)],
        "slurm_munge_key_file": munge_key(spec),
        "slurm_gpu_device_prefix": slurm["gpu_device_prefix"],
        "slurm_config": dict(slurm["config"]),
    }
    # No fact gathering: the role reads each node's hardware with `slurmd -C` (what slurmd will
    # check its NodeName line against), cheaper than the hardware facts.
    return [{"name": "slurm", "hosts": f"{CONTROLLER_GROUP}:{COMPUTE_GROUP}", "order": PLAY_ORDER,
             "gather_facts": False, "roles": [{"role": "slurm", "vars": role_vars}]}]
