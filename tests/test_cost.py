"""Cost: plan, status and ls show $/hour computed from the price table (checked independently)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from gcpgpu.cli import cli
from gcpgpu.emulator import Emulator

TABLE = yaml.safe_load((Path(__file__).parents[1] / "plugins/gcpgpu_plugins/data/prices.yaml").read_text())
HOURS = 730

SPEC = """name: priced
project: demo-project
zone: europe-west4-a
node_groups:
  head:
    count: 1
    machine_type: n1-standard-8
    accelerator: {type: nvidia-tesla-t4, count: 2}
    disk: {size_gb: 100, type: pd-ssd}
  workers:
    count: 2
    machine_type: a2-highgpu-1g
    spot: true
    disk: {size_gb: 200, type: pd-balanced}
  cpu:
    count: 3
    machine_type: n2-standard-4
    disk: {size_gb: 50, type: pd-standard}
"""


def expected_per_node() -> dict[str, tuple[float, float]]:
    """(running, stopped) $/hour per node, by hand from the table."""
    factor = TABLE["region_factor"]["europe-west4"]
    n1_cpu, n1_gib = TABLE["per_vcpu_and_gib"]["n1"]["on_demand"]
    n2_cpu, n2_gib = TABLE["per_vcpu_and_gib"]["n2"]["on_demand"]
    disks = TABLE["disk_gb_month"]
    head_disk = 100 * disks["pd-ssd"] / HOURS
    worker_disk = 200 * disks["pd-balanced"] / HOURS
    cpu_disk = 50 * disks["pd-standard"] / HOURS
    return {
        "head": ((8 * n1_cpu + 30 * n1_gib + 2 * TABLE["gpu"]["nvidia-tesla-t4"]["on_demand"]) * factor
                 + head_disk, head_disk),
        "workers": (TABLE["per_machine"]["a2-highgpu-1g"]["spot"] * factor + worker_disk, worker_disk),
        "cpu": ((4 * n2_cpu + 16 * n2_gib) * factor + cpu_disk, cpu_disk),
    }


@pytest.fixture
def emu():
    with Emulator(latency=0.02) as emulator:
        yield emulator


def run(emu, *args):
    result = CliRunner().invoke(cli, ["--endpoint", emu.url, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_plan_shows_each_group_and_the_total_as_the_price_table_says(emu, tmp_path):
    spec = tmp_path / "priced.yaml"
    spec.write_text(SPEC)
    data = json.loads(run(emu, "plan", str(spec), "--json"))
    per_node = expected_per_node()
    by_group = {row["group"]: row for row in data["cost"]}
    counts = {"head": 1, "workers": 2, "cpu": 3}
    for group, count in counts.items():
        assert by_group[group]["hourly"] == pytest.approx(count * per_node[group][0], rel=1e-4), group
    assert data["hourly_total"] == pytest.approx(
        sum(counts[g] * per_node[g][0] for g in counts), rel=1e-4)
    assert "spot" in by_group["workers"]["item"]


def test_status_charges_stopped_nodes_their_disks_only_and_ls_lists_the_cluster(emu, tmp_path):
    spec = tmp_path / "priced.yaml"
    spec.write_text(SPEC)
    run(emu, "up", str(spec), "--no-configure")
    per_node = expected_per_node()
    emu.preempt("europe-west4-a", "priced-workers-0000")  # a stopped (TERMINATED) spot worker
    data = json.loads(run(emu, "status", str(spec), "--json"))
    workers = {row["group"]: row for row in data["cost"]}["workers"]
    assert workers["hourly"] == pytest.approx(per_node["workers"][0] + per_node["workers"][1], rel=1e-4)

    from gcpgpu.state import ClusterState, default_state_root

    recorded = ClusterState(default_state_root(), "demo-project", "priced").resources
    assert sum(key.startswith("instance/") for key in recorded) == 6
    listed = json.loads(run(emu, "ls", "--json"))["clusters"]
    assert [(c["cluster"], c["resources"]) for c in listed] == [("priced", len(recorded))]
    assert listed[0]["spec"] == str(spec.resolve())
    run(emu, "down", str(spec))
    assert json.loads(run(emu, "ls", "--json"))["clusters"] == []


def test_a_user_price_file_overrides_the_built_in_table(emu, tmp_path):
    (tmp_path / "negotiated.yaml").write_text("gpu:\n  nvidia-tesla-t4: {on_demand: 0.0, spot: 0.0}\n")
    spec = tmp_path / "priced.yaml"
    spec.write_text(SPEC + "prices: negotiated.yaml\n")
    data = json.loads(run(emu, "plan", str(spec), "--json"))
    head = {row["group"]: row for row in data["cost"]}["head"]
    gpus = 2 * TABLE["gpu"]["nvidia-tesla-t4"]["on_demand"] * TABLE["region_factor"]["europe-west4"]
    assert head["hourly"] == pytest.approx(expected_per_node()["head"][0] - gpus, rel=1e-4)


def test_ls_shows_the_expiry_and_sweep_deletes_only_expired_clusters(emu, tmp_path, monkeypatch):
    import time

    short = tmp_path / "short.yaml"
    short.write_text("name: short\nproject: demo-project\nzone: us-central1-a\nttl_hours: 1\n"
                     "node_groups:\n  a: {count: 1, machine_type: n1-standard-4}\n")
    lasting = tmp_path / "lasting.yaml"
    lasting.write_text("name: lasting\nproject: demo-project\nzone: us-central1-a\n"
                       "node_groups:\n  a: {count: 1, machine_type: n1-standard-4}\n")
    before = time.time()
    run(emu, "up", str(short), "--no-configure")
    run(emu, "up", str(lasting), "--no-configure")
    listed = {c["cluster"]: c for c in json.loads(run(emu, "ls", "--json"))["clusters"]}
    assert before + 3600 <= listed["short"]["expires"] <= time.time() + 3600
    assert listed["lasting"]["expires"] is None
    labels = {i["name"]: i["labels"] for i in emu.instances()}
    assert labels["short-a-0000"]["gcpgpu-ttl-hours"] == "1"
    assert "gcpgpu-ttl-hours" not in labels["lasting-a-0000"]

    assert "deleting" not in run(emu, "sweep")  # not expired yet: nothing happens
    assert len(emu.instances()) == 2
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3601)
    assert "short (demo-project) expired" in run(emu, "sweep", "--dry-run")
    assert len(emu.instances()) == 2
    run(emu, "sweep")
    assert [i["name"] for i in emu.instances()] == ["lasting-a-0000"]
    assert [c["cluster"] for c in json.loads(run(emu, "ls", "--json"))["clusters"]] == ["lasting"]
