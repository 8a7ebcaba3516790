"""common, file_copy and startup_command on two real test nodes, through ansible-runner."""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from .conftest import USER, node_json, ok, read_node, run_playbook


def play(*roles: dict | str) -> list[dict]:
    return [{"name": "configure", "hosts": "all", "gather_facts": False, "become": True, "roles": list(roles)}]


# ---------------------------------------------------------------------------------------- common

def test_common_hosts_block_and_facts_idempotent(cluster):
    names = cluster.names
    # /etc/hosts is a bind mount in many containers: make it one on the second node.
    n1 = cluster.node(names[1])
    r = n1.run("cp /etc/hosts /run/hosts.bind && mount --bind /run/hosts.bind /etc/hosts && grep -c hosts.bind /proc/self/mountinfo")
    assert r.returncode == 0 and r.stdout.strip() != "0", r.stderr
    hostvars = {n: {"common_facts": {"cluster": "c1", "group": "workers", "node": n, "zone": "us-central1-a",
                                     "machine_type": "a2-highgpu-2g"}} for n in names}
    inv = cluster.inventory(**hostvars)
    extravars = {"common_hosts": cluster.hosts_list()}
    first = ok(run_playbook(cluster.workdir / "common", play("common"), inv, extravars=extravars))
    assert first.per_host("changed") == {n: 1 for n in names}, first.stats  # one task keeps both files
    second = ok(run_playbook(cluster.workdir / "common", play("common"), inv, extravars=extravars))
    assert second.total("changed") == 0, second.stats
    for name in names:
        hosts = read_node(cluster, name, "/etc/hosts")
        block = re.search(r"# BEGIN gcpgpu cluster hosts.*?\n(.*?)# END gcpgpu cluster hosts", hosts, re.S)
        assert block, hosts
        lines = [line.split() for line in block.group(1).splitlines()]
        assert lines == [[cluster.ips[n], n] for n in sorted(names)]
        assert "localhost" in hosts  # the rest of the file is kept
        facts = node_json(cluster, name, "/etc/ansible/facts.d/gcpgpu.fact")
        assert facts == hostvars[name]["common_facts"]
    # The write went through the bind mount (in place), not to a replaced file.
    assert cluster.ips[names[0]] in n1.path("/run/hosts.bind").read_text()
    # Facts are readable back as ansible_local.gcpgpu.
    fact_play = [{"hosts": "all", "gather_facts": False, "become": True, "tasks": [
        {"ansible.builtin.setup": {"gather_subset": ["!all", "!min", "local"]}},
        {"ansible.builtin.assert": {"that": ["ansible_local.gcpgpu.node == inventory_hostname"]}}]}]
    ok(run_playbook(cluster.workdir / "common", fact_play, inv))


# ------------------------------------------------------------------------------------- file_copy

def make_tree(root: Path) -> None:
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / ".git" / "objects").mkdir(parents=True)
    (root / "data" / "deep" / "er").mkdir(parents=True)
    (root / "train.py").write_text("print('train')\n")
    (root / "run.sh").write_text("#!/bin/sh\necho run\n")
    (root / "run.sh").chmod(0o755)
    (root / "secret.env").write_text("TOKEN=x\n")
    (root / "secret.env").chmod(0o600)
    (root / ".hidden").write_text("dotfile\n")
    (root / "pkg" / "mod.py").write_text("X = 1\n")
    (root / "pkg" / "mod.pyc").write_bytes(b"\0pyc")
    (root / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0pyc")
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / ".git" / "objects" / "ab").write_text("obj\n")
    (root / "data" / "deep" / "er" / "blob.bin").write_bytes(os.urandom(100_000))
    (root / "data" / "deep" / "er").chmod(0o750)
    (root / "data" / "skip.tmp").write_text("excluded by a path pattern\n")


FILE_COPY_EXCLUDES = [".git", "__pycache__", "*.pyc", "data/*.tmp"]


def test_file_copy_excludes_modes_idempotent_and_check_diff(cluster, tmp_path):
    src = tmp_path / "src"
    make_tree(src)
    dest = "/home/gcpgpu/work"
    inv = cluster.inventory()
    roles = play({"role": "file_copy", "vars": {"file_copy_src": str(src), "file_copy_dest": dest,
                                                "file_copy_excludes": FILE_COPY_EXCLUDES}})
    wd = cluster.workdir / "file_copy"
    first = ok(run_playbook(wd, roles, inv))
    assert all(v > 0 for v in first.per_host("changed").values()), first.stats
    second = ok(run_playbook(wd, roles, inv))
    assert second.total("changed") == 0, second.stats

    expected = {"train.py": 0o644, "run.sh": 0o755, "secret.env": 0o600, ".hidden": 0o644,
                "pkg/mod.py": 0o644, "data/deep/er/blob.bin": 0o644}
    for name in cluster.names:
        node = cluster.node(name)
        got = node.run(["find", dest, "-mindepth", "1", "-type", "f", "-printf", "%P %m %u %g\n"], check=True)
        files = {line.split()[0]: line.split()[1:] for line in got.stdout.splitlines()}
        assert set(files) == set(expected), files  # .git, __pycache__, *.pyc, data/*.tmp left out
        for rel, mode in expected.items():
            assert files[rel] == [format(mode, "o"), USER, USER], (rel, files[rel])
            assert node.path(f"{dest}/{rel}").read_bytes() == (src / rel).read_bytes()
        dirmode = node.run(["stat", "-c", "%a %U", f"{dest}/data/deep/er", dest], check=True).stdout.split("\n")
        assert dirmode[0] == f"750 {USER}" and dirmode[1] == f"755 {USER}", dirmode

    # A changed local file: --check --diff shows the diff and changes nothing.
    (src / "train.py").write_text("print('train')\nprint('epoch 2')\n")
    check = ok(run_playbook(wd, roles, inv, check=True, diff=True))
    assert check.per_host("changed") == {n: 1 for n in cluster.names}, check.stats
    assert "+print('epoch 2')" in check.stdout, check.stdout[-3000:]
    for name in cluster.names:
        assert read_node(cluster, name, f"{dest}/train.py") == "print('train')\n"

    # A mode change alone is also synced; then a real run applies both, and a third is quiet.
    (src / "secret.env").chmod(0o640)
    third = ok(run_playbook(wd, roles, inv))
    assert all(v > 0 for v in third.per_host("changed").values()), third.stats
    for name in cluster.names:
        assert read_node(cluster, name, f"{dest}/train.py").endswith("epoch 2')\n")
        assert cluster.node(name).run(["stat", "-c", "%a", f"{dest}/secret.env"]).stdout.strip() == "640"
    assert ok(run_playbook(wd, roles, inv)).total("changed") == 0

    # Drift on a node (someone edited a copied file) is repaired on that node only.
    cluster.node(cluster.names[1]).path(f"{dest}/pkg/mod.py").write_text("X = 2  # edited on the node\n")
    repair = ok(run_playbook(wd, roles, inv))
    assert repair.per_host("changed").get(cluster.names[0], 0) == 0, repair.stats
    assert repair.per_host("changed")[cluster.names[1]] > 0, repair.stats
    assert read_node(cluster, cluster.names[1], f"{dest}/pkg/mod.py") == "X = 1\n"


