"""The `storage:` part of cluster.yaml: Filestore shares (`nfs`) and GCS FUSE mounts (`gcs`).

Both lists also take the env-var tool's strings: NFS_FILESHARE_LIST (`/mnt/data:BASIC_SSD:2560`,
comma-separated) and GCS_MOUNT_LIST (`bucket:/mnt/path`, comma-separated), as the whole value or
as list items. ``nfs_shares(spec)`` / ``gcs_mounts(spec)`` turn either form into filled dicts:
providers and plays use only those, never the raw spec.
"""
from __future__ import annotations

import hashlib
import posixpath
import re

from gcpgpu.errors import Problem
from gcpgpu.spec import did_you_mean, zone_problem

# Capacity range in GB per tier (Filestore service tiers). Zonal tiers live in a zone,
# ENTERPRISE in a region.
TIER_CAPACITY_GB = {"BASIC_HDD": (1024, 65434), "BASIC_SSD": (2560, 65434),
                    "HIGH_SCALE_SSD": (10240, 102400), "ENTERPRISE": (1024, 10240)}
REGIONAL_TIERS = {"ENTERPRISE"}
DEFAULT_TIER = "BASIC_SSD"
DEFAULT_SIZE_GB = 2560
NFS_OPTIONS = "rw,hard,timeo=600,retrans=3,_netdev,nofail"
NFS_DEFAULTS = {"tier": DEFAULT_TIER, "size_gb": DEFAULT_SIZE_GB, "share_name": "share1",
                "options": NFS_OPTIONS}
GCS_DEFAULTS = {"create": False, "location": "", "force_destroy_all_objects": False,
                "implicit_dirs": True, "file_mode": "0664", "dir_mode": "0775", "cache_dir": "",
                "options": []}
# Mount points that would hide the system.
FORBIDDEN_PATHS = {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc",
                   "/root", "/run", "/sbin", "/sys", "/tmp", "/usr", "/var"}
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$")
SHARE_RE = re.compile(r"^[a-z][a-z0-9_]{0,15}$")
MAX_NAME = 63

_PATH = {"type": "string", "pattern": "^/\\S*$",
         "description": "Absolute mount path on every node, without spaces."}
