"""Fixtures for the emulator's own tests.

The public ``gcp_emulator`` fixture comes from the pytest11 entry point once the package is
installed; these tests use their own ``emu`` fixture so nothing is registered twice.
"""

from __future__ import annotations

import pytest
from emulator_helpers import Clients, make_clients

from gcpgpu.emulator import Emulator


@pytest.fixture
def emu():
    with Emulator(latency=0.1) as emulator:
        yield emulator


@pytest.fixture
def gce(emu) -> Clients:
    return make_clients(emu.url)


