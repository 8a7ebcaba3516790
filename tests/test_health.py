"""GPU health: the probe's parsing and verdicts, the summary table and the after-configure hook,
and end to end: `gcpgpu up` reports unhealthy nodes instead of calling the cluster ready, and
`gcpgpu health` runs only the gpu_health role and exits 1 while a node is unhealthy."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from click.testing import CliRunner

from gcpgpu.configure import ConfigureResult
from gcpgpu_plugins import node_roles

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_health_probe", REPO / "roles/gpu_health/files/gpu_health_probe.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)

# What `nvidia-smi --query-gpu=<probe.QUERY> --format=csv,noheader` prints: an A100 pair, one
# GPU without ECC support.
CSV = ("0, NVIDIA A100-SXM4-40GB, 550.90.07, 34, 0, 2\n"
       "1, NVIDIA A100-SXM4-40GB, 550.90.07, 71, [N/A], [N/A]\n")


def test_query_csv_is_parsed_with_na_fields():
    gpus = probe.parse_query(CSV)
    assert [g["temperature_c"] for g in gpus] == [34, 71]
    assert [g["ecc_volatile"] for g in gpus] == [0, None]
    assert gpus[0]["ecc_aggregate"] == 2 and gpus[0]["driver"] == "550.90.07"
    assert probe.parse_query("garbage line\n") == []


def test_pci_counts_nvidia_display_devices_only(tmp_path):
    for address, vendor, klass in (("0000:00:04.0", "0x10de", "0x030200"), ("0000:00:05.0", "0x10de", "0x030000"),
                                   ("0000:00:0f.0", "0x10de", "0x068000"),  # NVSwitch bridge
                                   ("0000:00:03.0", "0x1af4", "0x020000")):  # virtio NIC
        (tmp_path / address).mkdir()
        (tmp_path / address / "vendor").write_text(vendor + "\n")
        (tmp_path / address / "class").write_text(klass + "\n")
    assert probe.pci_gpus(str(tmp_path)) == ["0000:00:04.0", "0000:00:05.0"]
    assert probe.pci_gpus(str(tmp_path / "missing")) == []


@pytest.mark.parametrize(("args", "problems"), [
    ((2, ["a", "b"], probe.parse_query(CSV), "", 71, 85, 0, "pass"), []),
    ((0, [], [], "", None, 85, 0, "-"), []),  # a CPU node
    ((2, ["a"], None, "nvidia-smi not found", None, 85, 0, "-"),
     ["expected 2 GPU(s), found 1", "no working driver (nvidia-smi not found)"]),
    ((1, ["a"], [{}], "", 90, 85, 1, "fail: Memory"),
     ["GPU at 90 C (limit 85 C)", "1 uncorrected ECC error(s) since the driver loaded", "DCGM diagnostics fail: Memory"]),
    ((0, ["a"], [{}], "", 40, 85, 0, "pass"), ["found 1 GPU(s) where the machine type has none"]),
])
def test_verdicts(args, problems):
    assert probe.verdict(*args) == problems


REPORTS = {
    "c-gpu-0001": {"expected": 2, "pci": 2, "found": 2, "driver": "550.90.07", "ecc": 0, "max_temperature_c": 93,
                   "dcgm": "not installed", "healthy": False, "problems": ["GPU at 93 C (limit 85 C)"]},
    "c-gpu-0000": {"expected": 2, "pci": 2, "found": 2, "driver": "550.90.07", "ecc": 0, "max_temperature_c": 40,
                   "dcgm": "pass", "healthy": True, "problems": []},
    "c-gpu-0002": {"expected": 2, "pci": 2, "found": 0, "driver": "-", "ecc": None, "max_temperature_c": None,
                   "dcgm": "-", "healthy": False, "problems": ["no working driver (nvidia-smi not found)"]},
    "c-cpu-0000": {"expected": 0, "pci": 0, "found": 0, "driver": "-", "ecc": None, "max_temperature_c": None,
                   "dcgm": "-", "healthy": True, "problems": []},
}


def test_health_rows_one_per_node_sorted():
    rows = node_roles.health_rows(REPORTS)
    assert [r["node"] for r in rows] == ["c-cpu-0000", "c-gpu-0000", "c-gpu-0001", "c-gpu-0002"]
    assert rows[3]["GPUs expected/found"] == "2/2 on PCI, no driver"
    assert (rows[0]["GPUs expected/found"], rows[0]["ECC errors"], rows[0]["max temp"], rows[0]["verdict"]) == \
        ("0/0", "-", "-", "healthy")
    assert rows[2]["GPUs expected/found"] == "2/2" and rows[2]["max temp"] == "93 C"
    assert rows[2]["verdict"] == "UNHEALTHY: GPU at 93 C (limit 85 C)"


def test_after_configure_returns_unhealthy_nodes_and_prints_the_table(capsys):
    result = ConfigureResult(custom_stats={"gcpgpu_health": REPORTS})
    problems = node_roles.gcpgpu_after_configure(cluster=None, hosts=[], result=result)
    assert problems == ["c-gpu-0001: UNHEALTHY: GPU at 93 C (limit 85 C)",
                        "c-gpu-0002: UNHEALTHY: no working driver (nvidia-smi not found)"]
    assert "GPU health" in capsys.readouterr().out
    # A run without the health role (--tags files, health disabled) says nothing.
    assert node_roles.gcpgpu_after_configure(cluster=None, hosts=[], result=ConfigureResult()) == []
    assert capsys.readouterr().out == ""


# ------------------------------------------------------------------------------ end to end

@pytest.fixture
def rig(node_rig, monkeypatch):
    from gcpgpu import report

    monkeypatch.setattr(report.console, "width", 200)  # tables unwrapped, for the assertions
    return node_rig

def gcpgpu(*args, expect=0) -> str:
    from gcpgpu.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return " ".join(result.output.split())  # rich wraps long lines at the terminal width


def stand_in_smi(node, temperature: int) -> None:
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from roles.standins import gpu, install_nvidia_smi

    install_nvidia_smi(node, [gpu(0, temperature=temperature)])


def test_up_reports_unhealthy_nodes_and_health_checks_again(rig, tmp_path):
    emu, pool = rig
    spec = tmp_path / "cluster.yaml"
    spec.write_text("name: hl\nproject: demo-project\nzone: us-central1-a\nssh: {timeout_s: 60}\n"
                    "node_groups:\n  gpu: {count: 1, machine_type: g2-standard-8}\n"
                    "  cpu: {count: 1, machine_type: n1-standard-4}\n")
    # A test node has no GPU: the L4 node is reported, the cluster is not called ready.
    up = gcpgpu("up", str(spec))
    assert "problem: hl-gpu-0000: UNHEALTHY: expected 1 GPU(s), found 0" in up, up
    assert "hl-cpu-0000: UNHEALTHY" not in up
    assert "cluster hl is up but not ready: 1 problem(s)" in up and "cluster hl is ready" not in up

    # Every role, second run: nothing changes.
    from gcpgpu.cli import configure_hosts
    from gcpgpu.engine import open_cluster
    from gcpgpu.plugins import Plugins

    cluster = open_cluster(str(spec), Plugins(), emu.url)
    again = configure_hosts(cluster, cluster.hosts())
    assert sum(again.changed.values()) == 0, again.changed
    assert set(again.custom_stats["gcpgpu_health"]) == {"hl-gpu-0000", "hl-cpu-0000"}

    # A working (stand-in) driver: healthy; `gcpgpu health` runs the health role alone.
    stand_in_smi(pool.node("hl-gpu-0000"), temperature=47)
    healthy = gcpgpu("health", str(spec))
    assert "problem:" not in healthy and "550.90.07" in healthy and "47 C" in healthy, healthy
    # Hot: unhealthy, exit 1.
    stand_in_smi(pool.node("hl-gpu-0000"), temperature=96)
    hot = gcpgpu("health", str(spec), expect=1)
    assert "problem: hl-gpu-0000: UNHEALTHY: GPU at 96 C (limit 85 C)" in hot
    gcpgpu("down", str(spec))


def test_health_runs_only_the_health_role(rig, tmp_path, monkeypatch):
    emu, pool = rig
    spec = tmp_path / "cluster.yaml"
    spec.write_text("name: ho\nproject: demo-project\nzone: us-central1-a\nssh: {timeout_s: 60}\n"
                    "node_groups:\n  cpu: {count: 1, machine_type: n1-standard-4}\n")
    gcpgpu("up", str(spec), "--no-configure")
    import gcpgpu.configure as configure_module

    ran = {}
    real = configure_module.run_playbook

    def spy(cluster, inventory, **options):
        ran["roles"] = [r["role"] for play in configure_module.assemble_playbook(
            cluster.spec, cluster.plugins, options.get("skip_roles", ())) for r in play["roles"]]
        return real(cluster, inventory, **options)

    monkeypatch.setattr(configure_module, "run_playbook", spy)
    out = gcpgpu("health", str(spec))
    assert ran["roles"] == ["gpu_health"]
    assert "problem:" not in out
    assert not pool.node("ho-cpu-0000").path("/etc/ansible/facts.d/gcpgpu.fact").exists()  # common did not run
    gcpgpu("down", str(spec))