# Items are a string or a mapping: object keywords ignore strings, so no anyOf (whose errors
# would name the wrong branch).
NFS_SHARE = {
    "type": ["string", "object"],
    "additionalProperties": False,
    "required": ["path"],
    "properties": {
        "path": _PATH,
        "tier": {"enum": list(TIER_CAPACITY_GB), "default": DEFAULT_TIER,
                 "description": "Filestore service tier. BASIC_SSD >= 2560 GB, BASIC_HDD >= 1024 GB, "
                                "HIGH_SCALE_SSD >= 10240 GB, ENTERPRISE 1024-10240 GB (regional)."},
        "size_gb": {"type": "integer", "minimum": 1, "default": DEFAULT_SIZE_GB,
                    "description": "Capacity in GB; can grow in place (BASIC tiers cannot shrink)."},
        "share_name": {"type": "string", "default": "share1",
                       "description": "Name of the file share (the NFS export is /<share_name>): "
                                      "lowercase letter, then up to 15 lowercase letters, digits, '_'."},
        "zone": {"type": "string",
                 "description": "Zone of the instance (default: the cluster's zone); ENTERPRISE "
                                "instances go in its region."},
        "network": {"type": "string",
                    "description": "VPC network the instance joins (default: the cluster's network)."},
        "options": {"type": "string", "default": NFS_OPTIONS,
                    "description": "NFS mount options written to /etc/fstab."},
    },
}
GCS_MOUNT = {
    "type": ["string", "object"],
    "additionalProperties": False,
    "required": ["bucket", "path"],
    "properties": {
        "bucket": {"type": "string", "description": "Cloud Storage bucket name (without gs://)."},
        "path": _PATH,
        "create": {"type": "boolean", "default": False,
                   "description": "Create the bucket (versioned, labelled, uniform access, public "
                                  "access prevented) and give the cluster's service account object "
                                  "access. Without it the bucket must exist and is never changed."},
        "location": {"type": "string", "default": "",
                     "description": "Location of a created bucket (default: the cluster's region)."},
        "force_destroy_all_objects": {
            "type": "boolean", "default": False,
            "description": "DANGER: let `down` (or removing the entry) delete a bucket gcpgpu created "
                           "together with every object version in it. Without it, only an empty "
                           "bucket is deleted and a non-empty one is reported and kept."},
        "implicit_dirs": {"type": "boolean", "default": True,
                          "description": "Show directories that exist only as object name prefixes."},
        "file_mode": {"type": "string", "pattern": "^0?[0-7]{3}$", "default": "0664",
                      "description": "Permission bits of files in the mount."},
        "dir_mode": {"type": "string", "pattern": "^0?[0-7]{3}$", "default": "0775",
                     "description": "Permission bits of directories in the mount."},
        "cache_dir": {"type": "string", "default": "",
                      "description": "Local directory for gcsfuse's file cache (e.g. on a local SSD); "
                                     "empty: no file cache."},
        "options": {"type": "array", "items": {"type": "string"}, "default": [],
                    "description": "More gcsfuse mount options, e.g. ['ro', 'uid=1000']."},
    },
}
SCHEMA = {
    "storage": {
        "description": "Shared storage mounted on every node: Filestore NFS shares and GCS buckets.",
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "properties": {
            "nfs": {
                "description": "Filestore shares, one instance each, mounted on every node. Also "
                               "takes NFS_FILESHARE_LIST strings: '/mnt/data:BASIC_SSD[:2560],...'.",
                "type": ["string", "array"], "items": NFS_SHARE,
                "default": [],
            },
            "gcs": {
                "description": "Cloud Storage buckets mounted with gcsfuse on every node. Also takes "
                               "GCS_MOUNT_LIST strings: 'bucket:/mnt/path,...'.",
                "type": ["string", "array"], "items": GCS_MOUNT,
                "default": [],
            },
        },
    },
}
SCHEMA_FRAGMENT = {"cluster": {"properties": SCHEMA}}


# -- the two forms -> filled dicts -------------------------------------------------------------------

class ParseError(ValueError):
    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.hint = hint


def _items(value) -> list[tuple[str, object]]:
    """(path suffix, item) pairs of a list, or of a comma-separated string."""
    if isinstance(value, str):
        return [("", part.strip()) for part in value.split(",") if part.strip()]
    return [(f"[{i}]", item) for i, item in enumerate(value or [])]


