"""The static provider: existing hosts in the inventory, login and host-key pinning per host, no
cloud call for up/plan/configure, and `down` leaves the machines alone (no test nodes needed)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gcpgpu.cli import cli
from gcpgpu.emulator import Emulator
from gcpgpu.engine import open_cluster
from gcpgpu.errors import GcpgpuError, SpecError
from gcpgpu.inventory import cluster_inventory
from gcpgpu.plugins import Plugins
from gcpgpu.spec import load_spec

SPEC = """name: onprem
project: local-only
node_groups:
  boxes:
    provider: static
    count: 2
    hosts:
      - {address: 192.0.2.10, name: box-a, gpus: 8}
      - {address: 192.0.2.11}
      - {address: 192.0.2.12, name: spare}
    ssh_user: alice
    ssh_private_key: keys/alice
  cpu:
    provider: static
    hosts: [{address: 192.0.2.20}]
"""


@pytest.fixture
def emu():
    with Emulator(latency=0.01) as emulator:
        yield emulator


@pytest.fixture
def spec_file(tmp_path) -> Path:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "alice").write_text("not a real key\n")
    path = tmp_path / "cluster.yaml"
    path.write_text(SPEC)
    return path


def test_inventory_of_static_hosts(spec_file, tmp_path, emu):
    cluster = open_cluster(str(spec_file), Plugins(), emu.url)
    inventory = cluster_inventory(cluster).script_format()
    # count: the first two hosts of the list; a host without a name gets a VM-like one.
    assert inventory["boxes"]["hosts"] == ["box-a", "onprem-boxes-0001"]
    assert inventory["cpu"]["hosts"] == ["onprem-cpu-0000"]
    assert inventory["all_gpu"]["hosts"] == ["box-a"]
    box = inventory["_meta"]["hostvars"]["box-a"]
    assert box["ansible_host"] == "192.0.2.10" and box["gcpgpu_gpus"] == 8
    assert box["ansible_user"] == "alice"
    assert box["ansible_ssh_private_key_file"] == str(tmp_path / "keys" / "alice")
    assert "HostKeyAlias=gcpgpu-static-box-a" in box["ansible_ssh_common_args"]
    # A group without its own login uses the cluster's user and key.
    cpu = inventory["_meta"]["hostvars"]["onprem-cpu-0000"]
    assert cpu["ansible_user"] == "gcpgpu"
    assert cpu["ansible_ssh_private_key_file"] == str(cluster.keys.private_key)
    assert emu.count() == 0  # no cloud resource behind static hosts


def test_static_cluster_commands_create_and_delete_nothing(spec_file, emu):
    runner = CliRunner()
    for command in (["plan", "--json"], ["up", "--no-configure"], ["status", "--json"]):
        result = runner.invoke(cli, ["--endpoint", emu.url, *command, str(spec_file)])
        assert result.exit_code == 0, result.output
    assert emu.count() == 0
    status = json.loads(runner.invoke(cli, ["--endpoint", emu.url, "status", "--json", str(spec_file)]).output)
    assert [n["name"] for n in status["nodes"]] == ["box-a", "onprem-boxes-0001", "onprem-cpu-0000"]
    down = runner.invoke(cli, ["--endpoint", emu.url, "down", str(spec_file)])
    assert down.exit_code == 0, down.output
    assert "deleted 0 resource(s)" in down.output
    assert "left alone: 3 existing host(s) gcpgpu did not create" in down.output


def test_ssh_config_uses_each_hosts_own_login(spec_file, tmp_path, emu):
    result = CliRunner().invoke(cli, ["--endpoint", emu.url, "ssh-config", str(spec_file)])
    assert result.exit_code == 0, result.output
    config = Path(result.output.strip().split(" ", 1)[1]).read_text()
    block = config.split("Host box-a\n")[1].split("\n\n")[0]
    assert "User alice" in block and f"IdentityFile {tmp_path / 'keys' / 'alice'}" in block
    assert "HostKeyAlias gcpgpu-static-box-a" in block


def test_a_missing_private_key_is_named(spec_file, tmp_path, emu):
    (tmp_path / "keys" / "alice").unlink()
    cluster = open_cluster(str(spec_file), Plugins(), emu.url)
    with pytest.raises(GcpgpuError, match=r"node_groups.boxes.ssh_private_key: .*keys/alice is not a file"):
        cluster.hosts()


@pytest.mark.parametrize("change, expected", [
    (("count: 2", "count: 4"), "node_groups.boxes.count: line 6: is 4 but only 3 host(s) are listed"),
    (("name: spare", "name: box-a"), "host name 'box-a' is used twice"),
    (("192.0.2.20", "192.0.2.11"), "address '192.0.2.11' is listed twice"),
    (("name: spare", "name: bad_name"), "'bad_name' is not a valid host name"),
    (("  cpu:\n    provider: static\n", "  cpu:\n"), "'hosts' is only for existing hosts (provider: static)"),
    (("    hosts: [{address: 192.0.2.20}]\n", ""),
     "node_groups.cpu.hosts: line 13: missing required key 'hosts' (add e.g. `hosts: [{\"address\": \"10.0.0.5\"}]`)"),
    (("{address: 192.0.2.20}", "{adress: 192.0.2.20}"), "unknown key 'adress' (did you mean 'address'?)"),
])
def test_static_groups_are_checked_before_anything_runs(spec_file, change, expected):
    spec_file.write_text(SPEC.replace(*change))
    with pytest.raises(SpecError) as info:
        load_spec(spec_file, Plugins())
    assert expected in str(info.value)
