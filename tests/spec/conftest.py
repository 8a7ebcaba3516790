"""Fixtures for the spec tests.

``plugins``: only the compute spec (compute_spec.py) and a dummy "compute" provider, with every
installed entry-point plugin blocked, so results do not depend on what else is installed.
``installed_plugins``: the plugins really installed (what `gcpgpu validate` uses).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for extra in (ROOT, ROOT / "plugins"):  # also works from a plain checkout, not pip-installed
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from gcpgpu.plugins import Plugins, entry_point_names, hookimpl  # noqa: E402
from gcpgpu_plugins import compute_spec  # noqa: E402


class DummyProvider:
    def __init__(self, name: str):
        self.name = name


class ComputeSpecPlugin:
    """The spec half of plugins/gcpgpu_plugins/compute.py, with a provider that does nothing."""

    @hookimpl
    def gcpgpu_schema(self):
        return compute_spec.SCHEMA_FRAGMENT

    @hookimpl
    def gcpgpu_validate(self, spec):
        return compute_spec.validate(spec)

    @hookimpl
    def gcpgpu_register_providers(self, register):
        register(DummyProvider("compute"))


@pytest.fixture
def plugins(monkeypatch) -> Plugins:
    monkeypatch.setenv("GCPGPU_DISABLE_PLUGINS", ",".join(entry_point_names()))
    return Plugins(extra=(ComputeSpecPlugin(),))


@pytest.fixture
def installed_plugins(monkeypatch) -> Plugins:
    monkeypatch.delenv("GCPGPU_DISABLE_PLUGINS", raising=False)
    if "compute" not in entry_point_names():
        pytest.skip("gcpgpu is not installed (no 'compute' entry point)")
    return Plugins()
