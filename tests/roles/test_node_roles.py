"""nvidia_driver, ops_agent and gpu_health on real test nodes, on the paths that can run here.

Test nodes have no GPU, no internet and no systemd: the NVIDIA driver and the Ops Agent cannot be
installed. What is tested: no GPU -> skipped with a reason; a stand-in nvidia-smi reporting a
working driver -> nothing installed, changed=0; check mode on a bare node with (fake) GPUs on the
PCI bus lists the steps; Secure Boot stops the install with a message; the Ops Agent's config is
written, validated by (a stand-in of) the agent's engine and the agent restarted once; health
verdicts from realistic nvidia-smi CSV; every role's second run changed=0.
"""
from __future__ import annotations

import pytest

from .conftest import ok, run_playbook
from .standins import FAKE_PCI, fake_pci, gpu, install_dcgmi, install_nvidia_smi, write

GCE = "/var/tmp/fake-dmi-product-name"
ENGINE = "/opt/google-cloud-ops-agent/libexec/google_cloud_ops_agent_engine"
AGENT_CONFIG = "/etc/google-cloud-ops-agent/config.yaml"
RESTARTS = "/var/tmp/systemctl-restarts"


def play(*roles: dict | str) -> list[dict]:
    return [{"name": "gpu roles", "hosts": "all", "gather_facts": False, "become": True, "roles": list(roles)}]


def messages(result, task: str) -> dict[str, str]:
    """{host: msg} of the debug task ``task`` ("role : task name")."""
    found = {}
    for event in result.events:
        data = event.get("event_data", {})
        if event.get("event") == "runner_on_ok" and f"{data.get('role')} : {data.get('task')}" == task:
            msg = data["res"].get("msg")
            found[data["host"]] = "\n".join(msg) if isinstance(msg, list) else msg
    return found


def tasks_run(result, role: str) -> dict[str, set[str]]:
    """{host: names of the tasks of ``role`` that ran on it} (skipped ones and Ansible's own
    argument check excluded)."""
    ran: dict[str, set[str]] = {}
    for event in result.events:
        data = event.get("event_data", {})
        if (event.get("event") in ("runner_on_ok", "runner_on_failed") and data.get("role") == role
                and not data["task"].startswith("Validating arguments")):
            ran.setdefault(data["host"], set()).add(data["task"])
    return ran


DRIVER_PROBE = "Find NVIDIA GPUs on the PCI bus and the driver in use"


def health_stats(result) -> dict:
    stats = [e for e in result.events if e.get("event") == "playbook_on_stats"]
    return stats[-1]["event_data"]["artifact_data"]["gcpgpu_health"]


def reset(cluster):
    """Take every stand-in away again (each test starts from a bare node)."""
    for name in cluster.names:
        cluster.node(name).run(["rm", "-rf", FAKE_PCI, "/usr/bin/nvidia-smi", "/usr/local/bin/dcgmi",
                                "/etc/gcpgpu-test", GCE, "/opt/google-cloud-ops-agent",
                                "/etc/google-cloud-ops-agent", "/usr/local/sbin/systemctl", RESTARTS])


@pytest.fixture
def nodes(cluster):
    reset(cluster)
    yield cluster
    reset(cluster)


def test_no_gpu_every_role_skips_with_a_reason_and_changes_nothing(nodes):
    gpu_node, cpu_node = nodes.names
    inventory = nodes.inventory(**{gpu_node: {"gcpgpu_gpus": 1}, cpu_node: {"gcpgpu_gpus": 0}})
    roles = play("nvidia_driver", "ops_agent", "gpu_health")
    wd = nodes.workdir / "no-gpu"
    first = ok(run_playbook(wd, roles, inventory))
    assert first.total("changed") == 0, first.stats
    # The driver role probed and stopped: nothing after its probe ran on either node.
    assert tasks_run(first, "nvidia_driver") == {n: {DRIVER_PROBE} for n in nodes.names}
    [agent] = messages(first, "ops_agent : Say why the Ops Agent is skipped").values()  # once
    assert agent.startswith("ops_agent skipped: not a Compute Engine VM")
    assert all(f"{name} (product name '" in agent for name in nodes.names), agent
    reports = health_stats(first)
    assert reports[cpu_node]["healthy"] is True
    assert reports[gpu_node]["healthy"] is False
    assert reports[gpu_node]["problems"][0] == "expected 1 GPU(s), found 0"
    assert not nodes.node(gpu_node).path(AGENT_CONFIG).exists()
    second = ok(run_playbook(wd, roles, inventory))
    assert second.total("changed") == 0, second.stats


