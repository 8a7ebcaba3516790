"""SSH access to a cluster's nodes: a key per cluster, host keys pinned per instance id.

Host keys are stored in gcpgpu's own known_hosts under the alias ``gcpgpu-<instance id>``
(OpenSSH's HostKeyAlias). A VM recreated at the same address has a new instance id, so it gets a
fresh entry instead of "REMOTE HOST IDENTIFICATION HAS CHANGED"; a different key presented for
the same instance id is still refused. Python (fabric/paramiko) and OpenSSH (ansible, `gcpgpu
ssh`) read and write the same file.
"""
from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gcpgpu.errors import GcpgpuError

KEYS_ENV = "GCPGPU_KEYS_DIR"
DEFAULT_USER = "gcpgpu"
_KEYGEN_LOCK = threading.Lock()


def keys_root() -> Path:
    if os.environ.get(KEYS_ENV):
        return Path(os.environ[KEYS_ENV])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "gcpgpu" / "keys"


def host_alias(instance_id: str, name: str) -> str:
    return f"gcpgpu-{instance_id or name}"


@dataclass
class ClusterKeys:
    """The cluster's key pair and known_hosts, kept outside the state directory."""

    dir: Path
    user: str = DEFAULT_USER
    proxy_command: str = ""

    @classmethod
    def for_spec(cls, spec: dict) -> "ClusterKeys":
        ssh = spec.get("ssh") or {}
        return cls(keys_root() / spec["project"] / spec["name"], ssh.get("user", DEFAULT_USER),
                   ssh.get("proxy_command", ""))

    @property
    def private_key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @functools.cached_property
    def control_dir(self) -> Path:
        """Where ssh keeps the cluster's shared connections (ControlPersist) between commands, as
        Ansible's own default (~/.ansible/cp, 60 s) does: a configure right after an `up` skips
        every handshake. Short, private and per cluster: a socket path must fit in 108 bytes."""
        base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"gcpgpu-cp-{os.getuid()}"
        base.mkdir(exist_ok=True, mode=0o700)
        if base.stat().st_uid != os.getuid() or base.stat().st_mode & 0o077:
            raise GcpgpuError(f"{base} must be a directory only you can use (it holds ssh connections)")
        path = base / hashlib.sha256(str(self.dir.resolve()).encode()).hexdigest()[:12]
        path.mkdir(exist_ok=True, mode=0o700)
        return path

    def ensure(self) -> "ClusterKeys":
        with _KEYGEN_LOCK:  # parallel create batches all ask for the key
            if not self.private_key.exists():
                self._generate()
        return self

    def _generate(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH)
        descriptor = os.open(self.private_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(private)
        self.private_key.with_suffix(".pub").write_text(f"{public.decode()} {self.user}\n")
        self.known_hosts.touch(mode=0o600)

    @property
    def public_key(self) -> str:
        return self.ensure().private_key.with_suffix(".pub").read_text().strip()

    def metadata_entry(self) -> str:
        """The `ssh-keys` metadata line the guest agent turns into a user with this key."""
        return f"{self.user}:{self.public_key}"

    def login_user(self, host) -> str:
        """The host's own login user (an existing machine's), else the cluster's."""
        return getattr(host, "user", "") or self.user

    def identity(self, host) -> Path:
        """The host's own private key (an existing machine's), else the cluster's."""
        own = getattr(host, "identity_file", "")
        return Path(own).expanduser() if own else self.private_key

    def ssh_settings(self, host) -> dict[str, str]:
        """OpenSSH settings for a host: its key, our known_hosts pinned per instance id, and the
        optional ProxyCommand. The one source for `gcpgpu ssh`, ssh-config and the inventory."""
        settings = {"IdentityFile": str(self.identity(host)), "IdentitiesOnly": "yes",
                    "UserKnownHostsFile": str(self.known_hosts),
                    "HostKeyAlias": host_alias(host.instance_id, host.name),
                    "StrictHostKeyChecking": "accept-new", "BatchMode": "yes", "ConnectTimeout": "10"}
        if self.proxy_command:
            settings["ProxyCommand"] = self.proxy_command
        return settings

    def ssh_options(self, host, **overrides) -> list[str]:
        """The settings as `-o Key=Value` arguments (``overrides`` replace or, as None, drop one)."""
        settings = {**self.ssh_settings(host), **overrides}
        return [arg for key, value in settings.items() if value is not None
                for arg in ("-o", f"{key}={value}")]


class PinnedHostKeyPolicy:
    """paramiko policy: accept a first key for an alias and remember it; refuse a different one."""

    _lock = threading.Lock()

    def __init__(self, known_hosts: Path, alias: str):
        self.known_hosts, self.alias = known_hosts, alias

    def missing_host_key(self, client, hostname, key):
        import paramiko

        with self._lock:
            known = paramiko.HostKeys()
            if self.known_hosts.exists():
                known.load(str(self.known_hosts))
            pinned = known.lookup(self.alias)
            if pinned and key.get_name() in pinned:
                if pinned[key.get_name()] != key:
                    raise paramiko.BadHostKeyException(hostname, key, pinned[key.get_name()])
                return
            with open(self.known_hosts, "a") as handle:
                handle.write(f"{self.alias} {key.get_name()} {key.get_base64()}\n")


def wait_for_ssh(keys: ClusterKeys, hosts: list, deadline_s: float = 300.0) -> None:
    """Wait until every host runs a command over SSH (fabric), pinning host keys on the way.

    A host whose pinned instance has a live shared connection (a configure ran in the last
    minute) is ready already: asking its control master costs no handshake."""
    if not hosts:
        return
    pinned = _pinned_aliases(keys.known_hosts)
    with ThreadPoolExecutor(max_workers=min(32, len(hosts))) as pool:
        failures = [f for f in pool.map(lambda h: _wait_one(keys, h, deadline_s, pinned), hosts) if f]
    if failures:
        raise GcpgpuError("SSH did not become ready:\n" + "\n".join(f"  - {f}" for f in failures))


def _pinned_aliases(known_hosts: Path) -> set[str]:
    if not known_hosts.exists():
        return set()
    return {line.split(maxsplit=1)[0] for line in known_hosts.read_text().splitlines() if line.strip()}


def shared_connection_alive(keys: ClusterKeys, host) -> bool:
    """Does ssh's control master for this host (ControlPath ``<control_dir>/%C``, as Ansible is
    told to use) still run?"""
    check = subprocess.run(["ssh", "-O", "check", "-o", f"ControlPath={keys.control_dir}/%C",
                            "-l", keys.login_user(host), host.address],
                           stdin=subprocess.DEVNULL, capture_output=True, check=False)
    return check.returncode == 0


def _wait_one(keys: ClusterKeys, host, deadline_s: float, pinned: set[str]) -> str | None:
    import paramiko
    from fabric import Connection

    if host_alias(host.instance_id, host.name) in pinned and shared_connection_alive(keys, host):
        return None

    deadline = time.monotonic() + deadline_s
    last_error = "no attempt"
    while time.monotonic() < deadline:
        connection = Connection(host.address, user=keys.login_user(host), connect_timeout=5,
                                connect_kwargs={"key_filename": str(keys.identity(host)),
                                                "look_for_keys": False, "allow_agent": False})
        connection.client.set_missing_host_key_policy(
            PinnedHostKeyPolicy(keys.known_hosts, host_alias(host.instance_id, host.name)))
        try:
            connection.run("true", hide=True, timeout=20, in_stream=False)
            return None
        except paramiko.BadHostKeyException as error:
            return (f"{host.name} ({host.address}): host key does not match the one pinned for "
                    f"instance {host.instance_id}: {error}")
        except Exception as error:  # not up yet: refused, timeout, auth not ready
            last_error = f"{type(error).__name__}: {error}"
            time.sleep(1.0)
        finally:
            connection.close()
    return f"{host.name} ({host.address}): not reachable after {deadline_s:.0f}s ({last_error})"
