"""`gcpgpu configure` of 1 vs 8 real test nodes, first run vs second (no-change) run.

Targets: 8 nodes take at most 2.0x the time of 1 node on a 2-core machine; a second run takes at
most 0.6 of the first. Both sizes run in this one process, back to back. Needs root (test nodes).
Usage: python benchmarks/bench_configure.py
"""
from __future__ import annotations

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


def timed_configure(spec: Path, endpoint: str) -> float:
    cluster = open_cluster(str(spec), Plugins(), endpoint)
    hosts = cluster.hosts()
    start = time.perf_counter()
    configure_hosts(cluster, hosts)
    return time.perf_counter() - start


def main() -> None:
    ok, reason = nodes_supported()
    if not ok:
        raise SystemExit(f"test nodes unavailable: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.update(GCPGPU_STATE_DIR=str(tmp / "state"), GCPGPU_KEYS_DIR=str(tmp / "keys"),
                          ANSIBLE_LOCAL_TEMP=str(tmp / "ansible"))
        with NodePool(tmp / "nodes", bridge="gcpgpu-bench", subnet="10.202.0") as pool, \
                Emulator(latency=0.05) as emu:
            emu.bind_nodes(pool)
            rows = {}
            for count in (1, 8):
                spec = write_cluster(tmp, count)
                result = CliRunner().invoke(cli, ["--endpoint", emu.url, "up", str(spec), "--no-configure"])
                assert result.exit_code == 0, result.output
                first = timed_configure(spec, emu.url)
                second = timed_configure(spec, emu.url)
                rows[count] = (first, second)
                CliRunner().invoke(cli, ["--endpoint", emu.url, "down", str(spec)])
    print("nodes  first_s  second_s  second/first")
    for count, (first, second) in rows.items():
        print(f"{count:5d}  {first:7.2f}  {second:8.2f}  {second / first:12.2f}")
    print(f"8 vs 1 nodes, first run: {rows[8][0] / rows[1][0]:.2f}x (target <= 2.0x)")
    print(f"second run / first run (8 nodes): {rows[8][1] / rows[8][0]:.2f} (target <= 0.6)")


if __name__ == "__main__":
    main()
