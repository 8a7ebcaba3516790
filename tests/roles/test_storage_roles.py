"""nfs_mount and gcsfuse on real test nodes.

The nodes have no kernel NFS client, no gcsfuse and no internet. mount(8) hands a `nfs` or
`gcsfuse` fstab line to the helper /sbin/mount.<type>, so stand-in helpers record the arguments
mount(8) gives them and mount a tmpfs in place of the share: the roles' real path runs (package
found, fstab line written, `mount <path>` parsed by mount(8), mount visible in /proc/mounts),
only the network filesystem itself is fake. The install tasks (apt, Google's repository) run
nowhere here.
"""
from __future__ import annotations

import pytest

from .conftest import ok, read_node, run_playbook

NFS = [{"server": "10.64.0.2", "export": "/share1", "path": "/mnt/shared",
        "options": "rw,hard,timeo=600,retrans=3,_netdev,nofail"}]
GCS = [{"bucket": "demo-results", "path": "/mnt/results", "cache_dir": "/var/cache/gcsfuse/results",
        "options": "rw,_netdev,allow_other,file_mode=0664,dir_mode=0775,implicit_dirs,"
                   "cache_dir=/var/cache/gcsfuse/results"}]
# Records its arguments, then mounts a tmpfs where the share would be.
STAND_IN = """#!/bin/sh
echo "$@" >> /var/log/{name}.calls
exec mount -t tmpfs {name}-standin "$2"
"""


def play(role: str, **variables) -> list[dict]:
    return [{"name": role, "hosts": "all", "gather_facts": False, "become": True,
             "roles": [{"role": role, **variables}]}]


@pytest.fixture(scope="module")
def stand_ins(cluster):
    for name in cluster.names:
        node = cluster.node(name)
        for helper in ("mount.nfs", "mount.gcsfuse"):
            script = STAND_IN.format(name=helper)
            r = node.run(f"cat > /usr/sbin/{helper} && chmod 755 /usr/sbin/{helper}", input=script)
            assert r.returncode == 0, r.stderr
        assert node.run("install -m 755 /dev/null /usr/bin/gcsfuse").returncode == 0
    return cluster


def fstab_lines(cluster, name: str, path: str) -> list[str]:
    return [line for line in read_node(cluster, name, "/etc/fstab").splitlines()
            if line.split()[1:2] == [path]]


def mounted(cluster, name: str) -> list[str]:
    return [line.split()[1] for line in cluster.node(name).run("cat /proc/mounts").stdout.splitlines()]


def test_nfs_mount_writes_fstab_mounts_and_is_idempotent(stand_ins):
    cluster = stand_ins
    inventory = cluster.inventory()
    first = ok(run_playbook(cluster.workdir / "nfs", play("nfs_mount", nfs_mount_mounts=NFS), inventory))
    # mount point, fstab line, mount: 3 changes per node; no apt call (the helper exists).
    assert first.per_host("changed") == {n: 3 for n in cluster.names}, first.stats
    assert not [e for e in first.events if e.get("event_data", {}).get("task") == "Install the NFS client"
                and e.get("event") == "runner_on_ok"]
    for name in cluster.names:
        assert fstab_lines(cluster, name, "/mnt/shared") == [
            "10.64.0.2:/share1 /mnt/shared nfs rw,hard,timeo=600,retrans=3,_netdev,nofail 0 0"]
        assert "UNCONFIGURED FSTAB" in read_node(cluster, name, "/etc/fstab")  # the rest is kept
        calls = read_node(cluster, name, "/var/log/mount.nfs.calls").splitlines()
        assert calls == ["10.64.0.2:/share1 /mnt/shared -o rw,hard,timeo=600,retrans=3,_netdev,nofail"]
        assert "/mnt/shared" in mounted(cluster, name)

    second = ok(run_playbook(cluster.workdir / "nfs", play("nfs_mount", nfs_mount_mounts=NFS), inventory))
    assert second.total("changed") == 0, second.stats

    # A new address (share re-created) replaces the line; the mount is not repeated.
    moved = [{**NFS[0], "server": "10.64.0.10"}]
    ok(run_playbook(cluster.workdir / "nfs", play("nfs_mount", nfs_mount_mounts=moved), inventory))
    for name in cluster.names:
        assert fstab_lines(cluster, name, "/mnt/shared") == [
            "10.64.0.10:/share1 /mnt/shared nfs rw,hard,timeo=600,retrans=3,_netdev,nofail 0 0"]
        assert len(read_node(cluster, name, "/var/log/mount.nfs.calls").splitlines()) == 1


