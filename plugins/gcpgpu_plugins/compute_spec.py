"""The compute provider's part of cluster.yaml: node-group properties and GCE compatibility checks.

``SCHEMA_FRAGMENT`` is what the compute plugin's ``gcpgpu_schema`` hook returns; ``validate`` is
what its ``gcpgpu_validate`` hook returns. Both work without any API call: the catalogue below holds
the Compute Engine facts they need.

Sources for the catalogue (checked 2025):
- https://cloud.google.com/compute/docs/gpus (GPU machine types; N1 GPU counts and vCPU limits)
- https://cloud.google.com/compute/docs/accelerator-optimized-machines (A2/A3/A4/G2 shapes)
- cross-checked against SkyPilot ``sky/catalog/gcp_catalog.py`` (_ACC_INSTANCE_TYPE_DICTS,
  _NUM_ACC_TO_MAX_CPU_AND_MEMORY) and PerfKitBenchmarker's GCE machine-type table.
"""
from __future__ import annotations

import difflib
import re

from gcpgpu.errors import Problem
from gcpgpu.spec import format_path

DEFAULT_MACHINE_TYPE = "a2-highgpu-2g"
DLVM_PROJECT = "deeplearning-platform-release"
DEFAULT_IMAGE = {"family": "pytorch-latest-gpu", "project": DLVM_PROJECT}
DISK_TYPES = ["pd-standard", "pd-balanced", "pd-ssd", "pd-extreme", "hyperdisk-balanced"]
MAX_NAME = 63
INSTANCE_SUFFIX = "-0000"  # instances are named {cluster}-{group}-{NNNN}

# Accelerator-optimized machine types: the GPUs come with the machine, in a fixed count.
BUILTIN_GPUS: dict[str, tuple[str, int]] = {
    # A2 Standard: A100 40GB
    "a2-highgpu-1g": ("nvidia-tesla-a100", 1),
    "a2-highgpu-2g": ("nvidia-tesla-a100", 2),
    "a2-highgpu-4g": ("nvidia-tesla-a100", 4),
    "a2-highgpu-8g": ("nvidia-tesla-a100", 8),
    "a2-megagpu-16g": ("nvidia-tesla-a100", 16),
    # A2 Ultra: A100 80GB
    "a2-ultragpu-1g": ("nvidia-a100-80gb", 1),
    "a2-ultragpu-2g": ("nvidia-a100-80gb", 2),
    "a2-ultragpu-4g": ("nvidia-a100-80gb", 4),
    "a2-ultragpu-8g": ("nvidia-a100-80gb", 8),
    # G2: L4 (note g2-standard-32 has 1 GPU, g2-standard-24 has 2)
    "g2-standard-4": ("nvidia-l4", 1),
    "g2-standard-8": ("nvidia-l4", 1),
    "g2-standard-12": ("nvidia-l4", 1),
    "g2-standard-16": ("nvidia-l4", 1),
    "g2-standard-24": ("nvidia-l4", 2),
    "g2-standard-32": ("nvidia-l4", 1),
    "g2-standard-48": ("nvidia-l4", 4),
    "g2-standard-96": ("nvidia-l4", 8),
    # A3 High / Edge: H100 80GB; A3 Mega: H100 Mega; A3 Ultra: H200
    "a3-highgpu-1g": ("nvidia-h100-80gb", 1),
    "a3-highgpu-2g": ("nvidia-h100-80gb", 2),
    "a3-highgpu-4g": ("nvidia-h100-80gb", 4),
    "a3-highgpu-8g": ("nvidia-h100-80gb", 8),
    "a3-edgegpu-8g": ("nvidia-h100-80gb", 8),
    "a3-megagpu-8g": ("nvidia-h100-mega-80gb", 8),
    "a3-ultragpu-8g": ("nvidia-h200-141gb", 8),
    # A4: B200
    "a4-highgpu-8g": ("nvidia-b200", 8),
}

