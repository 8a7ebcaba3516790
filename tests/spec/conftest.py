"""Fixtures for the spec tests: a Plugins whose compute part is compute_spec (plus a dummy
provider), independent of which entry points are installed."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for extra in (ROOT, ROOT / "plugins"):  # a plain checkout, not pip-installed
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from gcpgpu.plugins import Plugins, hookimpl  # noqa: E402
from gcpgpu_plugins import compute_spec  # noqa: E402


class DummyProvider:
    def __init__(self, name: str):
        self.name = name


class ComputeSpecPlugin:
    """What plugins/gcpgpu_plugins/compute.py exposes for the spec, without the provider itself."""

    @hookimpl
    def gcpgpu_schema(self):
        return compute_spec.SCHEMA_FRAGMENT

    @hookimpl
    def gcpgpu_validate(self, spec):
        return compute_spec.validate(spec)

    @hookimpl
    def gcpgpu_register_providers(self, register):
        register(DummyProvider("compute"))
        register(DummyProvider("static"))


@pytest.fixture
def plugins(monkeypatch) -> Plugins:
    # Block the real built-in compute plugin (if installed) so "compute" is registered once.
    monkeypatch.setenv("GCPGPU_DISABLE_PLUGINS", "compute")
    return Plugins(extra=(ComputeSpecPlugin(),))