# ------------------------------------------------------------------------------- startup_command

LOG = "/var/log/gcpgpu/startup.log"


def wait_for_log(cluster, name: str, needle: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while True:
        path = cluster.node(name).path(LOG)
        text = path.read_text() if path.exists() else ""
        if needle in text:
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} not in {name}:{LOG} after {timeout}s:\n{text}")
        time.sleep(0.1)


def status(cluster, name: str) -> dict:
    r = cluster.node(name).run(["/usr/local/sbin/gcpgpu-startup", "status"], check=True)
    return json.loads(r.stdout)


def test_startup_command_runs_once_and_again_when_changed(cluster):
    inv = cluster.inventory()
    wd = cluster.workdir / "startup"
    cmd1 = 'echo "hello v1 from $(id -un) in $PWD ${GREETING}"'
    roles = play({"role": "startup_command", "vars": {"startup_command": cmd1,
                                                      "startup_command_environment": {"GREETING": "hi there"}}})
    first = ok(run_playbook(wd, roles, inv))
    assert all(v > 0 for v in first.per_host("changed").values()), first.stats
    for name in cluster.names:
        text = wait_for_log(cluster, name, "command exited with status 0")
        assert f"hello v1 from {USER} in /home/{USER} hi there" in text, text
        hook = read_node(cluster, name, "/etc/rc.local")
        assert hook.startswith("#!/bin/sh") and "/usr/local/sbin/gcpgpu-startup start" in hook

    second = ok(run_playbook(wd, roles, inv))
    assert second.total("changed") == 0, second.stats
    time.sleep(0.5)
    for name in cluster.names:
        assert read_node(cluster, name, LOG).count("hello v1") == 1

    cmd2 = "echo hello v2; sleep 0.2; echo done v2"
    roles2 = play({"role": "startup_command", "vars": {"startup_command": cmd2}})
    third = ok(run_playbook(wd, roles2, inv))
    assert all(v > 0 for v in third.per_host("changed").values()), third.stats
    for name in cluster.names:
        text = wait_for_log(cluster, name, "done v2")
        assert text.count("hello v1") == 1 and text.count("hello v2") == 1
    assert ok(run_playbook(wd, roles2, inv)).total("changed") == 0

    # A boot runs it again: what the rc.local hook does at boot (same boot id here, so call it).
    name = cluster.names[0]
    r = cluster.node(name).run(["/bin/sh", "-c", "sh /etc/rc.local"])
    assert r.returncode == 0, r.stderr
    text = wait_for_log(cluster, name, "done v2\n[", timeout=15)
    deadline = time.monotonic() + 10
    while read_node(cluster, name, LOG).count("done v2") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert read_node(cluster, name, LOG).count("done v2") == 2


def test_startup_command_supervised_restart_after_death(cluster):
    """restart=always: a dead supervisor is started again by the next configure."""
    inv = cluster.inventory()
    wd = cluster.workdir / "startup-always"
    roles = play({"role": "startup_command", "vars": {
        "startup_command": "echo serving; exec sleep 1000", "startup_command_restart": "always"}})
    ok(run_playbook(wd, roles, inv))
    name = cluster.names[1]
    wait_for_log(cluster, name, "serving")
    st = status(cluster, name)
    assert st["running"] is True and st["due"] is False, st
    assert ok(run_playbook(wd, roles, inv)).total("changed") == 0
    # Kill the whole supervised group (what an OOM kill or a crash would leave).
    cluster.node(name).run(["/bin/sh", "-c", f"kill -KILL -{st['pid']}"], check=True)
    deadline = time.monotonic() + 5
    while status(cluster, name)["running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status(cluster, name)["due"] is True
    again = ok(run_playbook(wd, roles, inv))
    assert again.per_host("changed").get(cluster.names[0], 0) == 0, again.stats
    assert again.per_host("changed")[name] == 1, again.stats
    assert status(cluster, name)["running"] is True
    # Leave nothing running for the next tests.
    for n in cluster.names:
        cluster.node(n).run(["/usr/local/sbin/gcpgpu-startup", "stop"], check=True)
        assert status(cluster, n)["running"] is False