# GPUs attachable to N1 machine types: allowed count -> maximum vCPUs of the N1 machine.
# (cloud.google.com/compute/docs/gpus, "N1 general-purpose"; P100 x4 allows only 64 vCPUs in
# us-east1-c, europe-west1-b and europe-west1-d: not modelled, the API says so.)
N1_GPUS: dict[str, dict[int, int]] = {
    "nvidia-tesla-t4": {1: 48, 2: 48, 4: 96},
    "nvidia-tesla-v100": {1: 12, 2: 24, 4: 48, 8: 96},
    "nvidia-tesla-p100": {1: 16, 2: 32, 4: 96},
    "nvidia-tesla-p4": {1: 24, 2: 48, 4: 96},
}
for _base in ("nvidia-tesla-t4", "nvidia-tesla-p100", "nvidia-tesla-p4"):  # RTX virtual workstation
    N1_GPUS[_base + "-vws"] = N1_GPUS[_base]

SERIES = {"a2": "A2", "a3": "A3", "a4": "A4", "g2": "G2"}
BUILTIN_TYPES = sorted({acc for acc, _ in BUILTIN_GPUS.values()} | {"nvidia-l4-vws"})
ACCELERATOR_TYPES = sorted(set(BUILTIN_TYPES) | set(N1_GPUS))

N1_SIZES = {
    "standard": [1, 2, 4, 8, 16, 32, 64, 96],
    "highmem": [2, 4, 8, 16, 32, 64, 96],
    "highcpu": [2, 4, 8, 16, 32, 64, 96],
}
N1_MACHINE_TYPES = [f"n1-{kind}-{n}" for kind, sizes in N1_SIZES.items() for n in sizes]
CATALOGUE = list(BUILTIN_GPUS) + N1_MACHINE_TYPES
# Families that exist but take no GPUs (N1 shared-core f1/g1 included) ...
NO_GPU_FAMILIES = {
    "e2", "n2", "n2d", "n4", "n4a", "n4d", "c2", "c2d", "c3", "c3d", "c4", "c4a", "c4d", "t2a",
    "t2d", "m1", "m2", "m3", "m4", "h3", "h4d", "z3", "x4", "f1", "g1",
}
# ... and GPU families gcpgpu does not catalogue yet (accepted, accelerator not checked).
UNCATALOGUED_GPU_FAMILIES = {"a4x", "g4"}

N1_RE = re.compile(r"^n1-(standard|highmem|highcpu)-(\d+)$")
N1_CUSTOM_RE = re.compile(r"^(?:n1-)?custom-(\d+)-(\d+)(?:-ext)?$")
RFC1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
METADATA_KEY = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")


def _accelerator_description() -> str:
    return ("GPUs of each node. Omit it for A2/G2/A3/A4 machine types: their GPUs are implied "
            "(a2-highgpu-2g: 2 x nvidia-tesla-a100). Needed to attach T4/V100/P100/P4 to N1 "
            "machine types; none for other machine types.")


def _implied_defaults() -> list[dict]:
    """Conditional defaults: the accelerator a machine type implies, filled in at load time."""
    rules = []
    for machine_type, (acc, count) in BUILTIN_GPUS.items():
        rules.append({
            "if": {"required": ["machine_type"], "properties": {"machine_type": {"const": machine_type}}},
            "then": {"properties": {"accelerator": {
                "default": {"type": acc, "count": count},
                "properties": {"type": {"default": acc}, "count": {"default": count}},
            }}},
        })
    rules.append({  # N1 with an accelerator: one GPU unless told otherwise
        "if": {"required": ["machine_type", "accelerator"],
               "properties": {"machine_type": {"type": "string", "pattern": "^(n1-|custom-)"}}},
        "then": {"properties": {"accelerator": {"properties": {"count": {"default": 1}}}}},
    })
    return rules


