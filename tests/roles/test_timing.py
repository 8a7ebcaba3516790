"""Measure (print, do not assert) configure time: common + file_copy + startup_command,
1 node vs 8 nodes, first run vs second (no-change) run.  Run with -s to see the table."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import make_cluster, ok, run_playbook

FILES = int(os.environ.get("GCPGPU_TIMING_FILES", "400"))


def tree(root: Path) -> None:
    for i in range(FILES):
        d = root / f"d{i % 20:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:04d}.py").write_bytes(os.urandom(2048) if i % 10 == 0 else b"x = %d\n" % i * 200)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref\n")


def configure_plays(src: Path) -> list[dict]:
    return [{"hosts": "all", "gather_facts": False, "become": True, "roles": [
        "common",
        {"role": "file_copy", "vars": {"file_copy_src": str(src), "file_copy_dest": "/home/gcpgpu/work"}},
        {"role": "startup_command", "vars": {"startup_command": "echo started on $(hostname)"}},
    ]}]


@pytest.mark.parametrize("count", [1, 8])
def test_configure_timing(node_pool_roles, tmp_path, count, capsys):
    names = [f"tnode-{count}-{i}" for i in range(count)]
    cluster = make_cluster(node_pool_roles, tmp_path, names)
    try:
        src = tmp_path / "src"
        tree(src)
        hostvars = {n: {"common_facts": {"cluster": "timing", "node": n}} for n in names}
        inv = cluster.inventory(**hostvars)
        extravars = {"common_hosts": cluster.hosts_list()}
        first = ok(run_playbook(tmp_path / "w", configure_plays(src), inv, extravars=extravars))
        second = ok(run_playbook(tmp_path / "w", configure_plays(src), inv, extravars=extravars))
        assert second.total("changed") == 0, second.stats
        with capsys.disabled():
            print(f"\n[timing] {count} node(s), {FILES} files: first {first.seconds:.2f}s, "
                  f"second {second.seconds:.2f}s, second/first {second.seconds / first.seconds:.2f}")
    finally:
        for n in names:
            node_pool_roles.release(n)
