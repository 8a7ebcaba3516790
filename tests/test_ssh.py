"""Host keys are pinned per instance id: a new instance is welcome, a changed key is refused."""
from __future__ import annotations

import paramiko
import pytest

from gcpgpu.ssh import ClusterKeys, PinnedHostKeyPolicy, host_alias


def test_key_per_cluster_is_private_and_stable(tmp_path):
    keys = ClusterKeys(tmp_path / "k").ensure()
    assert keys.private_key.stat().st_mode & 0o777 == 0o600
    entry = keys.metadata_entry()
    assert entry.startswith("gcpgpu:ssh-ed25519 ") and ClusterKeys(tmp_path / "k").ensure().metadata_entry() == entry


def test_first_key_is_pinned_new_instance_accepted_changed_key_refused(tmp_path):
    keys = ClusterKeys(tmp_path / "k").ensure()
    first = paramiko.RSAKey.generate(1024)
    second = paramiko.RSAKey.generate(1024)
    policy = PinnedHostKeyPolicy(keys.known_hosts, host_alias("111", "vm"))
    policy.missing_host_key(None, "10.0.0.5", first)  # trust on first use, pinned to instance 111
    policy.missing_host_key(None, "10.0.0.5", first)  # same key again: fine
    # The VM was recreated: same address, new instance id, new key -> accepted without complaint.
    PinnedHostKeyPolicy(keys.known_hosts, host_alias("222", "vm")).missing_host_key(None, "10.0.0.5", second)
    # Instance 111 presenting a different key is refused.
    with pytest.raises(paramiko.BadHostKeyException):
        policy.missing_host_key(None, "10.0.0.5", second)
    assert keys.known_hosts.read_text().count("gcpgpu-") == 2