SCHEMA_FRAGMENT: dict = {
    "node_group": {
        "properties": {
            "machine_type": {
                "title": "Machine type",
                "description": "Compute Engine machine type of each node.",
                "type": "string",
                "default": DEFAULT_MACHINE_TYPE,
                "examples": ["a2-highgpu-8g", "g2-standard-8", "n1-standard-8"],
            },
            "accelerator": {
                "title": "Accelerator",
                "description": _accelerator_description(),
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "type": {
                        "title": "Accelerator type",
                        "description": "GPU model, as Compute Engine names it.",
                        "type": "string",
                        "examples": ["nvidia-tesla-a100", "nvidia-l4", "nvidia-tesla-t4"],
                    },
                    "count": {
                        "title": "Accelerator count",
                        "description": "GPUs per node (fixed by the machine type for A2/G2/A3/A4).",
                        "type": "integer",
                        "minimum": 1,
                    },
                },
                "examples": [{"type": "nvidia-tesla-t4", "count": 2}],
            },
            "image": {
                "title": "Boot image",
                "description": "Boot image: an image family (newest image of the family) or an image "
                               "name, and the project that owns it.",
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "family": {
                        "title": "Image family",
                        "description": "Image family; the newest image of the family is used.",
                        "type": "string",
                        "examples": ["pytorch-latest-gpu", "common-cu124"],
                    },
                    "name": {
                        "title": "Image name",
                        "description": "One specific image, instead of a family.",
                        "type": "string",
                        "examples": ["my-training-image-v3"],
                    },
                    "project": {
                        "title": "Image project",
                        "description": "Project that owns the image. Defaults to "
                                       f"{DLVM_PROJECT} with a family, the cluster's project with a name.",
                        "type": "string",
                    },
                },
                "allOf": [{"if": {"required": ["family"]},
                           "then": {"properties": {"project": {"default": DLVM_PROJECT}}}}],
                "default": DEFAULT_IMAGE,
                "examples": [DEFAULT_IMAGE, {"name": "my-training-image-v3", "project": "my-gcp-project"}],
            },
            "disk": {
                "title": "Boot disk",
                "description": "Boot disk of each node.",
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "size_gb": {
                        "title": "Size (GB)",
                        "description": "Boot disk size in GB.",
                        "type": "integer",
                        "minimum": 10,
                        "maximum": 65536,
                        "default": 2000,
                    },
                    "type": {
                        "title": "Disk type",
                        "description": "Boot disk type.",
                        "type": "string",
                        "enum": DISK_TYPES,
                        "default": "pd-ssd",
                    },
                },
                "default": {},
            },
            "spot": {
                "title": "Spot",
                "description": "Use Spot VMs (much cheaper, can be preempted at any time).",
                "type": "boolean",
                "default": False,
            },
            "metadata": {
                "title": "Metadata",
                "description": "Instance metadata (key: string value), e.g. startup-script.",
                "type": "object",
                "additionalProperties": {"type": "string"},
                "default": {},
            },
            "tags": {
                "title": "Network tags",
                "description": "Network tags of each node, used by firewall rules.",
                "type": "array",
                "items": {"type": "string"},
                "default": [],
                "examples": [["allow-ssh-iap"]],
            },
        },
        "allOf": _implied_defaults(),
    }
}


# -- validation -----------------------------------------------------------------------------------

def validate(spec: dict) -> list[Problem]:
    """Problems with the compute node groups of a loaded spec (defaults filled). Never calls an API.

    Written to be safe on a spec that failed schema validation: values of the wrong type are skipped
    (the schema already reported them)."""
    problems: list[Problem] = []
    cluster = spec.get("name") if isinstance(spec.get("name"), str) else None
    groups = spec.get("node_groups")
    if not isinstance(groups, dict):
        return problems
    for group_name, group in groups.items():
        if not isinstance(group, dict) or group.get("provider", "compute") != "compute":
            continue
        path = format_path(("node_groups", group_name))
        problems += _machine_and_accelerator(path, group)
        problems += _image(path, group.get("image"))
        problems += _tags(path, group.get("tags"))
        problems += _metadata(path, group.get("metadata"))
        if cluster and isinstance(group_name, str):
            problems += _instance_name(path, cluster, group_name)
    return problems


def _closest(word: str, choices, cutoff: float = 0.6) -> str | None:
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return found[0] if found else None


def _strip_vendor(name: str) -> str:
    return name.lower().replace("nvidia-", "").replace("tesla-", "")


def suggest_accelerator(name: str) -> str | None:
    """'a100' -> 'nvidia-tesla-a100', 'nvidia-tesla-l4' -> 'nvidia-l4', 'nvidia-tesla-t5' -> ..."""
    short = _strip_vendor(name).replace("_", "-").replace(" ", "-")
    by_short = {_strip_vendor(t): t for t in ACCELERATOR_TYPES}
    if short in by_short:
        return by_short[short]
    return _closest(name.lower(), ACCELERATOR_TYPES) or (
        by_short[m] if (m := _closest(short, by_short)) else None)


def machine_types_with(acc: str, count: int | None = None) -> list[str]:
    return [mt for mt, (a, n) in BUILTIN_GPUS.items() if a == acc and (count is None or n == count)]


