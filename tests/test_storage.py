"""storage.nfs / storage.gcs: both spellings of the spec, every check with its path and hint, the
names and plays derived from them. No API call anywhere here."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from gcpgpu.cli import cli
from gcpgpu.configure import assemble_playbook
from gcpgpu.emulator import Emulator
from gcpgpu.errors import SpecError
from gcpgpu.plugins import Plugins
from gcpgpu.spec import load_spec
from gcpgpu_plugins.storage import gcsfuse_mount
from gcpgpu_plugins.storage_spec import cluster_network, gcs_mounts, instance_name, nfs_shares

INVALID = sorted((Path(__file__).parent / "storage_specs").glob("*.yaml"))
HEAD = "name: demo\nproject: my-proj\nzone: europe-west4-b\n"


def load(tmp_path: Path, body: str) -> dict:
    path = tmp_path / "cluster.yaml"
    path.write_text(HEAD + body)
    return load_spec(path, Plugins())


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_storage_is_rejected_with_path_line_and_hint(path):
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(SpecError) as info:
        load_spec(path, Plugins())
    assert expected in str(info.value), str(info.value)


def test_invalid_storage_exits_2_before_any_api_call():
    with Emulator(latency=0.05) as emu:
        for path in INVALID[:3]:
            result = CliRunner().invoke(cli, ["--endpoint", emu.url, "up", str(path)])
            assert result.exit_code == 2, result.output
        assert emu.calls == []


def test_env_tool_strings_and_mappings_give_the_same_shares(tmp_path):
    as_string = load(tmp_path, "storage:\n  nfs: /mnt/data:basic_ssd, /mnt/cold:BASIC_HDD:1024\n")
    as_list = load(tmp_path, "storage:\n  nfs:\n    - {path: /mnt/data}\n"
                             "    - /mnt/cold:BASIC_HDD:1024\n")
    assert nfs_shares(as_string) == nfs_shares(as_list) == [
        {"path": "/mnt/data", "tier": "BASIC_SSD", "size_gb": 2560, "share_name": "share1",
         "options": "rw,hard,timeo=600,retrans=3,_netdev,nofail", "zone": "europe-west4-b",
         "location": "europe-west4-b", "network": "default", "instance": "demo-mnt-data"},
        {"path": "/mnt/cold", "tier": "BASIC_HDD", "size_gb": 1024, "share_name": "share1",
         "options": "rw,hard,timeo=600,retrans=3,_netdev,nofail", "zone": "europe-west4-b",
         "location": "europe-west4-b", "network": "default", "instance": "demo-mnt-cold"}]


def test_enterprise_shares_are_regional_and_zone_can_be_chosen(tmp_path):
    spec = load(tmp_path, "storage:\n  nfs:\n    - {path: /mnt/e, tier: ENTERPRISE, size_gb: 1024, "
                          "zone: us-east1-b}\n")
    [share] = nfs_shares(spec)
    assert (share["zone"], share["location"]) == ("us-east1-b", "us-east1")


def test_gcs_strings_and_mappings(tmp_path):
    spec = load(tmp_path, "storage:\n  gcs: 'gs://data:/mnt/data, out:/mnt/out'\n")
    assert [(m["bucket"], m["path"], m["create"], m["location"]) for m in gcs_mounts(spec)] == [
        ("data", "/mnt/data", False, "EUROPE-WEST4"), ("out", "/mnt/out", False, "EUROPE-WEST4")]
    spec = load(tmp_path, "storage:\n  gcs:\n    - {bucket: out, path: /mnt/out, create: true, "
                          "location: us, cache_dir: /mnt/ssd/cache, options: [ro, uid=1000]}\n")
    [mount] = gcs_mounts(spec)
    assert mount["location"] == "US" and mount["force_destroy_all_objects"] is False
    assert gcsfuse_mount(mount) == {
        "bucket": "out", "path": "/mnt/out", "cache_dir": "/mnt/ssd/cache",
        "options": "_netdev,allow_other,file_mode=0664,dir_mode=0775,implicit_dirs,"
                   "cache_dir=/mnt/ssd/cache,ro,uid=1000"}


def test_instance_names_are_valid_and_unique_even_when_long():
    assert instance_name("demo", "/mnt/Shared Data") == "demo-mnt-shared-data"
    long_a = instance_name("c" * 40, "/mnt/" + "a" * 40 + "/x")
    long_b = instance_name("c" * 40, "/mnt/" + "a" * 40 + "/y")
    assert len(long_a) == 63 and long_a != long_b and not long_a.endswith("-")


def test_cluster_network_reads_the_network_plugin_field_defensively():
    assert cluster_network({}) == "default"
    assert cluster_network({"network": "new"}) == "default"  # a mode, not a name
    assert cluster_network({"network": "vpc-a"}) == "vpc-a"
    assert cluster_network({"network": {"mode": "new", "name": "demo-net"}}) == "demo-net"


def test_plays_run_after_the_core_roles_and_take_addresses_from_the_inventory(tmp_path):
    spec = load(tmp_path, "storage:\n  nfs: /mnt/data:BASIC_SSD\n  gcs: bkt1:/mnt/b1\n"
                          "startup_command: echo hi\n")
    playbook = assemble_playbook(spec, Plugins())
    roles = [role["role"] for play in playbook for role in play["roles"]]
    assert roles.index("common") < roles.index("nfs_mount") < roles.index("gcsfuse") \
        < roles.index("startup_command")
    nfs = next(r for p in playbook for r in p["roles"] if r["role"] == "nfs_mount")
    assert nfs["nfs_mount_mounts"] == "{{ gcpgpu_nfs_mounts | default([]) }}"
    gcs = next(r for p in playbook for r in p["roles"] if r["role"] == "gcsfuse")
    assert [m["bucket"] for m in gcs["gcsfuse_mounts"]] == ["bkt1"]
    assert "storage" in nfs["tags"] and "storage" in gcs["tags"]


def test_no_storage_means_no_plays_and_no_cluster_resources(tmp_path):
    spec = load(tmp_path, "")
    plugins = Plugins()
    roles = [r["role"] for p in assemble_playbook(spec, plugins) for r in p["roles"]]
    assert "nfs_mount" not in roles and "gcsfuse" not in roles
    assert plugins.providers["filestore"].cluster_resources(spec) == []
    assert plugins.providers["gcs"].cluster_resources(spec) == []


def test_only_created_buckets_are_resources_and_stages_order_them(tmp_path):
    spec = load(tmp_path, "storage:\n  nfs: /mnt/n:BASIC_HDD:1024\n  gcs:\n    - theirs:/mnt/t\n"
                          "    - {bucket: ours, path: /mnt/o, create: true}\n")
    plugins = Plugins()
    [share] = plugins.providers["filestore"].cluster_resources(spec)
    [bucket] = plugins.providers["gcs"].cluster_resources(spec)
    assert (share.kind, share.name, share.stage) == ("filestore-instance", "demo-mnt-n", 20)
    assert (bucket.kind, bucket.name, bucket.stage) == ("bucket", "ours", 30)
    # A resize changes only the in-place part; a new tier needs a new instance.
    bigger = load(tmp_path, "storage:\n  nfs: /mnt/n:BASIC_HDD:2048\n")
    [resized] = plugins.providers["filestore"].cluster_resources(bigger)
    assert resized.digest == share.digest and resized.update_digest != share.update_digest
    other = load(tmp_path, "storage:\n  nfs: /mnt/n:BASIC_SSD:2560\n")
    assert plugins.providers["filestore"].cluster_resources(other)[0].digest != share.digest
