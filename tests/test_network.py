"""The network plugin: spec checks, and up / plan / change / down against the bundled emulator."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gcpgpu.clients import ClientFactory
from gcpgpu.errors import SpecError
from gcpgpu.plugins import Plugins
from gcpgpu.spec import load_spec
from gcpgpu_plugins import network

from emulated import gcpgpu

PROJECT = "demo-project"
ACCOUNT = "gcpgpu-demo@demo-project.iam.gserviceaccount.com"


def write_spec(tmp_path: Path, body: str, name: str = "demo") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nproject: {PROJECT}\nzone: us-central1-a\n" + body)
    return path


def plan_rows(emu, spec) -> list[tuple[str, str, str]]:
    rows = json.loads(gcpgpu(emu, "plan", str(spec), "--json").output)["changes"]
    return sorted((r["action"], r["kind"], r["name"]) for r in rows)


def listed(emu) -> dict[str, dict]:
    """Every network, subnetwork and firewall in the emulated project, by kind then name."""
    from google.cloud import compute_v1

    clients = ClientFactory(emu.url)
    subnets = clients.get(compute_v1.SubnetworksClient).aggregated_list(project=PROJECT)
    return {
        "network": {n.name: n for n in clients.get(compute_v1.NetworksClient).list(project=PROJECT)},
        "subnetwork": {s.name: s for _, scoped in subnets for s in scoped.subnetworks},
        "firewall": {f.name: f for f in clients.get(compute_v1.FirewallsClient).list(project=PROJECT)},
    }


def mutations(emu) -> list[str]:
    return sorted(c.method_id for c in emu.calls if c.mutating)


# -- the spec ------------------------------------------------------------------------------------

def load(tmp_path, body: str) -> dict:
    return load_spec(write_spec(tmp_path, body), Plugins())


def test_string_and_object_forms_mean_the_same(tmp_path):
    short = network.settings(load(tmp_path, "network: new\n"))
    assert short == network.settings(load(tmp_path, "network: {mode: new}\n"))
    assert short == {"mode": "new", "nics": 1, "ssh_source_ranges": [network.IAP_RANGE]}
    assert network.settings(load(tmp_path, "network: multi_nic\n"))["nics"] == 5
    assert network.settings(load(tmp_path, ""))["mode"] == "default"


@pytest.mark.parametrize("body, expected", [
    ("network: {mode: new, ssh_source_ranges: [0.0.0.0/0]}\n",
     "network.ssh_source_ranges[0]: line 4: '0.0.0.0/0' opens SSH to the whole internet"),
    ("network: {mode: new, ssh_source_ranges: ['::/0']}\n", "opens SSH to the whole internet"),
    ("network: {mode: new, ssh_source_ranges: [10.1.2.3/8]}\n", "did you mean '10.0.0.0/8'?"),
    ("network: {mode: new, ssh_source_ranges: [my-laptop]}\n", "'my-laptop' is not an address range"),
    ("network: {mode: new, nics: 3}\n", "network.nics: line 4: only multi_nic takes nics"),
    ("network: {mode: default, ssh_source_ranges: [203.0.113.7/32]}\n", "mode default creates no firewall"),
    ("network: {mode: multi_nic, nics: 11}\n", "network"),
    ("network: newer\n", "network"),
    ("network: {mode: new, ssh_ranges: [1.2.3.4/32]}\n", "ssh_ranges"),
])
def test_bad_network_settings_fail_before_any_call(tmp_path, body, expected):
    with pytest.raises(SpecError) as info:
        load(tmp_path, body)
    assert expected in str(info.value)


def test_open_ssh_needs_the_loudly_named_override(tmp_path):
    spec = load(tmp_path, f"network: {{mode: new, {network.UNSAFE_OVERRIDE}: true}}\n")
    assert network.settings(spec)["ssh_source_ranges"] == ["0.0.0.0/0"]


def test_subnet_ranges_do_not_move_when_fallback_zones_change():
    spec = {"name": "demo", "project": PROJECT, "zone": "us-central1-a", "network": "multi_nic"}
    def ranges(fallbacks):
        bodies = network.desired_bodies({**spec, "fallback_zones": fallbacks})
        return {b["name"]: b["ipCidrRange"] for kind, _, b in bodies if kind == "subnetwork"}
    before = ranges(["europe-west4-a"])
    after = ranges(["asia-east1-a", "europe-west4-b", "us-east1-b"])
    assert all(after[name] == cidr for name, cidr in before.items())
    assert len(set(after.values())) == len(after)  # no two subnets of the cluster overlap


def test_long_cluster_names_are_refused_when_subnet_names_would_not_fit(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(tmp_path, "network: new\nfallback_zones: [northamerica-northeast2-a]\n",
                             name="a" * 40), Plugins())
    assert "subnet names like" in str(info.value)


def test_the_cli_validate_exits_2_on_open_ssh(emu, tmp_path):
    spec = write_spec(tmp_path, "network: {mode: new, ssh_source_ranges: [0.0.0.0/0]}\n")
    result = gcpgpu(emu, "validate", str(spec), expect=2)
    assert network.UNSAFE_OVERRIDE in result.output
    assert emu.calls == []


# -- against the emulator ------------------------------------------------------------------------

def test_new_network_lifecycle_create_keep_change_down(emu, tmp_path):
    spec = write_spec(tmp_path, "network: new\nfallback_zones: [europe-west4-a]\n")
    gcpgpu(emu, "up", str(spec))
    found = listed(emu)
    assert sorted(found["network"]) == ["demo-net-0"]
    assert found["network"]["demo-net-0"].auto_create_subnetworks is False
    assert sorted(found["subnetwork"]) == ["demo-net-0-europe-west4", "demo-net-0-us-central1"]
    ranges = {name: s.ip_cidr_range for name, s in found["subnetwork"].items()}
    assert ranges["demo-net-0-us-central1"] != ranges["demo-net-0-europe-west4"]
    assert all(r.startswith("10.") and r.endswith("/20") for r in ranges.values())
    internal, ssh = found["firewall"]["demo-net-0-internal"], found["firewall"]["demo-net-0-ssh"]
    # Internal traffic: only between VMs running as the cluster's account, on every protocol.
    assert list(internal.source_service_accounts) == [ACCOUNT] == list(internal.target_service_accounts)
    assert list(internal.source_ranges) == [] and internal.allowed[0].I_p_protocol == "all"
    # SSH: only from IAP, only to the cluster's VMs.
    assert list(ssh.source_ranges) == ["35.235.240.0/20"] and list(ssh.target_service_accounts) == [ACCOUNT]
    assert [(a.I_p_protocol, list(a.ports)) for a in ssh.allowed] == [("tcp", ["22"])]
    assert all(not f.source_ranges or "0.0.0.0/0" not in f.source_ranges for f in found["firewall"].values())
    [vm] = emu.instances()
    assert vm["tags"]["items"] == ["gcpgpu-demo"]  # for the user's own rules
    [nic] = vm["networkInterfaces"]
    assert nic["network"].endswith("/global/networks/demo-net-0")
    assert nic["subnetwork"].endswith("/regions/us-central1/subnetworks/demo-net-0-us-central1")
    assert nic["accessConfigs"][0]["type"] == "ONE_TO_ONE_NAT"

    # Re-run: the plan keeps everything and up changes nothing.
    assert {action for action, _, _ in plan_rows(emu, spec)} == {"keep"}
    emu.reset_calls()
    gcpgpu(emu, "up", str(spec))
    assert mutations(emu) == []

    # A spec change applies only that change: one firewall patched in place.
    spec.write_text(spec.read_text().replace(
        "network: new\n", "network: {mode: new, ssh_source_ranges: [35.235.240.0/20, 203.0.113.7/32]}\n"))
    changes = [row for row in plan_rows(emu, spec) if row[0] != "keep"]
    assert changes == [("update", "firewall", "demo-net-0-ssh")]
    table = gcpgpu(emu, "plan", str(spec)).output
    assert "0 to create, 1 to update in place, 0 to replace, 0 to delete" in table and "update" in table
    emu.reset_calls()
    gcpgpu(emu, "up", str(spec))
    assert mutations(emu) == ["compute.firewalls.patch"]
    assert sorted(listed(emu)["firewall"]["demo-net-0-ssh"].source_ranges) == ["203.0.113.7/32", "35.235.240.0/20"]

    gcpgpu(emu, "down", str(spec))
    assert listed(emu) == {"network": {}, "subnetwork": {}, "firewall": {}}
    assert emu.instances() == []
    [iam] = [s for s in emu.services if type(s).__name__ == "IamService"]
    assert iam.accounts == {}
    assert not any(ACCOUNT in m for b in iam.policies[PROJECT]["bindings"] for m in b["members"])


def test_multi_nic_gives_every_vm_one_nic_per_network(emu, tmp_path):
    spec = write_spec(tmp_path, "network: multi_nic\nnode_groups:\n  gpu: {count: 2, machine_type: a3-highgpu-8g}\n")
    gcpgpu(emu, "up", str(spec))
    found = listed(emu)
    assert sorted(found["network"]) == [f"demo-net-{i}" for i in range(5)]
    assert all(n.mtu == network.MTU for n in found["network"].values())
    assert sorted(found["firewall"]) == sorted([f"demo-net-{i}-internal" for i in range(5)] + ["demo-net-0-ssh"])
    cidrs = [found["subnetwork"][f"demo-net-{i}-us-central1"].ip_cidr_range for i in range(5)]
    assert len(set(cidrs)) == 5
    for vm in emu.instances():
        nics = vm["networkInterfaces"]
        assert [n["network"].rsplit("/", 1)[-1] for n in nics] == [f"demo-net-{i}" for i in range(5)]
        assert [bool(n.get("accessConfigs")) for n in nics] == [True, False, False, False, False]
        assert {n["nicType"] for n in nics} == {"GVNIC"}
    status = json.loads(gcpgpu(emu, "status", str(spec), "--json").output)
    assert all(n["address"].startswith("203.0.113.") for n in status["nodes"])  # the external NIC
    gcpgpu(emu, "down", str(spec))
    assert listed(emu) == {"network": {}, "subnetwork": {}, "firewall": {}}


def test_default_network_creates_no_network_resource(emu, tmp_path):
    spec = write_spec(tmp_path, "")
    gcpgpu(emu, "up", str(spec))
    [vm] = emu.instances()
    assert vm["networkInterfaces"][0]["network"].endswith("/global/networks/default")
    assert not any(c.method_id.startswith(("compute.networks", "compute.subnetworks", "compute.firewalls"))
                   for c in emu.calls)


def test_switching_network_mode_replaces_the_vms(emu, tmp_path):
    spec = write_spec(tmp_path, "")
    gcpgpu(emu, "up", str(spec))
    spec.write_text(spec.read_text() + "network: new\n")
    rows = plan_rows(emu, spec)
    assert ("replace", "instance", "demo-gpu-0000") in rows
    assert ("create", "network", "demo-net-0") in rows
    gcpgpu(emu, "up", str(spec))
    [vm] = emu.instances()
    assert vm["networkInterfaces"][0]["network"].endswith("/global/networks/demo-net-0")


def test_down_without_state_finds_networks_by_their_description(emu, tmp_path, monkeypatch):
    spec = write_spec(tmp_path, "network: new\n")
    gcpgpu(emu, "up", str(spec))
    monkeypatch.setenv("GCPGPU_STATE_DIR", str(tmp_path / "elsewhere"))
    gcpgpu(emu, "down", str(spec))
    assert listed(emu) == {"network": {}, "subnetwork": {}, "firewall": {}}


def test_a_foreign_network_of_the_same_name_is_not_adopted(emu, tmp_path):
    from google.cloud import compute_v1

    clients = ClientFactory(emu.url)
    clients.get(compute_v1.NetworksClient).insert(
        project=PROJECT, network_resource=compute_v1.Network(name="demo-net-0", auto_create_subnetworks=False))
    spec = write_spec(tmp_path, "network: new\n")
    result = gcpgpu(emu, "up", str(spec), expect=1)
    assert "network demo-net-0 exists but is not marked gcpgpu-cluster=demo" in result.output
    assert emu.instances() == []  # later stages did not run


def test_a_network_left_by_a_killed_run_is_adopted(emu, tmp_path):
    from google.cloud import compute_v1

    spec = write_spec(tmp_path, "network: new\n")
    clients = ClientFactory(emu.url)
    clients.get(compute_v1.NetworksClient).insert(project=PROJECT, network_resource=compute_v1.Network(
        name="demo-net-0", auto_create_subnetworks=False, mtu=network.MTU,
        description=network.marker("demo") + " left behind"))
    gcpgpu(emu, "up", str(spec))
    assert [c for c in emu.calls if c.method_id == "compute.networks.insert"][1:] == []  # only ours above
    assert len(emu.instances()) == 1
