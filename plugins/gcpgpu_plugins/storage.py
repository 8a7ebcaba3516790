"""Shared storage on every node (entry point `storage`): Filestore NFS shares (`storage.nfs`,
provider `filestore`, role `nfs_mount`) and Cloud Storage buckets through gcsfuse (`storage.gcs`,
provider `gcs` for the buckets it creates, role `gcsfuse`). See docs/storage.md."""
from __future__ import annotations

from gcpgpu.errors import Problem
from gcpgpu.plugins import hookimpl
from gcpgpu_plugins import storage_spec
from gcpgpu_plugins.storage_filestore import FilestoreProvider
from gcpgpu_plugins.storage_gcs import GcsProvider

PLAY_ORDER = 60  # after the core roles (10-50), before the startup command (90)
PROVIDERS = ("filestore", "gcs")


@hookimpl
def gcpgpu_schema():
    return storage_spec.SCHEMA_FRAGMENT


@hookimpl
def gcpgpu_validate(spec):
    problems = storage_spec.validate(spec)
    groups = spec.get("node_groups")
    for name, group in (groups.items() if isinstance(groups, dict) else []):
        if isinstance(group, dict) and group.get("provider") in PROVIDERS:
            problems.append(Problem(f"node_groups.{name}.provider",
                                    f"'{group['provider']}' makes shared storage, not nodes",
                                    "declare shares and buckets under storage.nfs / storage.gcs"))
    return problems


@hookimpl
def gcpgpu_register_providers(register):
    register(FilestoreProvider())
    register(GcsProvider())


@hookimpl
def gcpgpu_plays(spec):
    plays = []
    if storage_spec.nfs_shares(spec):
        # Addresses exist only once the instances do: they come from the inventory.
        plays.append({"name": "nfs mounts", "hosts": "all", "order": PLAY_ORDER, "gather_facts": False,
                      "roles": [{"role": "nfs_mount", "tags": ["storage"], "vars": {
                          "nfs_mount_mounts": "{{ gcpgpu_nfs_mounts | default([]) }}"}}]})
    mounts = storage_spec.gcs_mounts(spec)
    if mounts:
        plays.append({"name": "gcs mounts", "hosts": "all", "order": PLAY_ORDER + 1,
                      "gather_facts": False,
                      "roles": [{"role": "gcsfuse", "tags": ["storage"], "vars": {
                          "gcsfuse_mounts": [gcsfuse_mount(m) for m in mounts]}}]})
    return plays


def gcsfuse_mount(mount: dict) -> dict:
    """One entry of the gcsfuse role's ``gcsfuse_mounts``: bucket, path and fstab options."""
    options = ["rw", "_netdev", "allow_other", f"file_mode={mount['file_mode']}",
               f"dir_mode={mount['dir_mode']}"]
    if mount["implicit_dirs"]:
        options.append("implicit_dirs")
    if mount["cache_dir"]:
        options.append(f"cache_dir={mount['cache_dir']}")
    options += [o for o in mount["options"] if o not in options]
    if "ro" in options:
        options.remove("rw")
    return {"bucket": mount["bucket"], "path": mount["path"], "options": ",".join(options),
            "cache_dir": mount["cache_dir"]}
