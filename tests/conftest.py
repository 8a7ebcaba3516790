"""Suite-wide guard: no test may look up a non-local name (CI also runs inside `unshare --net`)."""
from __future__ import annotations

import ipaddress
import socket

import pytest

_real_getaddrinfo = socket.getaddrinfo
LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
# Loopback plus the private ranges our test-node namespaces use.
LOCAL_NETWORKS = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1/128", "10.200.0.0/13")]


def is_local(host) -> bool:
    if host is None:
        return True
    host = host.decode() if isinstance(host, bytes) else str(host)
    if host in LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in LOCAL_NETWORKS)


def guarded_getaddrinfo(host, *args, **kwargs):
    if not is_local(host):
        raise OSError(f"tests may not resolve or reach non-local host {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = guarded_getaddrinfo



@pytest.fixture(autouse=True)
def _no_real_google(monkeypatch, tmp_path):
    """Every test gets its own state directory and never inherits a real endpoint setting."""
    monkeypatch.setenv("GCPGPU_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("GCPGPU_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.delenv("GCPGPU_ENDPOINT", raising=False)


@pytest.fixture
def emu():
    """An emulator without test nodes (50 ms per operation)."""
    from gcpgpu.emulator import Emulator

    with Emulator(latency=0.05) as emulator:
        yield emulator


@pytest.fixture
def node_rig(tmp_path, monkeypatch):
    """(emulator, node pool): an emulator whose VMs are real test nodes, with GCPGPU_ENDPOINT
    pointing at it. Skips, saying why, where test nodes cannot be made (not root, not Linux)."""
    import os

    from gcpgpu.emulator import Emulator
    from gcpgpu.emulator.nodes import NodePool, nodes_supported

    supported, reason = nodes_supported()
    if not supported:
        pytest.skip(f"test nodes unavailable: {reason}")
    monkeypatch.setenv("ANSIBLE_LOCAL_TEMP", str(tmp_path / "ansible-tmp"))
    slot = os.getpid() % 250  # runs may share this machine: a bridge and subnet of our own
    pool = NodePool(tmp_path / "nodes", bridge=f"gcpgpu-e2e{slot}", subnet=f"10.201.{slot}")
    emu = Emulator(latency=0.05)
    emu.start()
    emu.bind_nodes(pool)
    monkeypatch.setenv("GCPGPU_ENDPOINT", emu.url)
    try:
        yield emu, pool
    finally:
        emu.stop()
        pool.close()
