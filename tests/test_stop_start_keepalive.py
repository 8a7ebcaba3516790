"""stop/start and spot keep-alive end to end: emulator + real test nodes.

The emulator does not power test nodes off: a stopped or preempted VM's node keeps running, so
"the startup command ran again" is observed in its log (one more line), not through a reboot.
"""
from __future__ import annotations

import json
import time

from click.testing import CliRunner

from gcpgpu.cli import cli

LOG = "/var/log/gcpgpu/startup.log"




def gcpgpu(*args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def states(spec) -> dict[str, str]:
    return {n["name"]: n["state"] for n in json.loads(gcpgpu("status", str(spec), "--json"))["nodes"]}


def runs(pool, name: str, expected: int) -> int:
    """How many times the startup command ran on a node (waits briefly for the expected count)."""
    deadline = time.monotonic() + 15
    while True:
        log = pool.node(name).path(LOG)
        count = log.read_text().count("ran on") if log.exists() else 0
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.2)


def write_spec(tmp_path, groups: str) -> str:
    spec = tmp_path / "cluster.yaml"
    spec.write_text(f"""name: life
project: demo-project
zone: us-central1-a
fallback_zones: [us-central1-b]
node_groups:
{groups}
startup_command: echo "ran on $(hostname)"
ssh: {{timeout_s: 60}}
""")
    return str(spec)


def test_stop_then_start_a_group_keeps_disks_and_configures_it_again(node_rig, tmp_path):
    emu, pool = node_rig
    spec = write_spec(tmp_path, "  head: {count: 1, machine_type: n1-standard-4}\n"
                                "  workers: {count: 2, machine_type: g2-standard-8}")
    gcpgpu("up", spec)
    running_cost = json.loads(gcpgpu("status", spec, "--json"))["hourly_total"]
    gcpgpu("stop", spec, "--group", "workers")
    assert states(spec) == {"life-head-0000": "running", "life-workers-0000": "stopped",
                            "life-workers-0001": "stopped"}
    stopped_cost = json.loads(gcpgpu("status", spec, "--json"))["hourly_total"]
    assert 0 < stopped_cost < running_cost  # the workers' disks still bill

    gcpgpu("start", spec)
    assert set(states(spec).values()) == {"running"}
    assert runs(pool, "life-workers-0000", 2) == 2 and runs(pool, "life-workers-0001", 2) == 2
    assert runs(pool, "life-head-0000", 1) == 1  # the head was not stopped: not re-run
    gcpgpu("down", spec)


def test_keepalive_restarts_preempted_spot_workers_and_recreates_on_stockout(node_rig, tmp_path):
    emu, pool = node_rig
    spec = write_spec(tmp_path, "  workers: {count: 4, machine_type: g2-standard-8, spot: true}")
    gcpgpu("up", spec)
    names = [f"life-workers-{i:04d}" for i in range(4)]
    assert "all nodes up" in gcpgpu("keepalive", spec, "--once")

    for name in names[:2]:
        emu.preempt("us-central1-a", name)
    assert states(spec)[names[0]] == "preempted"
    emu.reset_calls()
    out = gcpgpu("keepalive", spec, "--once")
    assert f"brought back {names[0]}, {names[1]}" in out
    assert emu.count("compute.instances.aggregatedList") >= 1
    assert emu.count("compute.instances.start") == 2 and emu.count("compute.instances.bulkInsert") == 0
    assert set(states(spec).values()) == {"running"}
    assert [runs(pool, n, 2) for n in names] == [2, 2, 1, 1]  # re-run on the revived ones only

    # No capacity left in the zone: the restart fails and the VM comes back in the fallback zone.
    emu.preempt("us-central1-a", names[3])
    emu.set_capacity("us-central1-a", "nvidia-l4", 0)
    gcpgpu("keepalive", spec, "--once")
    zones = {i["name"]: i["zone"].rsplit("/", 1)[-1] for i in emu.instances()}
    assert zones[names[3]] == "us-central1-b" and zones[names[0]] == "us-central1-a"
    assert states(spec)[names[3]] == "running"
    assert runs(pool, names[3], 1) == 1  # a new node: configured and its command run
    gcpgpu("down", spec)
    assert emu.instances() == []
