"""The dynamic inventory: one function builds hosts, groups and hostvars; the rest render it.

Served three ways, all from ``build_inventory``: to ansible-runner by ``gcpgpu configure``, by the
``gcpgpu-inventory`` script (Ansible's script protocol, --list/--host), and by the Ansible
inventory plugin in ``inventory/gcpgpu.py`` for ``*.gcpgpu.yml`` files. Hostvars follow the
google.cloud.gcp_compute plugin's names (name, zone, machineType, labels, networkInterfaces...).
"""
from __future__ import annotations

import json
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

CLUSTER_ENV = "GCPGPU_CLUSTER"
CONFIG_NAME = "gcpgpu-inventory.yml"
# Ansible reserves `name` and `tags` as variable names: the host name is inventory_hostname.
INSTANCE_FIELDS = ("id", "zone", "machineType", "status", "labels", "networkInterfaces",
                   "guestAccelerators", "scheduling")


@dataclass
class Inventory:
    groups: dict[str, list[str]] = field(default_factory=dict)
    hostvars: dict[str, dict] = field(default_factory=dict)
    variables: dict = field(default_factory=dict)  # seen by every host (group `all`)

    def script_format(self) -> dict:
        """Ansible's dynamic-inventory script JSON (`--list`)."""
        data = {name: {"hosts": hosts} for name, hosts in self.groups.items()}
        data["all"] = {"children": sorted(self.groups), "vars": self.variables}
        data["_meta"] = {"hostvars": self.hostvars}
        return data

    def yaml_format(self) -> dict:
        """Ansible's YAML inventory structure (what ansible-runner takes as a dict)."""
        children = {name: {"hosts": {h: None for h in hosts}} for name, hosts in self.groups.items()}
        return {"all": {"hosts": self.hostvars, "children": children, "vars": self.variables}}


def group_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def build_inventory(spec: dict, hosts: list, keys, extra_groups: list[dict] = (),
                    variables: dict | None = None) -> Inventory:
    groups: dict[str, set] = defaultdict(set)
    hostvars = {}
    for host in hosts:
        groups[group_name(host.group)].add(host.name)
        if host.gpus:
            groups["all_gpu"].add(host.name)
        for key, value in host.labels.items():
            if not key.startswith("gcpgpu-"):
                groups[group_name(f"label_{key}_{value}")].add(host.name)
        hostvars[host.name] = _hostvars(spec, host, keys)
    for contributed in extra_groups:
        for name, members in (contributed or {}).items():
            groups[group_name(name)].update(m for m in members if m in hostvars)
    return Inventory({name: sorted(members) for name, members in sorted(groups.items())}, hostvars,
                     dict(variables or {}))


def _hostvars(spec: dict, host, keys) -> dict:
    instance = {k: host.hostvars[k] for k in INSTANCE_FIELDS if k in host.hostvars}
    ssh_args = keys.ssh_options(host, IdentityFile=None)  # the key: ansible_ssh_private_key_file
    return {
        **instance,
        "ansible_host": host.address,
        "ansible_user": keys.login_user(host),
        "ansible_ssh_private_key_file": str(keys.identity(host)),
        "ansible_ssh_common_args": " ".join(ssh_args),
        "ansible_python_interpreter": "/usr/bin/python3",
        "gcpgpu_cluster": spec["name"],
        "gcpgpu_group": host.group,
        "gcpgpu_zone": host.zone,
        "gcpgpu_gpus": host.gpus,
        "gcpgpu_instance_id": host.instance_id,
    }


def cluster_inventory(cluster, hosts: list | None = None) -> Inventory:
    """The inventory of a cluster's hosts (by default its live ones: one observe per provider)."""
    live = cluster.observe() if hosts is None else None
    hosts = cluster.hosts(live) if hosts is None else hosts
    extra = cluster.plugins.hook.gcpgpu_host_groups(spec=cluster.spec, hosts=hosts)
    return build_inventory(cluster.spec, hosts, cluster.keys.ensure(), extra, cluster.variables(live))


def load_cluster(spec_path: str, endpoint: str | None = None):
    from gcpgpu.clients import endpoint_from_env
    from gcpgpu.engine import open_cluster
    from gcpgpu.plugins import Plugins

    return open_cluster(spec_path, Plugins(), endpoint or endpoint_from_env())


def _configured_cluster() -> tuple[str, str | None]:
    """The cluster file: $GCPGPU_CLUSTER, else gcpgpu-inventory.yml next to the script or here."""
    if os.environ.get(CLUSTER_ENV):
        return os.environ[CLUSTER_ENV], None
    import yaml

    for directory in (Path(sys.argv[0]).resolve().parent, Path.cwd()):
        config = directory / CONFIG_NAME
        if config.exists():
            data = yaml.safe_load(config.read_text()) or {}
            return str((directory / data["cluster"]).resolve()), data.get("endpoint")
    raise SystemExit(f"gcpgpu-inventory: set {CLUSTER_ENV}=path/to/cluster.yaml or write "
                     f"{CONFIG_NAME} with 'cluster: path/to/cluster.yaml'")


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="gcpgpu-inventory",
                                     description="Ansible dynamic inventory of a gcpgpu cluster.")
    parser.add_argument("--list", action="store_true", help="all groups and hostvars (default)")
    parser.add_argument("--host", help="hostvars of one host")
    args = parser.parse_args(argv)
    spec_path, endpoint = _configured_cluster()
    inventory = cluster_inventory(load_cluster(spec_path, endpoint))
    data = inventory.hostvars.get(args.host, {}) if args.host else inventory.script_format()
    sys.stdout.write(json.dumps(data, indent=1, sort_keys=True) + "\n")


def write_plugin_config(directory: Path, spec_path: str, endpoint: str | None, name: str) -> Path:
    """A ``<name>.gcpgpu.yml`` for the Ansible inventory plugin in inventory/gcpgpu.py."""
    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.gcpgpu.yml"
    config = {"plugin": "gcpgpu", "cluster": str(Path(spec_path).resolve())}
    if endpoint:
        config["endpoint"] = endpoint
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
