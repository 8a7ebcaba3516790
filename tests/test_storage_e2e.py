"""End to end on real test nodes: a Filestore share's address travels from the emulated API
through the inventory to every node's fstab, and the bucket mount follows the spec; a second
configure changes nothing; down leaves nothing labelled. Stand-in mount helpers replace the NFS
and FUSE kernel parts the nodes lack (see tests/roles/test_storage_roles.py)."""
from __future__ import annotations

import os

from click.testing import CliRunner

from gcpgpu.cli import cli, configure_hosts
from gcpgpu.emulator.filestore import FilestoreService
from gcpgpu.emulator.storage import StorageService
from gcpgpu.engine import open_cluster
from gcpgpu.plugins import Plugins

STAND_IN = """#!/bin/sh
echo "$@" >> /var/log/{name}.calls
exec mount -t tmpfs {name}-standin "$2"
"""
SPEC = """name: st
project: demo-project
zone: us-central1-a
node_groups:
  cpu: {count: 2, machine_type: n1-standard-4}
ssh: {timeout_s: 60}
storage:
  nfs: /mnt/shared:BASIC_HDD:1024
  gcs:
    - {bucket: st-results, path: /mnt/results, create: true}
"""




def gcpgpu(*args, expect=0):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def configure(spec):
    cluster = open_cluster(str(spec), Plugins(), os.environ["GCPGPU_ENDPOINT"])
    return configure_hosts(cluster, cluster.hosts())


def test_share_address_reaches_every_node_and_reconfigure_changes_nothing(node_rig, tmp_path):
    emu, pool = node_rig
    spec = tmp_path / "cluster.yaml"
    spec.write_text(SPEC)
    gcpgpu("up", str(spec), "--no-configure")
    names = ["st-cpu-0000", "st-cpu-0001"]
    for name in names:
        node = pool.node(name)
        for helper in ("mount.nfs", "mount.gcsfuse"):
            node.run(f"cat > /usr/sbin/{helper} && chmod 755 /usr/sbin/{helper}",
                     input=STAND_IN.format(name=helper), check=True)
        node.run("install -m 755 /dev/null /usr/bin/gcsfuse", check=True)

    gcpgpu("configure", str(spec))
    [share] = next(s for s in emu.services if isinstance(s, FilestoreService)).snapshot()
    address = share["networks"][0]["ipAddresses"][0]
    for name in names:
        fstab = pool.node(name).path("/etc/fstab").read_text()
        assert f"{address}:/share1 /mnt/shared nfs rw,hard,timeo=600,retrans=3,_netdev,nofail 0 0" in fstab
        assert ("st-results /mnt/results gcsfuse rw,_netdev,allow_other,file_mode=0664,"
                "dir_mode=0775,implicit_dirs 0 0") in fstab
        assert pool.node(name).path("/var/log/mount.nfs.calls").read_text().startswith(
            f"{address}:/share1 /mnt/shared -o ")
        assert pool.node(name).path("/var/log/mount.gcsfuse.calls").exists()

    second = configure(spec)
    assert set(second.ok) == set(names) and sum(second.changed.values()) == 0, second.changed

    gcpgpu("down", str(spec))
    assert next(s for s in emu.services if isinstance(s, FilestoreService)).snapshot() == []
    assert next(s for s in emu.services if isinstance(s, StorageService)).snapshot() == []
    assert pool.nodes() == []
