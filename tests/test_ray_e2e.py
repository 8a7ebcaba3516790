"""Ray end to end on real test nodes (slow: minutes; three Ray nodes share this machine).

`gcpgpu up` of a head + 2 workers with `orchestrator: {type: ray}` installs Ray offline from the
wheelhouse scripts/setup.sh downloads, starts the head and joins the workers; a job submitted
with `gcpgpu ray submit` runs a task on every node and gets their hostnames back; fake GPU
devices on one worker become Ray GPUs there; a second configure changes nothing and leaves the
running Ray processes alone; `down` leaves no Ray process. A one-node cluster with the dashboard
checks that it listens on the head's loopback only and is reached through `gcpgpu ray dashboard`.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from gcpgpu.cli import cli, configure_hosts
from gcpgpu.engine import open_cluster
from gcpgpu.plugins import Plugins
from gcpgpu_plugins import ray as ray_plugin

pytestmark = pytest.mark.slow

WHEELHOUSE = ray_plugin.default_wheelhouse(ray_plugin.RAY_VERSION, dashboard=False)
DASHBOARD_WHEELHOUSE = ray_plugin.default_wheelhouse(ray_plugin.RAY_VERSION, dashboard=True)
NAMES = ["rayc-head-0000", "rayc-workers-0000", "rayc-workers-0001"]
FAKE_GPUS = "/var/lib/fake-gpus"  # on the node's own root: /dev is the host's

JOB = r"""
import json, os, socket, sys
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ray.init(address="auto", logging_level="ERROR")

@ray.remote(num_cpus=0)
def hostname():
    return socket.gethostname()

@ray.remote(num_cpus=0, num_gpus=1)
def gpu_task():
    return socket.gethostname(), os.environ.get("CUDA_VISIBLE_DEVICES")

alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
pinned = [hostname.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote()
          for n in alive]
print(json.dumps({"argv": sys.argv[1:], "hostnames": sorted(ray.get(pinned)),
                  "gpu_task": ray.get(gpu_task.remote()), "gpus": ray.cluster_resources().get("GPU")}))
"""


@pytest.fixture
def rig(node_rig, monkeypatch):
    for wheelhouse in (WHEELHOUSE, DASHBOARD_WHEELHOUSE):
        if not ray_plugin.has_ray_wheel(wheelhouse, ray_plugin.RAY_VERSION):
            pytest.skip(f"no Ray wheelhouse at {wheelhouse}: run scripts/setup.sh (it downloads it)")
    monkeypatch.setattr(ray_plugin, "GPU_DEVICE_DIR", FAKE_GPUS)
    return node_rig

def write_spec(tmp_path: Path) -> Path:
    spec = tmp_path / "cluster.yaml"
    # Small Ray nodes: three of them share this machine's 2 cores with everything else.
    spec.write_text(f"""name: rayc
project: demo-project
zone: us-central1-a
node_groups:
  head: {{count: 1, machine_type: n1-standard-4}}
  workers: {{count: 2, machine_type: n1-standard-4}}
startup_command: echo "booted $(hostname)"
orchestrator:
  type: ray
  head_group: head
  wheelhouse: {WHEELHOUSE}
  dashboard: false
  num_cpus: 1
  object_store_memory: {ray_plugin.MIN_OBJECT_STORE}
ssh: {{timeout_s: 60}}
""")
    return spec


def gcpgpu(*args, expect=0):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def node_processes(node) -> dict[int, str]:
    """Host pid -> command line of every process in the node's PID namespace."""
    namespace = os.stat(f"/proc/{node.pid}/ns/pid").st_ino
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.stat(entry / "ns" / "pid").st_ino == namespace:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # exited meanwhile
    return found


def ray_processes(node) -> dict[int, str]:
    return {pid: cmd for pid, cmd in node_processes(node).items() if "ray" in cmd}


def alive_with(pid: int, cmdline: str) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() == cmdline
    except OSError:
        return False


