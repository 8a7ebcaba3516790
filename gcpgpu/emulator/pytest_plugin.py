"""pytest plugin (entry point ``pytest11``: gcpgpu_emulator) providing the ``gcp_emulator`` fixture.

    def test_create(gcp_emulator):
        client = compute_v1.InstancesClient(
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=gcp_emulator.url),
        )

Each test gets a fresh emulator (operation latency 0.05 s) on a free loopback port.
"""

from __future__ import annotations

import pytest

from .server import Emulator


@pytest.fixture
def gcp_emulator():
    emulator = Emulator(latency=0.05)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()
