"""The rest of the env-var tool's parity: quiet mode (MINIMIZE_TERRAFORM_LOGGING), verbose debug
output, the Jupyter proxy URL (SHOW_PROXY_URL), and what each VM is created with (image family or
name, disk type and size, metadata, labels on VM and disk), checked on the emulator."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from gcpgpu import report
from gcpgpu.cli import cli
from gcpgpu.state import ClusterState

PROJECT = "demo-project"


@pytest.fixture(autouse=True)
def restore_output(monkeypatch):
    """Quiet and verbose mode reconfigure process-wide output; put it back after each test."""
    monkeypatch.setattr(report, "console", report.console)
    monkeypatch.setattr(report, "log_file", None)
    loggers = {name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers))
               for name in report.DEBUG_LOGGERS}
    yield
    for name, (level, handlers) in loggers.items():
        logging.getLogger(name).setLevel(level)
        logging.getLogger(name).handlers[:] = handlers


def write_spec(tmp_path: Path, body: str = "") -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(f"name: demo\nproject: {PROJECT}\nzone: us-central1-a\n" + body)
    return path


def run(emu, *args, env=None):
    result = CliRunner().invoke(cli, ["--endpoint", emu.url, *args], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_quiet_up_prints_the_summary_and_logs_everything_to_a_file(emu, tmp_path):
    spec = write_spec(tmp_path)
    result = run(emu, "--quiet", "up", str(spec), "--no-configure")
    assert "create instance gpu" not in result.stdout  # no progress bars on the terminal
    assert "4 to create" in result.stdout and "demo-gpu-0000" in result.stdout  # plan line, nodes
    assert "gcpgpu down" in result.stdout  # how to reach it
    [log] = (ClusterState.for_spec({"name": "demo", "project": PROJECT}).dir / "logs").glob("*-up.log")
    assert f"full log: {log}\n" in result.stdout
    text = log.read_text()
    assert "create instance gpu" in text  # the progress that was not shown
    assert f"POST /compute/v1/projects/{PROJECT}/zones/us-central1-a/instances/bulkInsert" in text  # API calls
    assert "iam.gserviceaccount.com" in text and "4 to create" in text
    assert "Authorization" not in text and "Bearer" not in text


def test_quiet_mode_from_the_environment_and_errors_reach_both(emu, tmp_path):
    spec = write_spec(tmp_path)
    run(emu, "up", str(spec), "--no-configure")
    emu.inject_fault("compute.instances.delete", "internalError")  # the delete operation fails
    result = CliRunner().invoke(cli, ["--endpoint", emu.url, "down", str(spec)], env={"GCPGPU_QUIET": "1"})
    assert result.exit_code == 1
    assert "error: some resources could not be changed" in result.stderr
    [log] = (ClusterState.for_spec({"name": "demo", "project": PROJECT}).dir / "logs").glob("*-down.log")
    assert "error: some resources could not be changed" in log.read_text()


def test_quiet_mode_keeps_ansible_output_in_the_log(tmp_path):
    path = tmp_path / "run.log"
    report.quiet_to(path)
    with report.ConfigureDisplay(["n1"]) as display:
        display({"event": "runner_on_ok", "stdout": "ok: [n1] => (item=/etc/hosts)",
                 "event_data": {"host": "n1", "task": "hosts"}})
    assert "ok: [n1] => (item=/etc/hosts)" in path.read_text()


def test_verbose_shows_every_api_request_on_stderr(emu, tmp_path):
    result = run(emu, "--verbose", "plan", str(write_spec(tmp_path)))
    assert f"GET /compute/v1/projects/{PROJECT}/aggregated/instances" in result.stderr
    assert "getIamPolicy" in result.stderr
    assert "GET /compute" not in result.stdout


def test_the_jupyter_proxy_url_is_shown_once_the_image_publishes_it(emu, tmp_path):
    from google.cloud import compute_v1
    from gcpgpu.clients import ClientFactory

    spec = write_spec(tmp_path, "node_groups:\n  gpu:\n    metadata: {proxy-mode: project_editors}\n")
    run(emu, "up", str(spec), "--no-configure")
    nodes = json.loads(run(emu, "status", str(spec), "--json").output)["nodes"]
    assert nodes[0]["urls"] == {}  # nothing published yet: nothing shown
    # What the DLVM image's proxy agent does once Jupyter is up: write proxy-url into metadata.
    instances = ClientFactory(emu.url).get(compute_v1.InstancesClient)
    vm = instances.get(project=PROJECT, zone="us-central1-a", instance="demo-gpu-0000")
    items = [*vm.metadata.items, compute_v1.Items(key="proxy-url", value="abc-dot-us-central1.notebooks.example")]
    instances.set_metadata(project=PROJECT, zone="us-central1-a", instance="demo-gpu-0000",
                           metadata_resource=compute_v1.Metadata(fingerprint=vm.metadata.fingerprint, items=items))
    nodes = json.loads(run(emu, "status", str(spec), "--json").output)["nodes"]
    assert nodes[0]["urls"] == {"jupyter": "https://abc-dot-us-central1.notebooks.example"}
    output = run(emu, "up", str(spec), "--no-configure").stdout
    assert "jupyter on demo-gpu-0000: https://abc-dot-us-central1.notebooks.example" in output


def test_what_each_vm_is_created_with(emu, tmp_path):
    """IMAGE_FAMILY_NAME / IMAGE_NAME, DISK_TYPE, DISK_SIZE_GB, METADATA and LABELS: what the VM
    shows on the emulator, and (for what an instance's JSON does not show: its boot disk's image,
    type and labels) what the compute provider asks for."""
    from gcpgpu.engine import open_cluster
    from gcpgpu.plugins import Plugins
    from gcpgpu_plugins.compute import instance_properties

    spec = write_spec(tmp_path, """labels: {team: vision}
node_groups:
  fam:
    image: {family: pytorch-latest-gpu}
    disk: {type: pd-balanced, size_gb: 300}
    metadata: {enable-oslogin: "TRUE"}
  named:
    machine_type: n1-standard-8
    accelerator: {type: nvidia-tesla-t4}
    labels: {tier: dev}
    image: {name: my-golden-image, project: my-images}
""")
    cluster = open_cluster(str(spec), Plugins(), emu.url)
    fam = instance_properties(cluster.context(), "fam", cluster.spec["node_groups"]["fam"])
    named = instance_properties(cluster.context(), "named", cluster.spec["node_groups"]["named"])
    assert fam.disks[0].initialize_params.source_image == \
        "projects/deeplearning-platform-release/global/images/family/pytorch-latest-gpu"
    assert named.disks[0].initialize_params.source_image == "projects/my-images/global/images/my-golden-image"
    assert fam.disks[0].initialize_params.disk_type == "pd-balanced"
    assert named.disks[0].initialize_params.labels["tier"] == "dev"  # labels on the disk (billing)

    spec.write_text(spec.read_text().replace("    image: {name: my-golden-image, project: my-images}\n", ""))
    run(emu, "up", str(spec), "--no-configure")
    vms = {vm["labels"]["gcpgpu-group"]: vm for vm in emu.instances()}
    assert vms["fam"]["disks"][0]["diskSizeGb"] == "300"
    assert vms["fam"]["labels"]["team"] == "vision"
    assert {"team": "vision", "tier": "dev"}.items() <= vms["named"]["labels"].items()
    assert {"key": "enable-oslogin", "value": "TRUE"} in vms["fam"]["metadata"]["items"]
    assert vms["named"]["guestAccelerators"][0]["acceleratorType"].endswith("/nvidia-tesla-t4")
