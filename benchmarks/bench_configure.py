"""`gcpgpu configure` of 1 vs 8 real test nodes, first run vs second (no-change) run.

Targets: 8 nodes take at most 2.0x the time of 1 node on a 2-core machine; a second run takes at
most 0.6 of the first. Both sizes run in this one process, back to back. Needs root (test nodes).
Where cgroup v1 `cpuacct` is writable, it also reports the CPU seconds each run used, split into
the controller (this process, ansible-playbook, ssh clients) and the nodes (their sshd, sudo and
module runs): the nodes share this machine's cores, so CPU is what the wall time is made of.
Usage: python benchmarks/bench_configure.py [--sizes 1,8]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from click.testing import CliRunner

from gcpgpu.cli import cli, configure_hosts
from gcpgpu.emulator import Emulator
from gcpgpu.emulator.nodes import NodePool, nodes_supported
from gcpgpu.engine import open_cluster
from gcpgpu.plugins import Plugins

CPUACCT = Path("/sys/fs/cgroup/cpuacct")


class CpuMeter:
    """CPU seconds of the controller and of the nodes, from two cpuacct cgroups (None if absent)."""

    def __init__(self) -> None:
        self.groups = {}
        if not os.access(CPUACCT, os.W_OK):
            return
        for side in ("controller", "nodes"):
            group = CPUACCT / f"gcpgpu-bench-{os.getpid()}-{side}"
            group.mkdir(exist_ok=True)
            self.groups[side] = group
        (self.groups["controller"] / "cgroup.procs").write_text(str(os.getpid()))

    def adopt_nodes(self, pool: NodePool) -> None:
        """Node inits (sshd) join the nodes group; their later sessions inherit it."""
        if self.groups:
            for node in pool.nodes():
                (self.groups["nodes"] / "cgroup.procs").write_text(str(node.pid))

    def read(self) -> dict[str, float]:
        return {side: int((g / "cpuacct.usage").read_text()) / 1e9 for side, g in self.groups.items()}

    def close(self) -> None:
        for group in self.groups.values():
            parent = CPUACCT / "cgroup.procs"
            for pid in (group / "cgroup.procs").read_text().split():
                try:
                    parent.write_text(pid)
                except OSError:
                    pass  # exited meanwhile
            try:
                group.rmdir()
            except OSError:
                pass


def write_cluster(tmp: Path, count: int) -> Path:
    code = tmp / "code"
    for i in range(40):  # a small project: 40 files in 4 directories
        path = code / f"pkg{i % 4}" / f"module{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"VALUE = {i}\n" * 50)
    spec = tmp / f"bench{count}.yaml"
    spec.write_text(f"name: bench{count}\nproject: bench\nzone: us-central1-a\n"
                    f"node_groups:\n  gpu: {{count: {count}, machine_type: g2-standard-8}}\n"
                    f"files: {{src: code, dest: /opt/code}}\nstartup_command: echo ready\n")
    return spec


def timed_configure(spec: Path, endpoint: str, meter: CpuMeter) -> tuple[float, dict[str, float]]:
    cluster = open_cluster(str(spec), Plugins(), endpoint)
    hosts = cluster.hosts()
    before = meter.read()
    start = time.perf_counter()
    configure_hosts(cluster, hosts)
    elapsed = time.perf_counter() - start
    return elapsed, {side: used - before[side] for side, used in meter.read().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,8", help="node counts, comma-separated (default 1,8)")
    sizes = [int(s) for s in parser.parse_args().sizes.split(",")]
    ok, reason = nodes_supported()
    if not ok:
        raise SystemExit(f"test nodes unavailable: {reason}")
    meter = CpuMeter()
    rows = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            os.environ.update(GCPGPU_STATE_DIR=str(tmp / "state"), GCPGPU_KEYS_DIR=str(tmp / "keys"),
                              ANSIBLE_LOCAL_TEMP=str(tmp / "ansible"))
            with NodePool(tmp / "nodes", bridge="gcpgpu-bench", subnet="10.202.0") as pool, \
                    Emulator(latency=0.05) as emu:
                emu.bind_nodes(pool)
                for count in sizes:
                    spec = write_cluster(tmp, count)
                    result = CliRunner().invoke(cli, ["--endpoint", emu.url, "up", str(spec), "--no-configure"])
                    assert result.exit_code == 0, result.output
                    meter.adopt_nodes(pool)
                    rows[count] = (timed_configure(spec, emu.url, meter), timed_configure(spec, emu.url, meter))
                    CliRunner().invoke(cli, ["--endpoint", emu.url, "down", str(spec)])
    finally:
        meter.close()
    print("nodes  first_s  second_s  second/first  first_cpu_s(controller+nodes)  second_cpu_s")
    for count, ((first, cpu1), (second, cpu2)) in rows.items():
        cpu = [" + ".join(f"{c[s]:.1f}" for s in ("controller", "nodes")) if c else "-" for c in (cpu1, cpu2)]
        print(f"{count:5d}  {first:7.2f}  {second:8.2f}  {second / first:12.2f}  {cpu[0]:>29}  {cpu[1]:>12}")
    if 1 in rows and 8 in rows:
        print(f"8 vs 1 nodes, first run: {rows[8][0][0] / rows[1][0][0]:.2f}x (target <= 2.0x)")
        print(f"second run / first run (8 nodes): {rows[8][1][0] / rows[8][0][0]:.2f} (target <= 0.6)")


if __name__ == "__main__":
    main()
