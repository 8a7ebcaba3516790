"""sync/fetch over the cluster's SSH settings, on real test nodes."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from gcpgpu.cli import cli

NAMES = ["sync-nodes-0000", "sync-nodes-0001"]


@pytest.fixture
def rig(node_rig, tmp_path):
    """Two running nodes of cluster `sync` and its spec (files: code -> /opt/code)."""
    spec = tmp_path / "cluster.yaml"
    spec.write_text("name: sync\nproject: demo-project\nzone: us-central1-a\n"
                    "node_groups:\n  nodes: {count: 2, machine_type: n1-standard-4}\n"
                    "files: {src: code, dest: /opt/code}\nssh: {timeout_s: 60}\n")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "train.py").write_text("v1\n")
    gcpgpu("up", str(spec), "--no-configure")
    return node_rig[1], spec


def gcpgpu(*args, expect=0):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result.output


def wait_for(predicate, what: str, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_sync_pushes_to_every_node_deletes_on_request_and_fetch_pulls_back(rig, tmp_path):
    pool, spec = rig
    code = tmp_path / "code"
    (code / "skip.pyc").write_text("compiled")
    gcpgpu("sync", str(spec))  # the spec's files.src -> files.dest, its default excludes
    for name in NAMES:
        assert pool.node(name).path("/opt/code/train.py").read_text() == "v1\n"
        assert not pool.node(name).path("/opt/code/skip.pyc").exists()

    (code / "train.py").unlink()
    (code / "eval.py").write_text("eval\n")
    gcpgpu("sync", str(spec))
    assert pool.node(NAMES[0]).path("/opt/code/train.py").exists()  # kept without --delete
    gcpgpu("sync", str(spec), str(code), "/opt/code", "--delete")
    assert not pool.node(NAMES[0]).path("/opt/code/train.py").exists()
    assert pool.node(NAMES[1]).path("/opt/code/eval.py").read_text() == "eval\n"

    pool.node(NAMES[1]).path("/opt/code/results").mkdir()
    pool.node(NAMES[1]).path("/opt/code/results/loss.csv").write_text("0.1\n")
    gcpgpu("fetch", str(spec), f"{NAMES[1]}:/opt/code/results/", str(tmp_path / "results"))
    assert (tmp_path / "results" / "loss.csv").read_text() == "0.1\n"
    assert "give NODE:PATH" in gcpgpu("fetch", str(spec), "no-colon", "x", expect=1)


def test_sync_watch_pushes_again_on_change(rig, tmp_path):
    pool, spec = rig
    watcher = subprocess.Popen(
        [sys.executable, "-c", "from gcpgpu.cli import main; main()", "sync", str(spec), "--watch"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=os.environ.copy())
    try:
        node_file = pool.node(NAMES[0]).path("/opt/code/train.py")
        wait_for(lambda: node_file.exists(), "first sync never happened")
        time.sleep(1)  # let the watcher start watching
        (tmp_path / "code" / "train.py").write_text("v2\n")
        wait_for(lambda: node_file.read_text() == "v2\n", "the change was not pushed")
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
