"""Role checks that need no test node: the controller-side file_copy helper, and the three roles
through ansible-runner with a local connection on throwaway paths (never this machine's /etc)."""
from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
import sys
import tarfile
import time
import zipfile

from .conftest import REPO, ok, run_playbook

STAGE = REPO / "roles" / "file_copy" / "files" / "file_copy_stage.py"


def stage(*args: str, stdin: str | None = None) -> dict:
    r = subprocess.run([sys.executable, str(STAGE), *args], capture_output=True, text=True, input=stdin,
                       check=True)
    return json.loads(r.stdout)


def test_stage_manifest_bundle_extract_and_listing(tmp_path):
    src = tmp_path / "src"
    (src / "a" / "__pycache__").mkdir(parents=True)
    (src / ".git").mkdir()
    (src / "data").mkdir()
    (src / "a" / "x.py").write_text("x\n")
    (src / "a" / "x.pyc").write_text("c\n")
    (src / "a" / "__pycache__" / "x.pyc").write_text("c\n")
    (src / ".git" / "HEAD").write_text("h\n")
    (src / "data" / "keep.bin").write_text("k\n")
    (src / "data" / "drop.tmp").write_text("d\n")
    (src / "top.tmp").write_text("t\n")  # "data/*.tmp" is anchored: this one stays
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o750)
    m = stage("manifest", str(src), "--exclude=.git", "--exclude=__pycache__", "--exclude=*.pyc",
              "--exclude=data/*.tmp", "--checksum")
    files = {f["path"]: f for f in m["files"]}
    assert sorted(files) == ["a/x.py", "data/keep.bin", "run.sh", "top.tmp"]
    assert files["run.sh"]["mode"] == "0750"
    assert len(files["a/x.py"]["checksum"]) == 40
    out = stage("bundle", str(src), f"--dir={tmp_path}", stdin=json.dumps(["a/x.py", "run.sh"]))
    with zipfile.ZipFile(out["bundle"]) as bundle, bundle.open("payload.tar") as payload, \
            tarfile.open(fileobj=payload, mode="r|") as tar:
        members = {t.name: (t.mode, t.isdir()) for t in tar}
    assert members == {"a": (0o755, True), "a/x.py": (0o644, False), "run.sh": (0o750, False)}

    # The node side: the bundle unpacks itself (a runnable zip), then the listing matches the
    # manifest's keys plus owner and group, so a second comparison finds nothing to send.
    dest = tmp_path / "deep" / "dest"
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    r = subprocess.run([sys.executable, out["bundle"], "extract", f"--dest={dest}", f"--owner={user}",
                        "--mode=0750"], capture_output=True, text=True, check=True)
    assert json.loads(r.stdout) == {"changed": True, "files": 2}
    assert (dest / "run.sh").stat().st_mode & 0o777 == 0o750
    assert (dest / "a" / "x.py").stat().st_mtime == int((src / "a" / "x.py").stat().st_mtime)
    assert (dest.stat().st_mode & 0o777, dest.parent.stat().st_mode & 0o777) == (0o750, 0o750)
    listing = stage("listing", str(dest), f"--owner={user}")
    assert listing["group"] == group
    want = {k + f"|{user}|{group}" for k in stage("manifest", str(src), "--exclude=*.tmp", "--exclude=.git",
                                                   "--exclude=__pycache__", "--exclude=*.pyc",
                                                   "--exclude=data")["keys"]}
    assert want == set(listing["keys"])
    (dest / "run.sh").chmod(0o700)  # drift: the key changes
    assert want - set(stage("listing", str(dest), f"--owner={user}")["keys"]) == {
        next(k for k in want if k.startswith("run.sh|"))}
    # A destination that is a file is refused.
    r = subprocess.run([sys.executable, str(STAGE), "listing", str(dest / "run.sh"), f"--owner={user}"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "is not a directory" in r.stderr


def local_inventory() -> dict:
    return {"all": {"hosts": {"localhost": {"ansible_connection": "local",
                                            "ansible_python_interpreter": sys.executable}}}}


def test_roles_idempotent_with_local_connection(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_text("one\n")
    (src / "x.pyc").write_text("no\n")
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    (tmp_path / "bin").mkdir()
    plays = [{"hosts": "all", "gather_facts": False, "roles": [
        {"role": "common", "vars": {"common_hosts_file": str(tmp_path / "hosts"),
                                    "common_facts_dir": str(tmp_path / "facts.d"),
                                    "common_hosts": [{"name": "n1", "ip": "10.0.0.2"},
                                                     {"name": "n0", "ip": "10.0.0.1"}],
                                    "common_facts": {"cluster": "c"}}},
        {"role": "file_copy", "vars": {"file_copy_src": str(src), "file_copy_dest": str(tmp_path / "dst")}},
        {"role": "startup_command", "vars": {
            "startup_command": "echo local-run",
            "startup_command_runner": str(tmp_path / "bin" / "gcpgpu-startup"),
            "startup_command_state_dir": str(tmp_path / "state"),
            "startup_command_log": str(tmp_path / "log" / "startup.log"),
            "startup_command_boot_hook": str(tmp_path / "rc.local")}},
    ]}]
    first = ok(run_playbook(tmp_path / "w", plays, local_inventory()))
    assert first.total("changed") > 0
    second = ok(run_playbook(tmp_path / "w", plays, local_inventory()))
    assert second.total("changed") == 0, second.stats
    hosts = (tmp_path / "hosts").read_text()
    assert hosts.startswith("127.0.0.1 localhost\n")
    assert "10.0.0.1\tn0\n10.0.0.2\tn1\n" in hosts
    assert json.loads((tmp_path / "facts.d" / "gcpgpu.fact").read_text()) == {"cluster": "c"}
    assert (tmp_path / "dst" / "sub" / "f.txt").read_text() == "one\n"
    assert not (tmp_path / "dst" / "x.pyc").exists()
    deadline = time.monotonic() + 10
    log = tmp_path / "log" / "startup.log"
    while not (log.exists() and "exited with status 0" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert log.read_text().count("local-run") == 1


def test_common_check_diff_shows_both_files_and_changes_nothing(tmp_path):
    """`configure --check --diff`: the one helper call reports the hosts block and the facts line
    it would change, and writes neither."""
    hosts, facts = tmp_path / "hosts", tmp_path / "facts.d" / "gcpgpu.fact"
    hosts.write_text("127.0.0.1 localhost\n")

    def plays(nodes: list[dict], cluster: str) -> list[dict]:
        return [{"hosts": "all", "gather_facts": False, "roles": [{"role": "common", "vars": {
            "common_hosts_file": str(hosts), "common_facts_dir": str(facts.parent),
            "common_hosts": nodes, "common_facts": {"cluster": cluster}}}]}]

    ok(run_playbook(tmp_path / "w", plays([{"name": "n0", "ip": "10.0.0.1"}], "c"), local_inventory()))
    before = (hosts.read_text(), facts.read_text())
    changed = plays([{"name": "n0", "ip": "10.0.0.1"}, {"name": "n1", "ip": "10.0.0.2"}], "c2")
    check = ok(run_playbook(tmp_path / "w", changed, local_inventory(), check=True, diff=True))
    assert check.total("changed") == 1, check.stats
    [shown] = [e["event_data"]["res"]["msg"] for e in check.events if e.get("event") == "runner_on_ok"
               and e["event_data"].get("task") == "Show the changes (--diff)"]
    assert "+10.0.0.2\tn1\n" in shown and '+{"cluster": "c2"}\n' in shown, shown
    assert (hosts.read_text(), facts.read_text()) == before
