"""Fixtures for real local test nodes (see gcpgpu/emulator/nodes.py)."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from gcpgpu.emulator.nodes import NodePool, nodes_supported


def _pool_network() -> tuple[str, str]:
    """Bridge and subnet for test pools: distinct from the demo's gcpgpu-br0 / 10.200.0,
    and per xdist worker so parallel workers never share (or clean up) each other's bridge."""
    worker = int(re.sub(r"\D", "", os.environ.get("PYTEST_XDIST_WORKER", "")) or 0)
    bridge = os.environ.get("GCPGPU_TEST_BRIDGE", f"gcpgpu-t{worker}")
    subnet = os.environ.get("GCPGPU_TEST_SUBNET", f"10.200.{100 + worker}")
    return bridge, subnet


@pytest.fixture
def node_network() -> tuple[str, str]:
    """(bridge, subnet) the node_pool fixture uses; tests derive side pools from it."""
    return _pool_network()


@pytest.fixture
def node_pool(tmp_path_factory):
    """A NodePool on a test bridge; skipped (with the reason) where nodes cannot be made."""
    ok, reason = nodes_supported()
    if not ok:
        pytest.skip(f"test nodes unavailable: {reason}")
    bridge, subnet = _pool_network()
    pool = NodePool(tmp_path_factory.mktemp("nodes"), bridge=bridge, subnet=subnet)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="session")
def ssh_keypair(tmp_path_factory) -> tuple[Path, str]:
    """(private key path, public key line) of a fresh ed25519 key."""
    key = tmp_path_factory.mktemp("sshkey") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gcpgpu-test", "-f", str(key)],
                   check=True, stdin=subprocess.DEVNULL)
    return key, key.with_suffix(".pub").read_text().strip()