def parse_nfs(text: str) -> dict:
    """'/mnt/data:BASIC_SSD[:2560]' -> {path, tier, size_gb}."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise ParseError(f"'{text}' is not '/mount/path:TIER[:SIZE_GB]'",
                         "e.g. '/mnt/data:BASIC_SSD:2560'")
    share = {"path": parts[0], "tier": parts[1].upper()}
    if len(parts) == 3:
        if not parts[2].isdigit():
            raise ParseError(f"size '{parts[2]}' in '{text}' is not a whole number of GB",
                             "e.g. '/mnt/data:BASIC_SSD:2560'")
        share["size_gb"] = int(parts[2])
    return share


def parse_gcs(text: str) -> dict:
    """'bucket:/mnt/path' (gs:// allowed) -> {bucket, path}."""
    bucket, sep, path = text.removeprefix("gs://").partition(":")
    if not sep or not bucket or not path:
        raise ParseError(f"'{text}' is not 'bucket:/mount/path'", "e.g. 'my-bucket:/mnt/data'")
    return {"bucket": bucket, "path": path}


def _filled(value, parse, defaults) -> list[tuple[str, dict]]:
    found = []
    for suffix, item in _items(value):
        raw = parse(item) if isinstance(item, str) else dict(item)
        found.append((suffix, {**defaults, **raw}))
    return found


def nfs_shares(spec: dict) -> list[dict]:
    """Every Filestore share of the spec, filled, with its instance name, location and network."""
    shares = []
    for _, share in _filled((spec.get("storage") or {}).get("nfs"), parse_nfs, NFS_DEFAULTS):
        zone = share.get("zone") or spec.get("zone", "us-central1-a")
        share["zone"] = zone
        share["location"] = zone.rsplit("-", 1)[0] if share["tier"] in REGIONAL_TIERS else zone
        share["network"] = share.get("network") or cluster_network(spec)
        share["instance"] = instance_name(spec["name"], share["path"])
        shares.append(share)
    return shares


def gcs_mounts(spec: dict) -> list[dict]:
    """Every bucket mount of the spec, filled (location defaults to the cluster's region)."""
    region = spec.get("zone", "us-central1-a").rsplit("-", 1)[0]
    mounts = []
    for _, mount in _filled((spec.get("storage") or {}).get("gcs"), parse_gcs, GCS_DEFAULTS):
        mount["location"] = (mount.get("location") or region).upper()
        mounts.append(mount)
    return mounts


def cluster_network(spec: dict) -> str:
    """The VPC the cluster's VMs use. Read defensively: the network plugin defines `network`
    (a name, or a mapping with `name`); anything else means the project's `default`."""
    network = spec.get("network")
    if isinstance(network, dict) and isinstance(network.get("name"), str) and network["name"]:
        return network["name"]
    if isinstance(network, str) and network not in ("", "default", "new", "multi_nic"):
        return network
    return "default"


def instance_name(cluster: str, path: str) -> str:
    """'demo' + '/mnt/shared-data' -> 'demo-mnt-shared-data' (a hash keeps long ones unique)."""
    slug = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "root"
    name = f"{cluster}-{slug}"
    if len(name) > MAX_NAME:
        tag = hashlib.sha256(path.encode()).hexdigest()[:6]
        name = f"{name[:MAX_NAME - 7].rstrip('-')}-{tag}"
    return name


# -- checks -------------------------------------------------------------------------------------------

def validate(spec: dict) -> list[Problem]:
    storage = spec.get("storage")
    if not isinstance(storage, dict):
        return []
    problems: list[Problem] = []
    paths: dict[str, str] = {}
    problems += _check_nfs(spec, storage.get("nfs"), paths)
    problems += _check_gcs(storage.get("gcs"), paths)
    return problems


def _well_formed(value, base: str, parse, defaults) -> tuple[list[Problem], list[tuple[str, dict]]]:
    if not isinstance(value, (str, list)):
        return [], []
    problems, found = [], []
    for suffix, item in _items(value):
        if not isinstance(item, (str, dict)):
            continue  # the schema reports it
        try:
            raw = parse(item) if isinstance(item, str) else item
        except ParseError as error:
            problems.append(Problem(base + suffix, str(error), error.hint))
            continue
        found.append((base + suffix, {**defaults, **raw}))
    return problems, found


def _check_path(path, where: str, paths: dict[str, str]) -> list[Problem]:
    if not isinstance(path, str):
        return []
    if not path.startswith("/"):
        return [Problem(where, f"mount path '{path}' is not absolute", f"e.g. '/{path}'")]
    normal = posixpath.normpath(path)
    if normal != path:
        return [Problem(where, f"mount path '{path}' is not in normal form", f"write '{normal}'")]
    if normal in FORBIDDEN_PATHS:
        return [Problem(where, f"mounting over '{path}' would hide system files",
                        f"use a directory under /mnt, e.g. '/mnt{path.rstrip('/') or '/data'}'")]
    for other, other_where in paths.items():
        if other == normal or other.startswith(normal + "/") or normal.startswith(other + "/"):
            return [Problem(where, f"mount path '{path}' overlaps '{other}' ({other_where})",
                            "give every share and bucket its own directory")]
    paths[normal] = where
    return []


def _check_nfs(spec: dict, value, paths: dict[str, str]) -> list[Problem]:
    problems, shares = _well_formed(value, "storage.nfs", parse_nfs, NFS_DEFAULTS)
    names: dict[str, str] = {}
    for where, share in shares:
        problems += _check_path(share.get("path"), _field(value, where, "path"), paths)
        tier, size = share.get("tier"), share.get("size_gb")
        if tier not in TIER_CAPACITY_GB:
            guess = did_you_mean(tier, list(TIER_CAPACITY_GB))
            problems.append(Problem(_field(value, where, "tier"), f"unknown Filestore tier '{tier}'",
                                    f"did you mean '{guess}'?" if guess
                                    else "choose one of: " + ", ".join(TIER_CAPACITY_GB)))
        elif isinstance(size, int) and not isinstance(size, bool):
            low, high = TIER_CAPACITY_GB[tier]
            if not low <= size <= high:
                default = " (the default)" if size == DEFAULT_SIZE_GB else ""
                problems.append(Problem(_field(value, where, "size_gb"),
                                        f"{tier} shares hold {low}-{high} GB, not {size}{default}",
                                        f"set size_gb: {low if size < low else high}"))
        name = share.get("share_name")
        if isinstance(name, str) and not SHARE_RE.match(name):
            problems.append(Problem(_field(value, where, "share_name"), f"share name '{name}' is invalid",
                                    "a lowercase letter, then up to 15 lowercase letters, digits or '_'"))
        if isinstance(share.get("zone"), str) and (p := zone_problem(share["zone"], _field(value, where, "zone"))):
            problems.append(p)
        if isinstance(share.get("path"), str) and isinstance(spec.get("name"), str):
            instance = instance_name(spec["name"], share["path"])
            if instance in names:
                problems.append(Problem(where, f"this share's instance name '{instance}' is the same "
                                               f"as {names[instance]}'s", "change one mount path"))
            names[instance] = where
    return problems


def _check_gcs(value, paths: dict[str, str]) -> list[Problem]:
    problems, mounts = _well_formed(value, "storage.gcs", parse_gcs, GCS_DEFAULTS)
    created: dict[str, tuple[str, dict]] = {}
    for where, mount in mounts:
        problems += _check_path(mount.get("path"), _field(value, where, "path"), paths)
        bucket = mount.get("bucket")
        if isinstance(bucket, str) and (problem := _bucket_problem(bucket)):
            problems.append(Problem(_field(value, where, "bucket"), *problem))
        if isinstance(bucket, str) and mount.get("create") is True:
            if bucket in created:
                problems.append(Problem(_field(value, where, "create"),
                                        f"bucket '{bucket}' is already created by {created[bucket][0]}",
                                        "set create on one entry only"))
            created.setdefault(bucket, (where, mount))
        elif mount.get("force_destroy_all_objects") is True:
            problems.append(Problem(_field(value, where, "force_destroy_all_objects"),
                                    "only applies to buckets gcpgpu creates (create: true)",
                                    "remove it: gcpgpu never deletes a bucket it did not create"))
    return problems


def _field(value, where: str, name: str) -> str:
    """The path of a field: the item itself when it was written as a string."""
    if isinstance(value, str):
        return where
    index = int(where[where.rindex("[") + 1:-1])
    return where if isinstance(value[index], str) else f"{where}.{name}"


def _bucket_problem(bucket: str) -> tuple[str, str] | None:
    hint = "3-63 lowercase letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
    if bucket.startswith("gs://"):
        return f"'{bucket}' includes the gs:// scheme", f"write '{bucket[5:]}'"
    if not BUCKET_RE.match(bucket) or ".." in bucket:
        return f"invalid bucket name '{bucket}'", hint
    if bucket.startswith("goog") or "google" in bucket:
        return f"bucket names may not start with 'goog' or contain 'google': '{bucket}'", "rename it"
    return None