def test_nfs_mount_check_mode_and_fstab_only_change_nothing_mounted(stand_ins):
    cluster = stand_ins
    inventory = cluster.inventory()
    share = [{**NFS[0], "path": "/mnt/checked"}]
    before = read_node(cluster, cluster.names[0], "/etc/fstab")
    checked = ok(run_playbook(cluster.workdir / "nfs-check", play("nfs_mount", nfs_mount_mounts=share),
                              inventory, check=True))
    assert checked.total("changed") > 0  # it reports what it would do...
    assert read_node(cluster, cluster.names[0], "/etc/fstab") == before  # ...and does nothing
    assert "/mnt/checked" not in mounted(cluster, cluster.names[0])

    present = play("nfs_mount", nfs_mount_mounts=share, nfs_mount_state="present")
    ok(run_playbook(cluster.workdir / "nfs-check", present, inventory))
    assert fstab_lines(cluster, cluster.names[0], "/mnt/checked")
    assert "/mnt/checked" not in mounted(cluster, cluster.names[0])
    again = ok(run_playbook(cluster.workdir / "nfs-check", present, inventory))
    assert again.total("changed") == 0, again.stats


def test_gcsfuse_writes_fstab_mounts_and_is_idempotent(stand_ins):
    cluster = stand_ins
    inventory = cluster.inventory()
    first = ok(run_playbook(cluster.workdir / "gcs", play("gcsfuse", gcsfuse_mounts=GCS), inventory))
    # mount point, cache dir, fstab line, mount; the repository and apt tasks were not included.
    assert first.per_host("changed") == {n: 4 for n in cluster.names}, first.stats
    assert not [e for e in first.events if e.get("event_data", {}).get("task") == "Install gcsfuse"]
    options = GCS[0]["options"]
    for name in cluster.names:
        assert fstab_lines(cluster, name, "/mnt/results") == [
            f"demo-results /mnt/results gcsfuse {options} 0 0"]
        [call] = read_node(cluster, name, "/var/log/mount.gcsfuse.calls").splitlines()
        bucket, path, flag, given = call.split()  # mount(8) may reorder the options
        assert (bucket, path, flag) == ("demo-results", "/mnt/results", "-o")
        assert sorted(given.split(",")) == sorted(options.split(","))
        cache = cluster.node(name).path("/var/cache/gcsfuse/results")
        assert cache.is_dir() and cache.stat().st_mode & 0o777 == 0o700
        assert "/mnt/results" in mounted(cluster, name)
    second = ok(run_playbook(cluster.workdir / "gcs", play("gcsfuse", gcsfuse_mounts=GCS), inventory))
    assert second.total("changed") == 0, second.stats


def test_gcsfuse_check_mode_changes_nothing(stand_ins):
    cluster = stand_ins
    mount = [{**GCS[0], "path": "/mnt/checked-gcs", "cache_dir": ""}]
    before = read_node(cluster, cluster.names[1], "/etc/fstab")
    ok(run_playbook(cluster.workdir / "gcs-check", play("gcsfuse", gcsfuse_mounts=mount),
                    cluster.inventory(), check=True))
    assert read_node(cluster, cluster.names[1], "/etc/fstab") == before
    assert not cluster.node(cluster.names[1]).path("/mnt/checked-gcs").exists()
