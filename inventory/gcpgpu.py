"""Ansible inventory plugin for gcpgpu clusters.

Use it with a file named ``*.gcpgpu.yml`` (``gcpgpu inventory CLUSTER --write DIR`` writes one)::

    plugin: gcpgpu
    cluster: /path/to/cluster.yaml
    endpoint: http://127.0.0.1:8085   # optional: the emulator

and make Ansible find this directory, e.g.
``ANSIBLE_INVENTORY_PLUGINS=$(python -c 'import gcpgpu.resources as r; print(r.data_path("inventory"))')``.
Hosts, groups and hostvars come from the same function as `gcpgpu-inventory` and `gcpgpu configure`.
"""
from __future__ import annotations

DOCUMENTATION = r"""
name: gcpgpu
short_description: Hosts, groups and hostvars of a gcpgpu cluster
description:
  - Reads the cluster's live nodes through gcpgpu (the same inventory gcpgpu configure uses).
options:
  plugin:
    description: Must be C(gcpgpu).
    required: true
    choices: [gcpgpu]
  cluster:
    description: Path of the cluster.yaml, relative to this file or absolute.
    required: true
    type: path
  endpoint:
    description: Google API endpoint override (the gcpgpu emulator URL).
    type: str
"""

import os

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin


class InventoryModule(BaseInventoryPlugin):
    NAME = "gcpgpu"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith((".gcpgpu.yml", ".gcpgpu.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        from gcpgpu.errors import GcpgpuError
        from gcpgpu.inventory import cluster_inventory, load_cluster

        cluster_path = os.path.join(os.path.dirname(path), self.get_option("cluster"))
        try:
            built = cluster_inventory(load_cluster(cluster_path, self.get_option("endpoint")))
        except GcpgpuError as error:
            raise AnsibleParserError(f"gcpgpu: {error}") from error
        for name, hostvars in built.hostvars.items():
            self.inventory.add_host(name)
            for key, value in hostvars.items():
                self.inventory.set_variable(name, key, value)
        for group, members in built.groups.items():
            self.inventory.add_group(group)
            for member in members:
                self.inventory.add_host(member, group=group)
