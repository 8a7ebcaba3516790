"""End to end on real test nodes: up -> configured nodes -> idempotent configure -> recreate
without host-key errors -> check/diff -> inventory through Ansible itself -> down leaves nothing."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from click.testing import CliRunner

from gcpgpu.cli import cli, configure_hosts
from gcpgpu.engine import open_cluster
from gcpgpu.plugins import Plugins

REPO = Path(__file__).resolve().parents[1]




def make_cluster_files(tmp_path: Path) -> Path:
    files = tmp_path / "code"
    (files / "pkg").mkdir(parents=True)
    (files / "train.py").write_text("print('train')\n")
    (files / "pkg" / "run.sh").write_text("#!/bin/sh\necho run\n")
    (files / "pkg" / "run.sh").chmod(0o755)
    (files / "skip.pyc").write_text("compiled")
    spec = tmp_path / "cluster.yaml"
    spec.write_text("""name: e2e
project: demo-project
zone: us-central1-a
node_groups:
  head: {count: 1, machine_type: n1-standard-4}
  workers: {count: 2, machine_type: g2-standard-8}
files: {src: code, dest: /opt/code}
startup_command: echo "started on $(hostname)"
ssh: {timeout_s: 60}
""")
    return spec


def gcpgpu(*args, expect=0):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def configure(spec: Path, **options):
    cluster = open_cluster(str(spec), Plugins(), os.environ["GCPGPU_ENDPOINT"])
    return configure_hosts(cluster, cluster.hosts(), **options)


def test_up_configure_recreate_check_and_down(node_rig, tmp_path, monkeypatch):
    emu, pool = node_rig
    spec = make_cluster_files(tmp_path)
    gcpgpu("up", str(spec))
    names = ["e2e-head-0000", "e2e-workers-0000", "e2e-workers-0001"]
    for name in names:
        node = pool.node(name)
        assert node.path("/opt/code/train.py").read_text() == "print('train')\n"
        assert node.path("/opt/code/pkg/run.sh").stat().st_mode & 0o777 == 0o755
        assert not node.path("/opt/code/skip.pyc").exists()  # excluded by default
        hosts_file = node.path("/etc/hosts").read_text()
        assert all(other in hosts_file for other in names)
        fact = json.loads(node.path("/etc/ansible/facts.d/gcpgpu.fact").read_text())
        assert fact["cluster"] == "e2e" and fact["node"] == name
    deadline = time.monotonic() + 20
    log = pool.node(names[0]).path("/var/log/gcpgpu/startup.log")
    while "started on e2e-head-0000" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "startup command never wrote its log"
        time.sleep(0.2)

    # Second configure, within a minute: ssh's shared connections from the first are still up,
    # so the readiness check opens none of its own; nothing to change anywhere.
    import fabric

    handshakes = []
    real_connection = fabric.Connection
    with monkeypatch.context() as patched:
        patched.setattr(fabric, "Connection", lambda host, **kw: handshakes.append(host) or real_connection(host, **kw))
        second = configure(spec)
    assert handshakes == []
    assert set(second.ok) == set(names) and sum(second.changed.values()) == 0, second.changed

    # Check mode on a configured cluster: nothing would change.
    unchanged = configure(spec, check=True, diff=True)
    assert sum(unchanged.changed.values()) == 0, unchanged.changed

    # A VM deleted behind our back comes back as a new instance (new host key, same IP):
    # up recreates and configures it with no host-key complaint.
    old_ip = pool.node("e2e-workers-0001").ip
    from google.cloud import compute_v1
    from gcpgpu.clients import ClientFactory

    clients = ClientFactory(emu.url)
    operation = clients.get(compute_v1.InstancesClient).delete(
        project="demo-project", zone="us-central1-a", instance="e2e-workers-0001")
    clients.get(compute_v1.ZoneOperationsClient).wait(
        project="demo-project", zone="us-central1-a", operation=operation.name)
    gcpgpu("up", str(spec))
    assert pool.node("e2e-workers-0001").ip == old_ip
    assert pool.node("e2e-workers-0001").path("/opt/code/train.py").exists()

    # A local change: --check --diff shows it and changes nothing on the nodes.
    (tmp_path / "code" / "train.py").write_text("print('train v2')\n")
    checked = configure(spec, check=True, diff=True, tags="files")
    assert sum(checked.changed.values()) == 3
    assert pool.node(names[0]).path("/opt/code/train.py").read_text() == "print('train')\n"
    result = gcpgpu("configure", str(spec), "--limit", "workers", "--tags", "files")
    assert "e2e-head-0000" not in result.output.split("configuration")[-1]
    assert pool.node("e2e-workers-0000").path("/opt/code/train.py").read_text() == "print('train v2')\n"
    assert pool.node(names[0]).path("/opt/code/train.py").read_text() == "print('train')\n"

    # The same inventory through Ansible itself, and ad-hoc Ansible on the cluster.
    env = {**os.environ, "GCPGPU_CLUSTER": str(spec)}
    script = subprocess.run(["gcpgpu-inventory", "--list"], env=env, capture_output=True, text=True)
    listed = json.loads(script.stdout)
    assert listed["workers"]["hosts"] == ["e2e-workers-0000", "e2e-workers-0001"]
    assert listed["all_gpu"]["hosts"] == ["e2e-workers-0000", "e2e-workers-0001"]
    # The cluster can also come from a gcpgpu-inventory.yml next to the caller, no env var.
    (tmp_path / "gcpgpu-inventory.yml").write_text(f"cluster: {spec.name}\nendpoint: {emu.url}\n")
    plain_env = {k: v for k, v in os.environ.items() if k not in ("GCPGPU_CLUSTER", "GCPGPU_ENDPOINT")}
    one = subprocess.run(["gcpgpu-inventory", "--host", "e2e-head-0000"], env=plain_env, cwd=tmp_path,
                         capture_output=True, text=True)
    assert json.loads(one.stdout)["ansible_host"] == pool.node("e2e-head-0000").ip, one.stderr
    graph = subprocess.run(["ansible-inventory", "-i", shutil.which("gcpgpu-inventory"), "--graph"],
                           env=env, capture_output=True, text=True)
    assert "@workers:" in graph.stdout and "e2e-head-0000" in graph.stdout, graph.stderr
    gcpgpu("inventory", str(spec), "--write", str(tmp_path / "inv"))
    plugin_env = {**env, "ANSIBLE_INVENTORY_PLUGINS": str(REPO / "inventory"),
                  "ANSIBLE_INVENTORY_ENABLED": "gcpgpu"}
    ping = subprocess.run(["ansible", "-i", str(tmp_path / "inv" / "e2e.gcpgpu.yml"), "all",
                           "-m", "ansible.builtin.ping", "-o"], env=plugin_env,
                          capture_output=True, text=True, timeout=120)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert ping.stdout.count("SUCCESS") == 3

    # A shell command and the startup log over the cluster's SSH settings.
    shell = subprocess.run(["gcpgpu", "ssh", str(spec), "e2e-workers-0001", "hostname"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert shell.stdout.strip() == "e2e-workers-0001", shell.stderr
    include = gcpgpu("ssh-config", str(spec)).output.strip()
    assert include.startswith("Include ")
    via_config = subprocess.run(["ssh", "-F", include.split(" ", 1)[1], "-o", "BatchMode=yes",
                                 "e2e-head-0000", "hostname"], capture_output=True, text=True, timeout=60)
    assert via_config.stdout.strip() == "e2e-head-0000", via_config.stderr
    logs = subprocess.run(["gcpgpu", "logs", str(spec), names[0]], env=env, capture_output=True,
                          text=True, timeout=60)
    assert "started on e2e-head-0000" in logs.stdout, logs.stderr

    gcpgpu("down", str(spec))
    assert [i for i in emu.instances() if i.get("labels", {}).get("gcpgpu-cluster") == "e2e"] == []
    assert pool.nodes() == []



def test_a_failed_host_fails_the_command_and_the_others_stay_configured(node_rig, tmp_path):
    emu, pool = node_rig
    spec = make_cluster_files(tmp_path)
    spec.write_text(spec.read_text().replace("  head: {count: 1, machine_type: n1-standard-4}\n", ""))
    gcpgpu("up", str(spec), "--no-configure")
    # On one node the destination is a plain file: copying a directory there must fail.
    pool.node("e2e-workers-0001").run(["sh", "-c", "mkdir -p /opt && echo x > /opt/code"], check=True)
    result = gcpgpu("configure", str(spec), expect=1)
    summary = result.output.split("error:")[-1]
    assert "configuration failed on e2e-workers-0001" in summary and "e2e-workers-0000" not in summary
    assert "e2e-workers-0001:" in summary  # the failing host, its task and the message
    assert pool.node("e2e-workers-0000").path("/opt/code/train.py").exists()
    gcpgpu("down", str(spec))