def _n1_vcpus(machine_type: str) -> int | None:
    if m := N1_RE.match(machine_type):
        return int(m.group(2)) if int(m.group(2)) in N1_SIZES[m.group(1)] else None
    if m := N1_CUSTOM_RE.match(machine_type):
        return int(m.group(1))
    return None


def _family(machine_type: str) -> str:
    return machine_type.split("-", 1)[0]


def _gpu_alternatives(acc: str | None, count: int | None) -> str:
    """A short 'use X instead' for a GPU type and count."""
    if acc in N1_GPUS:
        n = count if count in N1_GPUS[acc] else min(N1_GPUS[acc])
        return f"attach {acc} to an N1 machine type, e.g. machine_type: n1-standard-8 with count {n}"
    if acc and (fits := machine_types_with(acc, count) or machine_types_with(acc)):
        return f"use machine_type: {fits[0]} ({BUILTIN_GPUS[fits[0]][1]} x {acc}) and omit accelerator"
    return "use a GPU machine type (a2-highgpu-1g, g2-standard-4, a3-highgpu-8g) or N1 with T4/V100/P100/P4"


def _machine_and_accelerator(path: str, group: dict) -> list[Problem]:
    problems: list[Problem] = []
    mt = group.get("machine_type")
    acc = group.get("accelerator")
    acc = acc if isinstance(acc, dict) else None
    acc_type = acc.get("type") if acc and isinstance(acc.get("type"), str) else None
    acc_count = acc.get("count") if acc and type(acc.get("count")) is int else None
    if acc_count is not None and acc_count < 1:
        acc_count = None  # the schema reports it

    if acc_type is not None and acc_type not in ACCELERATOR_TYPES:
        guess = suggest_accelerator(acc_type)
        problems.append(Problem(
            f"{path}.accelerator.type", f"unknown accelerator type '{acc_type}'",
            f"did you mean '{guess}'?" if guess else "known: " + ", ".join(ACCELERATOR_TYPES)))
        acc_type = None  # nothing more to say about it
        known_type = False
    else:
        known_type = True

    if not isinstance(mt, str):
        return problems
    family = _family(mt)

    if mt in BUILTIN_GPUS:
        implied, n = BUILTIN_GPUS[mt]
        if acc_type and acc_type != implied and acc_type != implied + "-vws":
            problems.append(Problem(
                f"{path}.accelerator.type", f"{mt} comes with {implied}, not {acc_type}",
                _gpu_alternatives(acc_type, acc_count) if acc_type else "omit accelerator"))
        elif acc_count is not None and acc_count != n and known_type:
            others = machine_types_with(implied, acc_count)
            hint = (f"use machine_type: {others[0]} for {acc_count}, or omit accelerator" if others
                    else f"set count: {n} or omit accelerator")
            problems.append(Problem(
                f"{path}.accelerator.count", f"{mt} comes with {n} x {implied}; got {acc_count}", hint))
        return problems

    if family in SERIES:  # an A2/A3/A4/G2 name that is not in the catalogue
        guess = _closest(mt, [m for m in BUILTIN_GPUS if m.startswith(family + "-")], cutoff=0.5)
        problems.append(Problem(
            f"{path}.machine_type", f"unknown {SERIES[family]} machine type '{mt}'",
            f"did you mean '{guess}'?" if guess else
            "known: " + ", ".join(m for m in BUILTIN_GPUS if m.startswith(family + "-"))))
        return problems

    if family == "n1" or family == "custom":
        vcpus = _n1_vcpus(mt)
        if vcpus is None:
            guess = _closest(mt, N1_MACHINE_TYPES, cutoff=0.5)
            problems.append(Problem(
                f"{path}.machine_type", f"unknown N1 machine type '{mt}'",
                f"did you mean '{guess}'?" if guess else "e.g. n1-standard-8, n1-highmem-16"))
            return problems
        if acc is None:
            return problems
        if acc_type is None:
            if known_type:
                problems.append(Problem(
                    f"{path}.accelerator.type", "missing: the GPU model to attach to " + mt,
                    "add e.g. `type: nvidia-tesla-t4`"))
            return problems
        if acc_type not in N1_GPUS:
            problems.append(Problem(
                f"{path}.accelerator.type", f"{acc_type} cannot be attached to N1 ({mt})",
                _gpu_alternatives(acc_type.removesuffix("-vws"), acc_count)))
            return problems
        limits = N1_GPUS[acc_type]
        count = acc_count if acc_count is not None else 1
        if count not in limits:
            problems.append(Problem(
                f"{path}.accelerator.count",
                f"{acc_type} attaches in counts of {', '.join(map(str, limits))}; got {count}",
                f"use count: {min((c for c in limits if c >= count), default=max(limits))}"))
        elif vcpus > limits[count]:
            more = [c for c in sorted(limits) if limits[c] >= vcpus]
            smaller = [m for m in N1_MACHINE_TYPES if m.startswith(mt.rsplit("-", 1)[0] + "-")
                       and (_n1_vcpus(m) or 0) <= limits[count]]
            options = []
            if smaller:
                options.append(f"use {smaller[-1]}")
            if more:
                options.append(f"attach {more[0]} GPUs")
            problems.append(Problem(
                f"{path}.machine_type",
                f"{mt} has {vcpus} vCPUs; {count} x {acc_type} allows at most {limits[count]}",
                " or ".join(options)))
        return problems

    if family in NO_GPU_FAMILIES:
        if acc is not None:
            problems.append(Problem(
                f"{path}.accelerator", f"{mt} cannot have GPUs attached",
                _gpu_alternatives(acc_type, acc_count)))
        return problems

    if family in UNCATALOGUED_GPU_FAMILIES:
        return problems

    guess = _closest(mt, CATALOGUE, cutoff=0.5)
    problems.append(Problem(
        f"{path}.machine_type", f"unknown machine type family '{family}' in '{mt}'",
        f"did you mean '{guess}'?" if guess else
        "GPU machine types: a2-highgpu-*, a2-ultragpu-*, g2-standard-*, a3-*, or n1-* with an accelerator"))
    return problems