def test_working_driver_is_left_alone_and_the_node_is_healthy(nodes):
    name = nodes.names[0]
    node = nodes.node(name)
    pci = fake_pci(node, 2)
    install_nvidia_smi(node, [gpu(0, temperature=44), gpu(1, temperature=52)])
    inventory = nodes.inventory([name], **{name: {"gcpgpu_gpus": 2}})
    roles = play({"role": "nvidia_driver", "vars": {"nvidia_driver_pci_devices_dir": pci}},
                 {"role": "gpu_health", "vars": {"gpu_health_pci_devices_dir": pci}})
    wd = nodes.workdir / "working"
    for _ in range(2):
        result = ok(run_playbook(wd, roles, inventory))
        assert result.total("changed") == 0, result.stats
        assert tasks_run(result, "nvidia_driver") == {name: {DRIVER_PROBE}}  # probed, left alone
    report = health_stats(result)[name]
    assert report["healthy"] is True, report
    assert (report["expected"], report["pci"], report["found"]) == (2, 2, 2)
    assert report["driver"] == "550.90.07" and report["ecc"] == 0 and report["max_temperature_c"] == 52
    assert report["dcgm"] == "not installed"
    assert [g["name"] for g in report["gpus"]] == ["NVIDIA L4", "NVIDIA L4"]
    assert node.run("dpkg-query -W cuda-drivers dkms 2>/dev/null | wc -l").stdout.strip() == "0"
    assert not node.path("/etc/apt/sources.list.d/cuda-debian12-x86_64.list").exists()


@pytest.mark.parametrize(("gpus", "dcgm_passes", "problem"), [
    ([gpu(0, temperature=93)], None, "GPU at 93 C (limit 85 C)"),
    ([gpu(0, ecc=3)], None, "3 uncorrected ECC error(s) since the driver loaded"),
    ([gpu(0)], False, "DCGM diagnostics fail: GPU Memory | Fail - GPU 0"),
    ([], None, "no working driver (NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.)"),
    ([gpu(0), gpu(1)], None, "expected 1 GPU(s), found 2"),
], ids=["hot", "ecc", "dcgm", "driver-broken", "count"])
def test_health_unhealthy_stand_ins(nodes, gpus, dcgm_passes, problem):
    name = nodes.names[0]
    node = nodes.node(name)
    pci = fake_pci(node, 1)
    install_nvidia_smi(node, gpus)
    if dcgm_passes is not None:
        install_dcgmi(node, dcgm_passes)
    inventory = nodes.inventory([name], **{name: {"gcpgpu_gpus": 1}})
    roles = play({"role": "gpu_health", "vars": {"gpu_health_pci_devices_dir": pci}})
    result = ok(run_playbook(nodes.workdir / "unhealthy", roles, inventory))
    report = health_stats(result)[name]
    assert report["healthy"] is False and problem in report["problems"], report
    assert result.total("changed") == 0
    # The same node fails when asked to (gpu_health_fail), naming the problem.
    roles[0]["roles"][0]["vars"]["gpu_health_fail"] = True
    failed = run_playbook(nodes.workdir / "unhealthy", roles, inventory)
    assert failed.rc != 0 and problem in failed.stdout


def test_dcgm_pass_is_reported(nodes):
    name = nodes.names[0]
    node = nodes.node(name)
    install_nvidia_smi(node, [gpu(0)])
    install_dcgmi(node, True)
    roles = play({"role": "gpu_health", "vars": {"gpu_health_pci_devices_dir": fake_pci(node, 1)}})
    result = ok(run_playbook(nodes.workdir / "dcgm", roles, nodes.inventory([name], **{name: {"gcpgpu_gpus": 1}})))
    assert health_stats(result)[name]["dcgm"] == "pass"
    assert health_stats(result)[name]["healthy"] is True


def test_check_mode_on_a_bare_gpu_node_lists_the_install_steps(nodes):
    name = nodes.names[0]
    node = nodes.node(name)
    pci = fake_pci(node, 2)
    inventory = nodes.inventory([name], **{name: {"gcpgpu_gpus": 2}})
    roles = play({"role": "nvidia_driver", "vars": {"nvidia_driver_pci_devices_dir": pci,
                                                    "nvidia_driver_branch": "550"}})
    before = node.run("dpkg --get-selections | md5sum").stdout
    result = ok(run_playbook(nodes.workdir / "check", roles, inventory, check=True))
    assert result.per_host("changed") == {name: 1}, result.stats
    plan = messages(result, "nvidia_driver : Show the plan")[name]
    kernel = node.run(["uname", "-r"]).stdout.strip()
    for step in ("NVIDIA GPUs on the PCI bus: 2; no working driver",
                 f"install linux-headers-{kernel} and dkms",
                 "install NVIDIA's CUDA repository keyring https://developer.download.nvidia.com/compute/cuda/"
                 "repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb",
                 "install cuda-drivers-550 (DKMS builds the kernel modules)",
                 "hold cuda-drivers-550 (apt-mark hold)",
                 "reboot if the modules do not load, and wait up to 900s",
                 "check that nvidia-smi lists 2 GPU(s)"):
        assert step in plan, plan
    # Nothing was installed or held.
    assert node.run("dpkg --get-selections | md5sum").stdout == before
    assert not node.path("/etc/apt/sources.list.d/cuda-debian12-x86_64.list").exists()


