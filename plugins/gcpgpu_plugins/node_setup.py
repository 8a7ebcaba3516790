"""Configuration every cluster gets: /etc/hosts and facts (`common`), the user's files
(`file_copy`, the env-var tool's VM_LOCALFILE_DEST_PATH) and startup command (`startup_command`)."""
from __future__ import annotations

from pathlib import Path

from gcpgpu.plugins import hookimpl

SCHEMA = {
    "ssh": {
        "description": "How gcpgpu reaches the nodes over SSH.",
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "properties": {
            "user": {"type": "string", "default": "gcpgpu", "pattern": "^[a-z_][a-z0-9_-]{0,31}$",
                     "description": "Login user the VMs create from the cluster's SSH key."},
            "timeout_s": {"type": "number", "minimum": 1, "default": 300,
                          "description": "How long to wait for SSH on new nodes."},
            "proxy_command": {"type": "string",
                              "description": "OpenSSH ProxyCommand, e.g. an IAP tunnel: gcloud "
                                             "compute start-iap-tunnel %h 22 --listen-on-stdin"},
        },
    },
    "files": {
        "description": "A local directory copied to every node (re-copied on configure when changed).",
        "type": "object",
        "additionalProperties": False,
        "required": ["src", "dest"],
        "properties": {
            "src": {"type": "string", "description": "Local directory, relative to cluster.yaml."},
            "dest": {"type": "string", "pattern": "^/", "description": "Absolute path on the nodes."},
            "excludes": {"type": "array", "items": {"type": "string"},
                         "default": [".git", "__pycache__", "*.pyc", ".DS_Store"],
                         "description": "Glob patterns left out."},
        },
    },
    "startup_command": {
        "type": "string", "default": "",
        "description": "Shell command run on every node at each boot and once now; output goes "
                       "to /var/log/gcpgpu/startup.log (see `gcpgpu logs`).",
    },
}

# Every node's name and address, computed by Ansible from the inventory itself.
ALL_HOSTS = ("{{ dict(groups['all'] | zip(groups['all'] | map('extract', hostvars, 'ansible_host')))"
             " | dict2items(key_name='name', value_name='ip') }}")
FACTS = {"cluster": "{{ gcpgpu_cluster }}", "group": "{{ gcpgpu_group }}",
         "node": "{{ inventory_hostname }}", "zone": "{{ gcpgpu_zone }}",
         "machine_type": "{{ (machineType | default('')) | basename }}", "gpus": "{{ gcpgpu_gpus }}"}


@hookimpl
def gcpgpu_schema():
    return {"cluster": {"properties": SCHEMA}}


@hookimpl
def gcpgpu_plays(spec):
    # These roles need no gathered facts (startup_command detects systemd itself): skipping the
    # setup module saves a remote round trip per host.
    plays = [{"name": "common", "hosts": "all", "order": 10, "gather_facts": False,
              "roles": [{"role": "common", "vars": {"common_hosts": ALL_HOSTS, "common_facts": FACTS}}]}]
    files = spec.get("files")
    if files:
        src = Path(spec.get("_base_dir", ".")) / files["src"]
        plays.append({"name": "files", "hosts": "all", "order": 30, "gather_facts": False,
                      "roles": [{"role": "file_copy", "tags": ["files"], "vars": {
                          "file_copy_src": str(src.resolve()), "file_copy_dest": files["dest"],
                          "file_copy_excludes": files["excludes"]}}]})
    if spec.get("startup_command"):
        plays.append({"name": "startup command", "hosts": "all", "order": 90, "gather_facts": False,
                      "roles": [{"role": "startup_command", "tags": ["startup"],
                                 "vars": {"startup_command": spec["startup_command"]}}]})
    return plays
