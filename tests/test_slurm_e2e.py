"""Slurm on real test nodes through the static provider (machines gcpgpu did not create).

Four nodes are made directly with NodePool (no emulator): a controller and three compute nodes
with two fake GPUs each. `gcpgpu up` configures them from cluster.yaml (static hosts, own login
user and key, Slurm orchestrator); jobs then run through srun on the controller; a count change
followed by `gcpgpu configure` adds a node to slurm.conf and the cluster keeps working.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gcpgpu.cli import cli
from gcpgpu.configure import run_playbook
from gcpgpu.emulator import Emulator
from gcpgpu.emulator.nodes import NodePool, nodes_supported
from gcpgpu.engine import open_cluster
from gcpgpu.inventory import cluster_inventory
from gcpgpu.plugins import Plugins

USER = "alice"  # not the cluster's default user: static hosts log in as their own user
GPU_PREFIX = "/var/lib/gcpgpu-test/gpu/nvidia"
GPUS = 2
CONTROLLER = "sl-ctl"
WORKERS = ["sl-n0", "sl-n1", "sl-n2"]
_SLOT = os.getpid() % 250


def prepare_like_a_real_machine(node, gpus: int) -> None:
    """What a real GPU machine has and a test node lacks (test setup, not gcpgpu's job):
    - a cgroup filesystem: slurmd 22.05 probes /sys/fs/cgroup at start even with
      proctrack/linuxproc; a private named v1 hierarchy satisfies it without touching the host's;
    - GPU device files: character devices of the NVIDIA major (195); slurmd's gres/gpu stats
      them. Kept under the node's own root (its /dev is the host's)."""
    script = ("mount -t tmpfs cgroup /sys/fs/cgroup && mkdir /sys/fs/cgroup/systemd && "
              "mount -t cgroup -o none,name=gcpgpu-test cgroup /sys/fs/cgroup/systemd && "
              f"mkdir -p {os.path.dirname(GPU_PREFIX)}")
    for index in range(gpus):
        script += f" && mknod {GPU_PREFIX}{index} c 195 {index}"
    result = node.run(script)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def emu():
    """Only `down` calls an API (its sweep of every provider for the cluster's label)."""
    with Emulator(latency=0.05) as emulator:
        yield emulator


@pytest.fixture
def nodes(tmp_path, monkeypatch, emu):
    ok, reason = nodes_supported()
    if not ok:
        pytest.skip(f"test nodes unavailable: {reason}")
    if not Path("/usr/sbin/slurmctld").exists() or not Path("/usr/sbin/munged").exists():
        pytest.skip("slurm-wlm and munge are not installed here (apt-get install slurm-wlm munge)")
    monkeypatch.setenv("ANSIBLE_LOCAL_TEMP", str(tmp_path / "ansible-tmp"))
    monkeypatch.setenv("GCPGPU_ENDPOINT", emu.url)
    key = tmp_path / "alice_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    metadata = {"items": [{"key": "ssh-keys", "value": f"{USER}:{key.with_suffix('.pub').read_text()}"}]}
    pool = NodePool(tmp_path / "nodes", bridge=f"gcpgpu-sl{_SLOT}", subnet=f"10.206.{_SLOT}")
    try:
        ips = {name: pool.acquire(name, {"metadata": metadata}) for name in [CONTROLLER, *WORKERS]}
        for name in WORKERS:
            prepare_like_a_real_machine(pool.node(name), GPUS)
        yield pool, ips, key
    finally:
        pool.close()


def write_spec(path: Path, ips: dict, key: Path, workers: int, max_time: str = "") -> Path:
    hosts = "\n".join(f"      - {{address: {ips[n]}, name: {n}, gpus: {GPUS}}}" for n in WORKERS)
    path.write_text(f"""name: slurmtest
project: local-only
node_groups:
  head:
    provider: static
    hosts: [{{address: {ips[CONTROLLER]}, name: {CONTROLLER}}}]
    ssh_user: {USER}
    ssh_private_key: {key.name}
  workers:
    provider: static
    count: {workers}
    hosts:
{hosts}
    ssh_user: {USER}
    ssh_private_key: {key.name}
orchestrator:
  type: slurm
  controller_group: head
  gpu_device_prefix: {GPU_PREFIX}
""" + (f"  partitions: {{workers: {{groups: [workers], options: {{MaxTime: '{max_time}'}}}}}}\n" if max_time else "")
    + """ssh: {timeout_s: 30}
""")
    return path


def gcpgpu(*args, expect=0):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def on_controller(pool, command: str, timeout: int = 30) -> str:
    result = pool.node(CONTROLLER).run(f"timeout {timeout} {command}", timeout=timeout + 10)
    assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    return result.stdout


def wait_idle(pool, count: int) -> None:
    """slurmd registers a moment after it starts: wait (bounded) until `count` nodes are idle."""
    deadline = time.monotonic() + 60
    while True:
        states = on_controller(pool, "sinfo -h -N -o '%N %t'").split("\n")
        idle = [line.split()[0] for line in states if line.endswith(" idle")]
        if len(idle) == count:
            return
        assert time.monotonic() < deadline, f"nodes not idle: {states}"
        time.sleep(0.5)


def test_slurm_on_static_hosts_runs_jobs_and_follows_a_count_change(nodes, emu, tmp_path):
    pool, ips, key = nodes
    spec = write_spec(tmp_path / "cluster.yaml", ips, key, workers=2)

    up = gcpgpu("up", str(spec))
    assert "sl-n2" not in up.output.split("configuration")[-1]
    assert emu.count() == 0  # static hosts: no cloud call at all
    wait_idle(pool, 2)
    assert sorted(on_controller(pool, "srun -N2 hostname").split()) == ["sl-n0", "sl-n1"]
    env = on_controller(pool, "srun --gres=gpu:2 env")
    assert "CUDA_VISIBLE_DEVICES=0,1" in env.splitlines(), env
    one = on_controller(pool, "srun -N2 --gres=gpu:1 sh -c 'echo $CUDA_VISIBLE_DEVICES'")
    assert one.split() == ["0", "0"]
    # A job asking for more GPUs than a node has is refused, so GRES is really enforced.
    refused = pool.node(CONTROLLER).run("timeout 20 srun --gres=gpu:3 true")
    assert refused.returncode != 0 and "Requested node configuration is not available" in refused.stderr

    # The rendered configuration: identical on every node, facts and GPUs from the inventory.
    conf = pool.node(CONTROLLER).path("/etc/slurm/slurm.conf").read_text()
    assert f"SlurmctldHost={CONTROLLER}({ips[CONTROLLER]})" in conf
    assert f"NodeName=sl-n0 NodeAddr={ips['sl-n0']} CPUs={os.cpu_count()}" in conf
    assert "Gres=gpu:2" in conf and "PartitionName=workers Nodes=sl-n0,sl-n1 Default=YES" in conf
    assert all(pool.node(n).path("/etc/slurm/slurm.conf").read_text() == conf for n in WORKERS[:2])
    gres = pool.node("sl-n0").path("/etc/slurm/gres.conf").read_text()
    assert f"NodeName=sl-n0 Name=gpu File={GPU_PREFIX}[0-1]" in gres
    munge_key = pool.node("sl-n1").path("/etc/munge/munge.key")
    assert munge_key.stat().st_mode & 0o777 == 0o400
    assert munge_key.read_bytes() == pool.node(CONTROLLER).path("/etc/munge/munge.key").read_bytes()

    # A settings change is pushed with `scontrol reconfigure`: slurmctld keeps running, and
    # nothing but slurm.conf changes on any host (the rest of the run is idempotent).
    controller_pid = pool.node(CONTROLLER).path("/run/slurmctld.pid").read_text()
    write_spec(spec, ips, key, workers=2, max_time="01:00:00")
    cluster = open_cluster(str(spec), Plugins(), emu.url)
    events: list[dict] = []
    result = run_playbook(cluster, cluster_inventory(cluster), event_handler=events.append)
    assert result.status == "successful" and not result.failed_hosts, result.failures
    changed = [(e["event_data"]["host"], e["event_data"]["task"]) for e in events
               if e.get("event") == "runner_on_ok" and e["event_data"].get("res", {}).get("changed")]
    assert sorted(task for _, task in changed) == ["Reconfigure Slurm"] + [
        "Render slurm.conf and gres.conf from the inventory"] * 3, changed
    assert "MaxTime=01:00:00" in on_controller(pool, "scontrol show partition workers")
    assert pool.node(CONTROLLER).path("/run/slurmctld.pid").read_text() == controller_pid

    # One more worker: configure renders it into slurm.conf everywhere and restarts the daemons
    # (Slurm 22.05 adds nodes only on a restart).
    write_spec(spec, ips, key, workers=3)
    gcpgpu("configure", str(spec))
    conf = pool.node(CONTROLLER).path("/etc/slurm/slurm.conf").read_text()
    assert "PartitionName=workers Nodes=sl-n0,sl-n1,sl-n2 Default=YES" in conf
    wait_idle(pool, 3)
    assert sorted(on_controller(pool, "srun -N3 hostname").split()) == WORKERS
    env = on_controller(pool, "srun -w sl-n2 --gres=gpu:2 env")
    assert "CUDA_VISIBLE_DEVICES=0,1" in env.splitlines()

    status = gcpgpu("status", str(spec), "--json").output
    assert all(name in status for name in [CONTROLLER, *WORKERS])
    # down deletes nothing of machines gcpgpu did not create, and says so; Slurm keeps running.
    down = gcpgpu("down", str(spec))
    assert "deleted 0 resource(s)" in down.output and "left alone: 4 existing host(s)" in down.output
    assert on_controller(pool, "srun -N1 hostname").strip() in WORKERS