def test_secure_boot_stops_the_install_with_a_clear_message(nodes):
    name = nodes.names[0]
    node = nodes.node(name)
    efivar = "/var/tmp/fake-efivars/SecureBoot"
    node.path(efivar).parent.mkdir(parents=True, exist_ok=True)
    node.path(efivar).write_bytes(b"\x06\x00\x00\x00\x01")  # attributes, then 1: enabled
    roles = play({"role": "nvidia_driver", "vars": {"nvidia_driver_pci_devices_dir": fake_pci(node, 1),
                                                    "nvidia_driver_secure_boot_var": efivar}})
    inventory = nodes.inventory([name], **{name: {"gcpgpu_gpus": 1}})
    result = run_playbook(nodes.workdir / "secure-boot", roles, inventory, check=True)
    assert result.rc != 0
    assert f"Secure Boot is on for {name}" in result.stdout and "enableSecureBoot: false" in result.stdout
    node.path(efivar).write_bytes(b"\x06\x00\x00\x00\x00")  # off: the plan is shown instead
    ok(run_playbook(nodes.workdir / "secure-boot", roles, inventory, check=True))
    node.run(["rm", "-rf", "/var/tmp/fake-efivars"])


# --------------------------------------------------------------------------------------- ops_agent

STAND_IN_ENGINE = """#!/bin/sh
# stand-in for the Ops Agent's config engine: `-in FILE` validates FILE
[ "$1" = -in ] || exit 2
if [ -e /var/tmp/engine-rejects ]; then echo "config is invalid: $(cat /var/tmp/engine-rejects)" >&2; exit 1; fi
grep -q '^metrics:\\|^{}' "$2" || { echo "not an Ops Agent config" >&2; exit 1; }
"""
# Just enough of systemctl for ansible.builtin.systemd_service: `show` says loaded and active,
# restarts are counted.
STAND_IN_SYSTEMCTL = f"""#!/bin/sh
case "$1" in
  show) printf 'Id=%s\\nLoadState=loaded\\nActiveState=active\\nSubState=exited\\nUnitFileState=enabled\\n' "$2" ;;
  restart) echo "$2" >> {RESTARTS} ;;
  is-active) echo active ;;
  is-enabled) echo enabled ;;
esac
"""


def on_gce(node, installed: bool) -> None:
    write(node, GCE, "Google Compute Engine\n")
    write(node, "/usr/local/sbin/systemctl", STAND_IN_SYSTEMCTL, 0o755)
    if installed:  # what the package leaves: the engine and a config of comments
        write(node, ENGINE, STAND_IN_ENGINE, 0o755)
        write(node, AGENT_CONFIG, "# Ops Agent configuration (package default)\n")


def agent_play(gpu_metrics: bool) -> list[dict]:
    return play({"role": "ops_agent", "vars": {"ops_agent_dmi_product_file": GCE,
                                               "ops_agent_gpu_metrics": gpu_metrics}})


def test_ops_agent_check_mode_on_a_bare_gce_node_lists_the_install(nodes):
    name = nodes.names[0]
    node = nodes.node(name)
    on_gce(node, installed=False)
    result = ok(run_playbook(nodes.workdir / "agent-check", agent_play(True), nodes.inventory([name]), check=True))
    assert result.per_host("changed") == {name: 1}, result.stats
    steps = messages(result, "ops_agent : Show the install steps (check mode)")[name]
    assert "download https://dl.google.com/cloudagents/add-google-cloud-ops-agent-repo.sh" in steps
    assert "--also-install" in steps and "up to 5 attempts each, waiting 5..30s at random" in steps
    assert not node.path(AGENT_CONFIG).exists() and not node.path("/var/tmp/add-google-cloud-ops-agent-repo.sh").exists()


def test_ops_agent_installed_config_validated_restart_once_then_idempotent(nodes):
    name = nodes.names[0]
    node = nodes.node(name)
    on_gce(node, installed=True)
    inventory = nodes.inventory([name])
    wd = nodes.workdir / "agent"
    first = ok(run_playbook(wd, agent_play(True), inventory))
    assert first.per_host("changed") == {name: 2}, first.stats  # config + restart handler
    config = node.path(AGENT_CONFIG).read_text()
    assert "type: dcgm" in config and "- dcgm" in config
    assert node.path(RESTARTS).read_text() == "google-cloud-ops-agent\n"
    second = ok(run_playbook(wd, agent_play(True), inventory))
    assert second.total("changed") == 0, second.stats
    assert node.path(RESTARTS).read_text() == "google-cloud-ops-agent\n"  # no second restart

    # A config the engine rejects never replaces the good one, and nothing restarts.
    write(node, "/var/tmp/engine-rejects", "dcgm receiver missing")
    rejected = run_playbook(wd, agent_play(False), inventory)
    assert rejected.rc != 0 and "config is invalid: dcgm receiver missing" in rejected.stdout
    assert node.path(AGENT_CONFIG).read_text() == config
    assert node.path(RESTARTS).read_text() == "google-cloud-ops-agent\n"
    node.run(["rm", "-f", "/var/tmp/engine-rejects"])
    without_gpus = ok(run_playbook(wd, agent_play(False), inventory))
    assert without_gpus.per_host("changed") == {name: 2}
    assert "dcgm" not in node.path(AGENT_CONFIG).read_text()
