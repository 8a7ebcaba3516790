"""Fixtures for the Ansible role tests: test nodes on their own bridge and an ansible-runner helper."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"
USER = "gcpgpu"
# Distinct from the demo (gcpgpu-br0 / 10.200.0) and from tests/nodes (gcpgpu-tN / 10.200.10N).
# Per process: several people (and xdist workers) run these tests at once on one machine, and a
# pool reclaims stale nodes on its bridge, so two runs must never share a bridge or a subnet.
_SLOT = os.getpid() % 250
BRIDGE = os.environ.get("GCPGPU_ROLES_TEST_BRIDGE", f"gcpgpu-br-r{_SLOT}")
SUBNET = os.environ.get("GCPGPU_ROLES_TEST_SUBNET", f"10.203.{_SLOT}")


@dataclass
class RunResult:
    rc: int
    status: str
    stats: dict[str, dict[str, int]]
    stdout: str
    seconds: float
    events: list[dict] = field(default_factory=list)

    def total(self, key: str) -> int:
        return sum((self.stats.get(key) or {}).values())

    def per_host(self, key: str) -> dict[str, int]:
        return dict(self.stats.get(key) or {})


def run_playbook(workdir: Path, plays: list[dict], inventory: dict, *, extravars: dict | None = None,
                 check: bool = False, diff: bool = False, forks: int = 16) -> RunResult:
    """Run ``plays`` with ansible-runner in a fresh private_data_dir under ``workdir``."""
    import ansible_runner

    workdir.mkdir(parents=True, exist_ok=True)
    pdd = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    (pdd / "project").mkdir()
    (pdd / "project" / "site.yml").write_text(yaml.safe_dump(plays, sort_keys=False))
    # A short directory: ssh control sockets must fit in sun_path (108 bytes).
    cpdir = tempfile.mkdtemp(prefix="gcp-cp-", dir="/tmp")
    envvars = {
        "ANSIBLE_ROLES_PATH": str(ROLES),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": cpdir,
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=5s -o UserKnownHostsFile=/dev/null "
                            "-o LogLevel=ERROR -o ConnectTimeout=10",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_SSH_RETRIES": "3",  # a new client can race a control master that is exiting
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_LOCAL_TEMP": str(pdd / "tmp"),
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
    }
    cmdline = " ".join(x for x in ("--check" if check else "", "--diff" if diff else "") if x)
    events: list[dict] = []

    def on_event(event: dict) -> bool:
        events.append(event)
        return True  # False (or None) drops the event, and with it the run's stats

    start = time.monotonic()
    try:
        r = ansible_runner.run(private_data_dir=str(pdd), playbook="site.yml", inventory=inventory,
                               extravars=extravars or {}, envvars=envvars, cmdline=cmdline or None,
                               forks=forks, quiet=True, event_handler=on_event)
        seconds = time.monotonic() - start
        stdout = r.stdout.read()
        return RunResult(rc=r.rc, status=r.status, stats=r.stats or {}, stdout=stdout, seconds=seconds,
                         events=events)
    finally:
        shutil.rmtree(cpdir, ignore_errors=True)


def ok(result: RunResult) -> RunResult:
    assert result.rc == 0 and result.status == "successful", result.stdout[-6000:]
    return result


@dataclass
class Cluster:
    pool: Any
    key: Path
    names: list[str]
    ips: dict[str, str]
    workdir: Path

    def inventory(self, names: list[str] | None = None, **hostvars: Any) -> dict:
        hosts = {}
        for name in names or self.names:
            hosts[name] = {
                "ansible_host": self.ips[name],
                "ansible_user": USER,
                "ansible_ssh_private_key_file": str(self.key),
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_become": True,
                **hostvars.get(name, {}),
            }
        return {"all": {"hosts": hosts}}

    def hosts_list(self, names: list[str] | None = None) -> list[dict]:
        return [{"name": n, "ip": self.ips[n]} for n in (names or self.names)]

    def node(self, name: str):
        return self.pool.node(name)


def _keypair(directory: Path) -> tuple[Path, str]:
    key = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gcpgpu-roles-test", "-f", str(key)],
                   check=True, stdin=subprocess.DEVNULL)
    return key, key.with_suffix(".pub").read_text().strip()


def make_cluster(pool, workdir: Path, names: list[str]) -> Cluster:
    key, pub = _keypair(workdir)
    ips = {}
    for name in names:
        ips[name] = pool.acquire(name, {
            "name": name,
            "zone": "projects/test-proj/zones/us-central1-a",
            "metadata": {"items": [{"key": "ssh-keys", "value": f"{USER}:{pub}"}]},
        })
    # sshd is the node's init: wait until every node answers.
    deadline = time.monotonic() + 20
    for name in names:
        while True:
            r = subprocess.run(["ssh", "-i", str(key), "-F", "/dev/null", "-o", "BatchMode=yes",
                                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                                "-o", "ConnectTimeout=3", "-o", "LogLevel=ERROR", f"{USER}@{ips[name]}", "true"],
                               capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
            if r.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {name} ({ips[name]}) never answered SSH: {r.stderr!r}")
            time.sleep(0.2)
    return Cluster(pool=pool, key=key, names=names, ips=ips, workdir=workdir)


@pytest.fixture(scope="module")
def node_pool_roles(tmp_path_factory):
    from gcpgpu.emulator.nodes import NodePool, nodes_supported

    supported, reason = nodes_supported()
    if not supported:
        pytest.skip(f"test nodes unavailable: {reason}")
    pool = NodePool(tmp_path_factory.mktemp("role-nodes"), bridge=BRIDGE, subnet=SUBNET)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="module")
def cluster(node_pool_roles, tmp_path_factory) -> Cluster:
    """Two fresh nodes (per test module) reachable as gcpgpu@ip with sudo."""
    workdir = tmp_path_factory.mktemp("roles")
    names = ["rnode-0", "rnode-1"]
    c = make_cluster(node_pool_roles, workdir, names)
    yield c
    for name in names:
        node_pool_roles.release(name)


def read_node(cluster: Cluster, name: str, path: str) -> str:
    return cluster.node(name).path(path).read_text()


def node_json(cluster: Cluster, name: str, path: str) -> Any:
    return json.loads(read_node(cluster, name, path))
