"""`gcpgpu up` of 1 node vs 64 nodes in one zone, on the emulator with a 3 s operation latency.

Prints the wall-time ratio (target <= 1.5x), the API calls of the 64-node up (target <= 10) and
the mutating calls of a re-run (target 0). Both sizes run in this one process, back to back, so
machine noise hits them alike. Usage: python benchmarks/bench_up.py [--latency 3]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from click.testing import CliRunner

from gcpgpu.cli import cli
from gcpgpu.emulator import Emulator


def up(url: str, spec: Path) -> float:
    start = time.perf_counter()
    result = CliRunner().invoke(cli, ["--endpoint", url, "up", str(spec), "--no-configure"])
    if result.exit_code != 0:
        raise SystemExit(result.output)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Emulator(latency=args.latency) as emu:
        os.environ["GCPGPU_STATE_DIR"] = f"{tmp}/state"
        # Warm-up (imports, client set-up) outside the timings, so 1 and 64 pay the same.
        warm = Path(tmp) / "warmup.yaml"
        warm.write_text("name: warmup\nproject: bench\nzone: us-central1-a\n")
        up(emu.url, warm)
        rows = {}
        for count in (1, 64):
            spec = Path(tmp) / f"bench{count}.yaml"
            spec.write_text(f"name: bench{count}\nproject: bench\nzone: us-central1-a\n"
                            f"node_groups:\n  gpu: {{count: {count}, machine_type: a2-highgpu-1g}}\n")
            emu.reset_calls()
            seconds = up(emu.url, spec)
            calls, mutating = emu.count(), emu.count(mutating=True)
            emu.reset_calls()
            rerun = up(emu.url, spec)
            rows[count] = (seconds, calls, mutating, rerun, emu.count(), emu.count(mutating=True))
        print(f"latency per operation: {args.latency:.1f} s")
        print("nodes  up_s   calls  mutating  rerun_s  rerun_calls  rerun_mutating")
        for count, (s, c, m, rs, rc, rm) in rows.items():
            print(f"{count:5d}  {s:5.2f}  {c:5d}  {m:8d}  {rs:7.2f}  {rc:11d}  {rm:14d}")
        ratio = rows[64][0] / rows[1][0]
        print(f"ratio 64/1 wall time: {ratio:.2f}x (target <= 1.5x)")
        print(f"64-node up API calls: {rows[64][1]} (target <= 10); re-run mutating calls: "
              f"{rows[64][5]} (target 0)")


if __name__ == "__main__":
    main()