def test_ray_cluster_up_job_on_every_node_idempotent_and_down(rig, tmp_path):
    emu, pool = rig
    spec = write_spec(tmp_path)
    gcpgpu("up", str(spec), "--no-configure")
    # Two fake GPUs on one worker (character devices, like the driver's), plus nvidiactl,
    # which is not a GPU.
    pool.node(NAMES[2]).run(f"mkdir -p {FAKE_GPUS} && cd {FAKE_GPUS} && mknod nvidia0 c 195 0 && "
                            "mknod nvidia1 c 195 1 && mknod nvidiactl c 195 255", check=True)

    up = gcpgpu("up", str(spec)).output
    assert f"ray status on {NAMES[0]}:" in up, up
    status_lines = up.split(f"ray status on {NAMES[0]}:")[1]
    assert status_lines.count(" node_") == 3, up
    assert "0.0/2.0 GPU" in status_lines and "0.0/3.0 CPU" in status_lines, up

    for name in NAMES:
        node = pool.node(name)
        assert any("raylet" in cmd for cmd in ray_processes(node).values()), name
        assert node.path("/opt/gcpgpu/ray/gcpgpu-installed").read_text() == f"ray=={ray_plugin.RAY_VERSION}"
        boot_hook = node.path("/etc/rc.local").read_text()
        # Ray and the user's startup command each have their own block in the boot hook.
        assert "/usr/local/sbin/gcpgpu-ray start" in boot_hook
        assert "/usr/local/sbin/gcpgpu-startup start" in boot_hook
    head_ray = ray_processes(pool.node(NAMES[0]))
    assert any("gcs_server" in cmd for cmd in head_ray.values())

    # A job on the head: one task pinned to each node, one task that needs a GPU.
    (tmp_path / "job.py").write_text(JOB)
    env = {**os.environ, "GCPGPU_ENDPOINT": emu.url}
    job = subprocess.run(["gcpgpu", "ray", "submit", str(spec), str(tmp_path / "job.py"), "--flag", "x y"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert job.returncode == 0, job.stdout + job.stderr
    result = json.loads(job.stdout.strip().splitlines()[-1])
    assert result["hostnames"] == NAMES
    assert result["argv"] == ["--flag", "x y"]
    assert result["gpus"] == 2.0 and result["gpu_task"][0] == NAMES[2]
    assert result["gpu_task"][1] in ("0", "1")

    # Nothing to change: changed=0 everywhere and the running Ray processes are left alone.
    before = {name: ray_processes(pool.node(name)) for name in NAMES}
    cluster = open_cluster(str(spec), Plugins(), emu.url)
    again = configure_hosts(cluster, cluster.hosts())
    assert set(again.ok) == set(NAMES) and sum(again.changed.values()) == 0, again.changed
    raylets = {pid: cmd for name in NAMES for pid, cmd in before[name].items() if "raylet" in cmd}
    assert len(raylets) == 3 and all(alive_with(pid, cmd) for pid, cmd in raylets.items())

    status = subprocess.run(["gcpgpu", "ray", "status", str(spec)], env=env, capture_output=True,
                            text=True, timeout=120)
    assert status.returncode == 0 and status.stdout.count(" node_") == 3, status.stdout + status.stderr

    everything = {pid: cmd for name in NAMES for pid, cmd in ray_processes(pool.node(name)).items()}
    gcpgpu("down", str(spec))
    assert pool.nodes() == []
    assert [cmd for pid, cmd in everything.items() if alive_with(pid, cmd)] == []


def listening(node, port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp) the node listens on at ``port``."""
    table = node.run(["cat", "/proc/net/tcp"], check=True).stdout.splitlines()[1:]
    fields = [line.split() for line in table]
    return [f[1].split(":")[0] for f in fields if f[3] == "0A" and int(f[1].split(":")[1], 16) == port]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_dashboard_only_on_the_head_loopback_reached_through_the_tunnel(rig, tmp_path):
    emu, pool = rig
    spec = tmp_path / "cluster.yaml"
    spec.write_text(f"""name: rayd
project: demo-project
zone: us-central1-a
node_groups:
  head: {{count: 1, machine_type: n1-standard-4}}
orchestrator: {{type: ray, head_group: head, wheelhouse: {DASHBOARD_WHEELHOUSE}, num_cpus: 1,
                object_store_memory: {ray_plugin.MIN_OBJECT_STORE}}}
ssh: {{timeout_s: 60}}
""")
    up = gcpgpu("up", str(spec)).output
    assert "Ray dashboard: bound to 127.0.0.1 on rayd-head-0000" in up, up
    tunnel_line = next(line for line in up.splitlines() if "-N -L 8265:127.0.0.1:8265" in line)
    head = pool.node("rayd-head-0000")
    assert tunnel_line.strip().endswith(f"gcpgpu@{head.ip}")
    assert head.path("/opt/gcpgpu/ray/gcpgpu-installed").read_text() == f"ray[default]=={ray_plugin.RAY_VERSION}"

    # The dashboard listens on the head's loopback only: from outside the node, nothing answers.
    assert listening(head, 8265) == ["0100007F"]
    with pytest.raises(OSError):
        socket.create_connection((head.ip, 8265), timeout=5).close()

    port = free_port()
    env = {**os.environ, "GCPGPU_ENDPOINT": emu.url}
    tunnel = subprocess.Popen(["gcpgpu", "ray", "dashboard", str(spec), "--local-port", str(port)], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=10) as answer:
                    version = json.load(answer)
                break
            except OSError:
                assert tunnel.poll() is None, tunnel.stderr.read()
                assert time.monotonic() < deadline, "the dashboard never answered through the tunnel"
                time.sleep(1)
        assert version["ray_version"] == ray_plugin.RAY_VERSION
    finally:
        tunnel.terminate()
        tunnel.wait(timeout=30)

    everything = ray_processes(head)
    assert any("dashboard" in cmd for cmd in everything.values())
    gcpgpu("down", str(spec))
    assert [cmd for pid, cmd in everything.items() if alive_with(pid, cmd)] == []
