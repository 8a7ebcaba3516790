"""The idle watchdog: its decision logic (unit) and the autostop role on a real test node that
stops an emulated cluster through the Compute API once nobody uses it."""
from __future__ import annotations

import json
import time
import importlib.util
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest
from click.testing import CliRunner

from .conftest import ROLES, ok, run_playbook

_loader = SourceFileLoader("gcpgpu_autostop", str(ROLES / "autostop/files/gcpgpu-autostop"))
watchdog = importlib.util.module_from_spec(importlib.util.spec_from_loader(_loader.name, _loader))
_loader.exec_module(watchdog)


def test_decide_acts_only_after_the_idle_time_without_activity():
    assert watchdog.decide(now=1000, last_active=0, busy=True, idle_seconds=60) == "busy"
    assert watchdog.decide(now=1000, last_active=950, busy=False, idle_seconds=60) == "idle"
    assert watchdog.decide(now=1000, last_active=940, busy=False, idle_seconds=60) == "act"


def fake_proc(tmp_path: Path, titles: dict[int, str]) -> Path:
    for pid, title in titles.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(title.replace(" ", "\0").encode())
    (tmp_path / "self").mkdir()
    return tmp_path


def test_ssh_sessions_count_user_sessions_not_the_listener_or_privileged_halves(tmp_path):
    proc = fake_proc(tmp_path, {1: "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups",
                                20: "sshd: alice [priv]", 21: "sshd: alice@pts/0",
                                30: "sshd: bob@notty", 40: "python3 train.py"})
    assert watchdog.ssh_sessions(str(proc)) == 2


def test_no_nvidia_smi_means_no_gpu_process():
    assert watchdog.gpu_processes("/nonexistent/nvidia-smi") == 0


def test_check_remembers_activity_and_acts_in_dry_run_without_calling_anything(tmp_path, monkeypatch):
    config = {"idle_seconds": 60, "action": "stop", "dry_run": True, "state_dir": str(tmp_path / "s"),
              "log": str(tmp_path / "log"), "api": "http://127.0.0.1:9", "project": "p", "cluster": "c"}
    monkeypatch.setattr(watchdog, "gpu_processes", lambda: 0)
    monkeypatch.setattr(watchdog, "ssh_sessions", lambda: 1)
    assert watchdog.check(config, now=1000)["decision"] == "busy"
    monkeypatch.setattr(watchdog, "ssh_sessions", lambda: 0)
    assert watchdog.check(config, now=1030)["decision"] == "idle"
    assert watchdog.check(config, now=1061)["decision"] == "act"
    assert "idle for 61.0s: stop the cluster" in (tmp_path / "log").read_text()


@pytest.fixture
def emulated_cluster(tmp_path, monkeypatch):
    """Two VMs of cluster 'idle' in an emulator the test nodes can reach (on every address)."""
    from gcpgpu.cli import cli
    from gcpgpu.emulator import Emulator

    emu = Emulator(latency=0.05)
    emu.start(host="0.0.0.0")
    port = emu.url.rsplit(":", 1)[1]
    spec = tmp_path / "idle.yaml"
    spec.write_text("name: idle\nproject: demo-project\nzone: us-central1-a\n"
                    "node_groups:\n  a: {count: 2, machine_type: n1-standard-4}\n")
    result = CliRunner().invoke(cli, ["--endpoint", f"http://127.0.0.1:{port}", "up", str(spec),
                                      "--no-configure"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    try:
        yield emu, port
    finally:
        emu.stop()


def test_role_installs_an_idempotent_watchdog_that_stops_the_idle_cluster(cluster, emulated_cluster):
    emu, port = emulated_cluster
    name = cluster.names[0]
    variables = {"autostop_project": "demo-project", "autostop_cluster": "idle",
                 "autostop_idle_seconds": 2, "autostop_check_seconds": 1,
                 "autostop_api": f"http://{cluster.pool.gateway}:{port}",
                 "autostop_use_metadata_token": False}
    plays = [{"name": "autostop", "hosts": name, "gather_facts": False, "become": True,
              "roles": [{"role": "autostop", "vars": variables}]}]
    first = ok(run_playbook(cluster.workdir / "autostop", plays, cluster.inventory([name])))
    assert first.total("changed") >= 3
    second = ok(run_playbook(cluster.workdir / "autostop", plays, cluster.inventory([name])))
    assert second.total("changed") == 0, second.stats
    status = json.loads(cluster.node(name).run("/usr/local/sbin/gcpgpu-autostop status").stdout)
    assert status["watching"]

    # Once the playbook's SSH connections have closed, nobody is on the node: it stops both VMs.
    deadline = time.monotonic() + 90
    while {i["status"] for i in emu.instances()} != {"TERMINATED"}:
        assert time.monotonic() < deadline, cluster.node(name).path("/var/log/gcpgpu/autostop.log").read_text()
        time.sleep(1)
    log = cluster.node(name).path("/var/log/gcpgpu/autostop.log").read_text()
    assert "stop idle-a-0000" in log and "stop idle-a-0001" in log