def _image(path: str, image) -> list[Problem]:
    if not isinstance(image, dict) or set(image) - {"family", "name", "project"}:
        return []  # not a mapping, or a misspelt key: the schema reports it
    has_family, has_name = "family" in image, "name" in image
    if has_family and has_name:
        return [Problem(f"{path}.image", "has both family and name",
                        "keep one: family picks the newest image of a family, name one image")]
    if not has_family and not has_name:
        return [Problem(f"{path}.image", "needs a family or a name",
                        f"add e.g. `family: {DEFAULT_IMAGE['family']}`")]
    return []


def _tags(path: str, tags) -> list[Problem]:
    problems: list[Problem] = []
    if not isinstance(tags, list):
        return problems
    seen: dict[str, int] = {}
    for i, tag in enumerate(tags):
        if not isinstance(tag, str):
            continue
        if tag in seen:
            problems.append(Problem(f"{path}.tags[{i}]", f"tag '{tag}' is listed twice",
                                    f"remove it (also tags[{seen[tag]}])"))
            continue
        seen[tag] = i
        if len(tag) > MAX_NAME or not RFC1035.match(tag):
            fixed = re.sub(r"[^a-z0-9-]+", "-", tag.lower()).strip("-")[:MAX_NAME].rstrip("-")
            hint = "1-63 lowercase letters, digits and '-', starting with a letter"
            if RFC1035.match(fixed):
                hint = f"try '{fixed}'"
            problems.append(Problem(f"{path}.tags[{i}]", f"'{tag}' is not a valid network tag", hint))
    return problems


def _metadata(path: str, metadata) -> list[Problem]:
    if not isinstance(metadata, dict):
        return []
    return [Problem(f"{path}.metadata", f"invalid metadata key '{key}'",
                    "keys are 1-128 letters, digits, '-' and '_'")
            for key in metadata if not (isinstance(key, str) and METADATA_KEY.match(key))]


def _instance_name(path: str, cluster: str, group: str) -> list[Problem]:
    if len(cluster) > MAX_NAME or len(group) > MAX_NAME:
        return []  # the name itself is reported
    example = f"{cluster}-{group}{INSTANCE_SUFFIX}"
    over = len(example) - MAX_NAME
    if over <= 0:
        return []
    return [Problem(
        path, f"instance names like '{example}' are {len(example)} characters; GCE allows {MAX_NAME}",
        f"shorten the cluster name ({len(cluster)} chars) or the group name '{group}' "
        f"({len(group)} chars) by {over} characters in total")]
