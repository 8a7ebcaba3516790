"""Where the shipped data lives: inside the wheel (gcpgpu/_data/...) or, in a source checkout
or editable install, at the repository's top level (roles/, playbooks/, schemas/, inventory/)."""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def data_path(name: str) -> Path:
    """Path of a shipped data directory or file, e.g. data_path("schemas/cluster.schema.json")."""
    installed = PACKAGE_DIR / "_data" / name
    return installed if installed.exists() else PACKAGE_DIR.parent / name
