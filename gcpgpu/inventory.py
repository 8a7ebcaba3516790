"""`gcpgpu-inventory`: the Ansible dynamic-inventory script protocol (--list / --host)."""
from __future__ import annotations

import json
import sys


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    # Until configuration lands, the inventory is empty but well-formed.
    data = {"_meta": {"hostvars": {}}} if "--list" in argv or not argv else {}
    sys.stdout.write(json.dumps(data) + "\n")
