"""Real local "test nodes" for emulated VMs.

Each emulated GCE instance can be bound to a node: a tiny Linux "VM" made of
namespaces on this machine, reachable over SSH like the real thing.

A node is:

* its own network namespace (``ip netns``) with ``eth0`` = one end of a veth
  pair whose other end sits on a pool bridge (``gcpgpu-br0`` = ``10.200.0.1/24``
  by default; bridge name and subnet are configurable so several pools can
  coexist).  No default route, no DNS: nothing a node sends can leave the
  bridge.
* private mount, UTS, IPC and PID namespaces; an overlay root (lowerdir=/ and
  a per-node upper dir), fresh proc and sysfs, /dev rbound from the host with
  a private /dev/shm, tmpfs on /run and /tmp, then ``chroot``.  All mounts live
  only in the node's mount namespace, so they vanish with the node and never
  show up in the host's mount table.
* OpenSSH's ``sshd -D`` as the node's init (pid 1 of its PID namespace) with
  its own config and its own ed25519 host key, generated for every acquire.
* users created from the instance metadata key ``ssh-keys`` the way the GCE
  guest agent does (``USER:ssh-ed25519 AAAA... comment``, one per line): home
  directory, authorized key and passwordless sudo.  The user exists inside
  the node only.

Public API (the emulator binds instances through ``acquire``/``release``)::

    ok, reason = nodes_supported()
    pool = NodePool(workdir, bridge="gcpgpu-br0", subnet="10.200.0", first_host=10)
    ip = pool.acquire(instance_name, instance)   # -> "10.200.0.10"
    pool.node(instance_name)                      # -> Node
    pool.release(instance_name)
    pool.close()                                  # also a context manager and atexit hook

Nothing here is pytest-specific; the ``node_pool`` fixture lives in tests.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import errno
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["NodePool", "Node", "NodeError", "nodes_supported"]

_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_BRIDGE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
# Characters that would break the overlay mount option string or the shell.
_BAD_PATH_CHARS = set(",:\\ \t\n'\"=")


class NodeError(RuntimeError):
    """A node could not be created or cleaned up."""


def _which(prog: str) -> str | None:
    return shutil.which(prog, path=os.environ.get("PATH", "") + ":" + _SBIN_PATH)


_support_cache: tuple[bool, str] | None = None
_support_lock = threading.Lock()


def nodes_supported() -> tuple[bool, str]:
    """Return ``(True, "")`` when nodes can be made here, else ``(False, reason)``.

    The reason is meant for people: it says what is missing and how to get it.
    The (cheap) probe result is cached for the life of the process.
    """
    global _support_cache
    with _support_lock:
        if _support_cache is None:
            _support_cache = _probe_support()
        return _support_cache


def _probe_support() -> tuple[bool, str]:
    import sys

    if not sys.platform.startswith("linux"):
        return False, f"test nodes need Linux namespaces; this is {sys.platform}"
    if os.geteuid() != 0:
        return False, "test nodes need root (network/mount/PID namespaces, overlay mounts)"
    missing = [p for p in ("ip", "unshare", "nsenter", "mount", "chroot", "ssh-keygen") if not _which(p)]
    if not _which("sshd"):
        missing.append("sshd (apt-get install openssh-server)")
    if missing:
        return False, "missing programs: " + ", ".join(missing) + " (apt-get install iproute2 util-linux openssh-server)"
    try:
        pwd.getpwnam("sshd")
    except KeyError:
        return False, "sshd privilege-separation user 'sshd' is missing (apt-get install openssh-server)"
    try:
        fs = Path("/proc/filesystems").read_text()
    except OSError as exc:
        return False, f"cannot read /proc/filesystems: {exc}"
    if "overlay" not in fs.split():
        # The module may still be autoloadable; try it before giving up.
        if _which("modprobe"):
            subprocess.run(["modprobe", "overlay"], capture_output=True, check=False)
        if "overlay" not in Path("/proc/filesystems").read_text().split():
            return False, "the kernel has no overlay filesystem (modprobe overlay)"
    probe = subprocess.run(
        [_which("unshare") or "unshare", "--net", "--mount", "--uts", "--ipc", "--pid", "--fork", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return False, "cannot create namespaces here (unshare failed: " + probe.stderr.strip() + ")"
    return True, ""


@dataclass
class Node:
    """One running node.  ``pid`` is the host PID of its init (sshd)."""

    name: str
    ip: str
    pid: int
    netns: str
    veth: str
    dir: Path
    host_public_key: str
    users: list[str] = field(default_factory=list)
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _pidfd: int | None = field(default=None, repr=False)
    _log: Any = field(default=None, repr=False)

    @property
    def root(self) -> Path:
        """The node's ``/`` as seen from the host (through /proc/PID/root)."""
        return Path(f"/proc/{self.pid}/root")

    @property
    def upper(self) -> Path:
        """The overlay upper dir: every file the node changed, seen from the host."""
        return self.dir / "upper"

    @property
    def log_path(self) -> Path:
        """sshd's stderr (``-e``)."""
        return self.dir / "sshd.log"

    def path(self, path: str | os.PathLike) -> Path:
        """Host path through which the node's file ``path`` can be read or written."""
        rel = str(path).lstrip("/")
        return self.root / rel if rel else self.root

    def run(self, argv: Sequence[str] | str, *, timeout: float | None = 60, check: bool = False,
            input: str | bytes | None = None, text: bool = True, env: Mapping[str, str] | None = None,
            ) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the node (all its namespaces and its root), as root.

        A string is run with ``/bin/sh -c``.  Output is captured.
        """
        if isinstance(argv, str):
            argv = ["/bin/sh", "-c", argv]
        cmd = [_which("nsenter") or "nsenter", "-t", str(self.pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w", "--", *argv]
        run_env = {"PATH": _SBIN_PATH, "LANG": "C.UTF-8", "HOME": "/root"}
        if env:
            run_env.update(env)
        return subprocess.run(cmd, capture_output=True, timeout=timeout, check=check, input=input, text=text,
                              env=run_env)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None


def _run(argv: Sequence[str], *, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(list(argv), input=input, capture_output=True, text=True, check=False,
                         env={"PATH": _SBIN_PATH, "LANG": "C"})
    if check and res.returncode != 0:
        cmd = " ".join(argv)
        extra = f" <<< {input.strip()!r}" if input else ""
        raise NodeError(f"`{cmd}`{extra} failed (exit {res.returncode}): {res.stderr.strip()}")
    return res


def _netns_inode() -> int:
    return os.stat("/proc/self/ns/net").st_ino


# The node's init script.  Runs as pid 1 of the node's fresh PID namespace,
# inside its network/mount/UTS/IPC namespaces, before the chroot.
_INIT_SCRIPT = r"""
set -eu
umask 022
M=$1; U=$2; W=$3; NAME=$4
mount -t overlay gcpgpu-node -o "lowerdir=/,upperdir=$U,workdir=$W" "$M"
mount -t proc -o nosuid,nodev,noexec proc "$M/proc"
mount -t sysfs -o nosuid,nodev,noexec sysfs "$M/sys" 2>/dev/null || mount --rbind /sys "$M/sys"
mount --rbind /dev "$M/dev"
mount -t tmpfs -o nosuid,nodev,mode=1777 shm "$M/dev/shm"
mount -t tmpfs -o nosuid,nodev,mode=755 run "$M/run"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmp "$M/tmp"
mkdir -m 755 "$M/run/sshd"
echo "$NAME" > /proc/sys/kernel/hostname
exec chroot "$M" /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config
"""

_SSHD_CONFIG = """\
# Written by gcpgpu's test-node pool: this node's sshd runs as its init.
Port 22
ListenAddress {ip}:22
AddressFamily inet
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile none
UsePAM no
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthenticationMethods publickey
AuthorizedKeysFile .ssh/authorized_keys
StrictModes yes
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 64:30:128
MaxSessions 64
LoginGraceTime 30
ClientAliveInterval 0
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
LogLevel INFO
"""


def _parse_ssh_keys(instance: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """(user, public key line) pairs from ``metadata.items[key=ssh-keys]``."""
    if not instance:
        return []
    items = ((instance.get("metadata") or {}).get("items")) or []
    out: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, Mapping) or item.get("key") not in ("ssh-keys", "sshKeys"):
            continue
        for line in str(item.get("value") or "").splitlines():
            line = line.strip()
            if not line or line.startswith("#") or ":" not in line:
                continue
            user, key = line.split(":", 1)
            user, key = user.strip(), key.strip()
            if not _USER_RE.match(user) or not key:
                continue
            out.append((user, key))
    return out


def _project_zone(instance: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    for field_name in ("selfLink", "zone"):
        m = re.search(r"projects/([^/]+)/zones/([^/]+)", str((instance or {}).get(field_name) or ""))
        if m:
            return m.group(1), m.group(2)
    return None, None


class NodePool:
    """A set of nodes on one bridge.  Thread-safe; see the module docstring."""

    def __init__(self, workdir: Path | str, bridge: str = "gcpgpu-br0", subnet: str = "10.200.0",
                 first_host: int = 10, *, start_timeout: float = 5.0) -> None:
        ok, reason = nodes_supported()
        if not ok:
            raise NodeError(f"test nodes are not supported here: {reason}")
        if not _BRIDGE_RE.match(bridge):
            raise ValueError(f"bridge name {bridge!r}: 1-15 characters of [A-Za-z0-9_.-]")
        parts = subnet.split(".")
        if len(parts) != 3 or not all(p.isdigit() and 0 <= int(p) <= 255 for p in parts):
            raise ValueError(f"subnet {subnet!r}: give the first three octets of a /24, e.g. '10.200.0'")
        if not 2 <= first_host <= 254:
            raise ValueError(f"first_host {first_host}: must be within 2..254 (.1 is the bridge)")
        self.workdir = Path(workdir).resolve()
        if _BAD_PATH_CHARS & set(str(self.workdir)):
            raise ValueError(f"workdir {self.workdir} contains characters overlayfs options cannot carry "
                             "(comma, colon, backslash, quotes, '=' or whitespace)")
        self.bridge = bridge
        self.subnet = subnet
        self.first_host = first_host
        self.start_timeout = start_timeout
        self.gateway = f"{subnet}.1"
        tag = f"{zlib.crc32(bridge.encode()):08x}"[:6]
        # veth names are per network namespace (15 chars max): "v<crc6>-<host>".
        self._veth_prefix = f"v{tag}-"
        # ip-netns names live in the (shared) mount namespace, so they carry the
        # inode of the network namespace the bridge lives in: a pool run inside
        # `unshare --net` never collides with one on the host.
        self._netns_prefix = f"{bridge}-{_netns_inode()}-"
        self._lock = threading.RLock()
        self._nodes: dict[str, Node] = {}
        self._starting: dict[str, int] = {}  # name -> host number, while acquire runs
        self._used_hosts: set[int] = set()
        self._closed = False
        self._bridge_up = False
        self._init_script = self.workdir / "node-init.sh"
        with self._lock:
            self.workdir.mkdir(parents=True, exist_ok=True)
            (self.workdir / "nodes").mkdir(exist_ok=True)
            self._init_script.write_text(_INIT_SCRIPT)
            self._cleanup_stale()
            self._ensure_bridge()
        atexit.register(self.close)

    # ------------------------------------------------------------------ API

    def acquire(self, instance_name: str, instance: Mapping[str, Any] | None = None) -> str:
        """Create and start the node for ``instance_name``; return its IP.

        Node names are unique per pool: acquiring a name that already has a
        node raises NodeError (release it first; a recreated VM then gets a
        new host key and an empty root).
        """
        if not _NAME_RE.match(instance_name or ""):
            raise ValueError(f"instance name {instance_name!r} is not a valid hostname (1-63 of [A-Za-z0-9-])")
        instance = instance or {}
        with self._lock:
            if self._closed:
                raise NodeError("node pool is closed")
            if instance_name in self._nodes:
                raise NodeError(f"instance {instance_name} already has a node ({self._nodes[instance_name].ip}); "
                                "release it first")
            if instance_name in self._starting:
                raise NodeError(f"node {instance_name} is already being started")
            self._ensure_bridge()
            host = next((h for h in range(self.first_host, 255) if h not in self._used_hosts), None)
            if host is None:
                raise NodeError(f"no free address left in {self.subnet}.0/24 from .{self.first_host}")
            self._used_hosts.add(host)
            self._starting[instance_name] = host
        node: Node | None = None
        try:
            node = self._start(instance_name, host, instance)
        except BaseException:
            with self._lock:
                self._starting.pop(instance_name, None)
                self._used_hosts.discard(host)
            self._teardown(instance_name, host, node)
            self._remove_bridge_if_idle()
            raise
        with self._lock:
            self._starting.pop(instance_name, None)
            closed = self._closed
            if not closed:
                self._nodes[instance_name] = node
        if closed:
            self._teardown(instance_name, host, node)
            self._remove_bridge_if_idle()
            raise NodeError("node pool was closed while the node was starting")
        return node.ip

    def release(self, instance_name: str) -> None:
        """Stop the node and forget all it wrote; unknown names are ignored."""
        with self._lock:
            node = self._nodes.pop(instance_name, None)
        if node is None:
            return
        host = int(node.ip.rsplit(".", 1)[1])
        try:
            self._teardown(instance_name, host, node)
        finally:
            with self._lock:
                self._used_hosts.discard(host)

    def snapshot(self, instance_name: str, image: str) -> None:
        """Keep a copy of a node's files (its "boot disk") as ``image``: nodes of VMs that boot
        from that image start from it (the emulator calls this when images.insert is done)."""
        dest = self._image_dir(image)
        if dest.exists():
            _rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        _run(["cp", "-a", str(self.node(instance_name).upper), str(dest)])

    def _image_dir(self, image: str) -> Path:
        return self.workdir / "images" / image.replace("/", "__")

    def node(self, instance_name: str) -> Node:
        with self._lock:
            try:
                return self._nodes[instance_name]
            except KeyError:
                raise KeyError(f"no node for instance {instance_name!r}") from None

    def nodes(self) -> list[Node]:
        with self._lock:
            return list(self._nodes.values())

    def __contains__(self, instance_name: object) -> bool:
        return instance_name in self._nodes

    def close(self) -> None:
        """Release every node and remove the bridge.  Idempotent."""
        with self._lock:
            already = self._closed
            self._closed = True
            names = list(self._nodes)
        if not already:
            atexit.unregister(self.close)
        errors: list[str] = []
        for name in names:
            try:
                self.release(name)
            except Exception as exc:  # keep going: leave as little as possible behind
                errors.append(f"{name}: {exc}")
        try:
            self._remove_bridge_if_idle()
        except Exception as exc:
            errors.append(str(exc))
        if errors:
            raise NodeError("closing the node pool left errors: " + "; ".join(errors))

    def __enter__(self) -> "NodePool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ internals

    def _remove_bridge_if_idle(self) -> None:
        # Nodes still starting in other threads tear themselves down when they
        # see _closed; the last one out removes the bridge.
        with self._lock:
            if not self._closed or self._starting or self._nodes:
                return
            self._cleanup_stale()
            # (Not /sys/class/net: under `unshare --net` the host's sysfs shows another netns.)
            _run(["ip", "link", "del", self.bridge], check=False)
            self._bridge_up = False

    def _netns_name(self, host: int) -> str:
        return f"{self._netns_prefix}{host}"

    def _veth_name(self, host: int) -> str:
        return f"{self._veth_prefix}{host}"

    def _ensure_bridge(self) -> None:
        if self._bridge_up:
            return
        br = self.bridge
        # Two pools must not share a subnet in one network namespace (routes would clash).
        res = _run(["ip", "-o", "-4", "addr", "show", "to", f"{self.subnet}.0/24"], check=False)
        for line in res.stdout.splitlines():
            dev = line.split()[1]
            if dev != br:
                raise NodeError(f"subnet {self.subnet}.0/24 is already used by interface {dev}; "
                                "give this pool another subnet")
        if _run(["ip", "link", "show", "dev", br], check=False).returncode != 0:
            _run(["ip", "link", "add", br, "type", "bridge"])
        ipv6 = Path(f"/proc/sys/net/ipv6/conf/{br}/disable_ipv6")
        if ipv6.exists():
            ipv6.write_text("1\n")  # no IPv6 chatter on the test bridge
        _run(["ip", "addr", "replace", f"{self.gateway}/24", "dev", br])
        _run(["ip", "link", "set", "dev", br, "up"])
        self._bridge_up = True

    def _cleanup_stale(self) -> None:
        """Remove what a crashed run with the same bridge name left behind."""
        # 1. Named network namespaces of this pool (this netns) or of a pool whose
        #    parent netns no longer exists (a crashed `unshare --net` CI run).
        netns_dir = Path("/run/netns")
        names = sorted(p.name for p in netns_dir.iterdir()) if netns_dir.is_dir() else []
        pat = re.compile(rf"^{re.escape(self.bridge)}-(\d+)-(\d+)$")
        live_netns: set[int] | None = None
        for name in names:
            m = pat.match(name)
            if not m:
                continue
            if not name.startswith(self._netns_prefix):
                if live_netns is None:
                    live_netns = _live_netns_inodes()
                if int(m.group(1)) in live_netns:
                    continue  # another live pool, e.g. a concurrent run in another netns
            self._kill_netns(name)
            _run(["ip", "netns", "del", name], check=False)
        # 2. Host-side veths (named per this netns) and node directories.
        res = _run(["ip", "-o", "link", "show"], check=False)
        for line in res.stdout.splitlines():
            m = re.match(r"^\d+:\s+([^:@\s]+)", line)
            if m and m.group(1).startswith(self._veth_prefix):
                _run(["ip", "link", "del", m.group(1)], check=False)
        with self._lock:
            live_dirs = {n.dir.name for n in self._nodes.values()} | set(self._starting)
        nodes_dir = self.workdir / "nodes"
        if nodes_dir.is_dir():
            for d in nodes_dir.iterdir():
                if d.name not in live_dirs:
                    _rmtree(d)

    def _kill_netns(self, netns: str) -> None:
        res = _run(["ip", "netns", "pids", netns], check=False)
        pids = [int(p) for p in res.stdout.split() if p.isdigit()]
        # PID-namespace inits first, so that their parents (unshare) can reap them.
        inits = [p for p in pids if _is_pidns_init(p)]
        for group in (inits, pids):
            for pid in group:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if group is inits and inits:
                until = time.monotonic() + 1
                while any(_pid_alive(p) for p in inits) and time.monotonic() < until:
                    time.sleep(0.005)
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _pid_alive(p)]
            if pids:
                time.sleep(0.01)

    def _prepare_root(self, name: str, ip: str, upper: Path, instance: Mapping[str, Any]) -> tuple[str, list[str]]:
        """Write the node's own files into its upper dir (before it is mounted). A node whose VM
        boots from an image made of another node (``snapshot``) starts from that node's files."""
        seed = self._image_dir(instance.get("_sourceImage") or "")
        seeded = bool(instance.get("_sourceImage")) and seed.exists()
        if seeded:
            _run(["cp", "-a", str(seed), str(upper)])
        else:
            upper.mkdir(mode=0o755)
        os.chmod(upper, 0o755)
        ssh_dir = _mkdirs_like(upper, "etc/ssh", default_mode=0o755)
        for old_key in ssh_dir.glob("ssh_host_*"):  # a new machine gets new host keys
            old_key.unlink()
        key = ssh_dir / "ssh_host_ed25519_key"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}", "-f", str(key)])
        host_pub = (ssh_dir / "ssh_host_ed25519_key.pub").read_text().strip()
        (ssh_dir / "sshd_config").write_text(_SSHD_CONFIG.format(ip=ip))
        etc = upper / "etc"
        (etc / "hostname").write_text(name + "\n")
        project, zone = _project_zone(instance)
        fqdn = f"{name}.{zone}.c.{project}.internal " if project and zone else ""
        header = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                  f"{ip}\t{fqdn}{name}  # Added by gcpgpu test nodes"]
        # Like the guest agent: only this machine's own line is ours; an image keeps the rest.
        kept = [line for line in ((etc / "hosts").read_text().splitlines() if seeded else [])
                if line not in header[:2] and "# Added by gcpgpu test nodes" not in line]
        (etc / "hosts").write_text("\n".join(header + kept) + "\n")
        # No DNS in a node: an empty resolv.conf makes look-ups fail at once, locally.
        (etc / "resolv.conf").write_text("# gcpgpu test node: no DNS\n")
        (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
        users = self._create_users(upper, _parse_ssh_keys(instance))
        return host_pub, users

    def _create_users(self, upper: Path, keys: list[tuple[str, str]]) -> list[str]:
        """What the GCE guest agent does with ``ssh-keys``: user, key, sudo."""
        if not keys:
            return []
        by_user: dict[str, list[str]] = {}
        for user, key in keys:
            by_user.setdefault(user, []).append(key)
        passwd = Path("/etc/passwd").read_text().splitlines()
        group = Path("/etc/group").read_text().splitlines()
        shadow = _read_lines("/etc/shadow")
        gshadow = _read_lines("/etc/gshadow")
        entries = {line.split(":")[0]: line.split(":") for line in passwd if line.count(":") >= 6}
        used_uids = {int(f[2]) for f in entries.values() if f[2].isdigit()}
        used_gids = {int(line.split(":")[2]) for line in group if line.count(":") >= 3 and line.split(":")[2].isdigit()}
        groups_by_name = {line.split(":")[0] for line in group}
        days = (_dt.date.today() - _dt.date(1970, 1, 1)).days
        changed = False
        for user in by_user:
            if user in entries:
                continue
            uid = max([u for u in used_uids if 1000 <= u < 60000], default=999) + 1
            gid = uid
            while gid in used_gids:
                gid += 1
            used_uids.add(uid)
            used_gids.add(gid)
            home = f"/home/{user}"
            entries[user] = [user, "x", str(uid), str(gid), "", home, "/bin/bash"]
            passwd.append(":".join(entries[user]))
            if user not in groups_by_name:
                group.append(f"{user}:x:{gid}:")
                gshadow.append(f"{user}:!::")
                groups_by_name.add(user)
            # "*": no password, but not "locked" (sshd refuses "!" accounts without PAM).
            shadow.append(f"{user}:*:{days}:0:99999:7:::")
            changed = True
        if changed:
            _write_like(upper, "etc/passwd", "\n".join(passwd) + "\n")
            _write_like(upper, "etc/group", "\n".join(group) + "\n")
            _write_like(upper, "etc/shadow", "\n".join(shadow) + "\n", default_mode=0o640)
            if Path("/etc/gshadow").exists():
                _write_like(upper, "etc/gshadow", "\n".join(gshadow) + "\n", default_mode=0o640)
        sudoers = _mkdirs_like(upper, "etc/sudoers.d", default_mode=0o750)
        for user, user_keys in by_user.items():
            fields = entries[user]
            uid, gid, home = int(fields[2]), int(fields[3]), fields[5] or f"/home/{user}"
            home_rel = home.lstrip("/")
            parent_rel = os.path.dirname(home_rel)
            if parent_rel:
                _mkdirs_like(upper, parent_rel, default_mode=0o755)
            home_dir = upper / home_rel
            fresh = not Path(home).exists()
            home_dir.mkdir(mode=0o755, exist_ok=True)
            if fresh:
                _copy_skel(home_dir, uid, gid)
                os.chown(home_dir, uid, gid)
                os.chmod(home_dir, 0o755)
            ssh = home_dir / ".ssh"
            ssh.mkdir(mode=0o700, exist_ok=True)
            os.chown(ssh, uid, gid)
            os.chmod(ssh, 0o700)
            ak = ssh / "authorized_keys"
            ak.write_text("\n".join(user_keys) + "\n")
            os.chown(ak, uid, gid)
            os.chmod(ak, 0o600)
            rule = sudoers / user.replace(".", "_")  # sudo skips files containing '.'
            rule.write_text(f"{user} ALL=(ALL:ALL) NOPASSWD:ALL\n")
            os.chown(rule, 0, 0)
            os.chmod(rule, 0o440)
        return list(by_user)

    def _start(self, name: str, host: int, instance: Mapping[str, Any]) -> Node:
        ip = f"{self.subnet}.{host}"
        netns, veth = self._netns_name(host), self._veth_name(host)
        ndir = self.workdir / "nodes" / name
        if ndir.exists():
            _rmtree(ndir)
        ndir.mkdir(parents=True)
        upper, work, merged = ndir / "upper", ndir / "work", ndir / "merged"
        work.mkdir()
        merged.mkdir()
        host_pub, users = self._prepare_root(name, ip, upper, instance)

        # Network: a named netns with eth0 on the bridge, no route out, no IPv6
        # link-local chatter (addrgenmode none).
        v6 = Path("/proc/sys/net/ipv6").exists()
        host_side = (f"netns add {netns}\n"
                     f"link add {veth} type veth peer name eth0 netns {netns}\n"
                     + (f"link set dev {veth} addrgenmode none\n" if v6 else "")
                     + f"link set dev {veth} master {self.bridge} up\n")
        try:
            _run(["ip", "-batch", "-"], input=host_side)
        except NodeError:
            # A leftover of a node that was torn down badly: clear it and retry once.
            self._kill_netns(netns)
            _run(["ip", "netns", "del", netns], check=False)
            _run(["ip", "link", "del", veth], check=False)
            _run(["ip", "-batch", "-"], input=host_side)
        _run(["ip", "-n", netns, "-batch", "-"], input=(
            "link set dev lo up\n"
            + ("link set dev eth0 addrgenmode none\n" if v6 else "")
            + f"addr add {ip}/24 dev eth0\n"
            "link set dev eth0 up\n"
        ))

        log = open(ndir / "sshd.log", "wb")
        node = Node(name=name, ip=ip, pid=0, netns=netns, veth=veth, dir=ndir, host_public_key=host_pub,
                    users=users, _log=log)
        node._proc = subprocess.Popen(
            [_which("nsenter") or "nsenter", f"--net=/run/netns/{netns}", "--",
             _which("unshare") or "unshare", "--mount", "--uts", "--ipc", "--pid", "--fork", "--kill-child",
             "--propagation", "private", "--",
             "/bin/sh", str(self._init_script), str(merged), str(upper), str(work), name],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={"PATH": _SBIN_PATH, "LANG": "C.UTF-8"}, start_new_session=True, close_fds=True,
        )
        deadline = time.monotonic() + self.start_timeout
        # The init (sh, then sshd: same PID) is unshare's only child.
        children = Path(f"/proc/{node._proc.pid}/task/{node._proc.pid}/children")
        while True:
            try:
                kids = children.read_text().split()
            except OSError:
                kids = []
            if kids:
                node.pid = int(kids[0])
                try:
                    node._pidfd = os.pidfd_open(node.pid)
                except OSError:
                    node._pidfd = None
                break
            if node._proc.poll() is not None or time.monotonic() > deadline:
                raise NodeError(self._start_failure(node, "its init never started"))
            time.sleep(0.001)
        # Ready when sshd accepts TCP on port 22.
        while True:
            if node._proc.poll() is not None:
                raise NodeError(self._start_failure(node, "sshd exited"))
            try:
                with socket.create_connection((ip, 22), timeout=0.5):
                    break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise NodeError(self._start_failure(
                        node, f"sshd did not accept TCP on {ip}:22 within {self.start_timeout:g}s ({exc})")) from None
                time.sleep(0.003)
        return node

    def _start_failure(self, node: Node, what: str) -> str:
        # Give sshd a moment to flush its complaint.
        if node._proc is not None:
            try:
                node._proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
        try:
            err = node.log_path.read_text(errors="replace").strip()
        except OSError:
            err = ""
        rc = node._proc.returncode if node._proc is not None else None
        return (f"node {node.name} ({node.ip}) failed to start: {what}"
                + (f" [exit {rc}]" if rc is not None else "")
                + (f"; sshd/init stderr:\n{err}" if err else "; no output from sshd/init"))

    def _teardown(self, name: str, host: int, node: Node | None) -> None:
        """Kill the node's PID namespace, delete its netns/veth and its files."""
        netns, veth = self._netns_name(host), self._veth_name(host)
        if node is not None:
            # SIGKILL the init (pid 1 of the node's PID namespace): the kernel kills
            # every other process in it.  unshare, its parent, then reaps it and
            # exits; killing unshare first would orphan the init to the host's
            # pid 1, which may leave it a zombie for a while.
            killed = False
            if node._pidfd is not None:
                try:
                    signal.pidfd_send_signal(node._pidfd, signal.SIGKILL)
                    killed = True
                except OSError:
                    pass
            if node._proc is not None:
                if not killed and node._proc.poll() is None:
                    node._proc.kill()  # --kill-child: the init gets SIGKILL as well
                try:
                    node._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    node._proc.kill()
                    try:
                        node._proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        pass
            if node._pidfd is not None:
                _wait_pidfd_exit(node._pidfd, 5)
                os.close(node._pidfd)
                node._pidfd = None
            if node._log is not None:
                node._log.close()
                node._log = None
        if Path(f"/run/netns/{netns}").exists():
            self._kill_netns(netns)  # anything else that joined its network
        _run(["ip", "link", "del", veth], check=False)
        if Path(f"/run/netns/{netns}").exists():
            _run(["ip", "netns", "del", netns], check=False)
        _rmtree(self.workdir / "nodes" / name)


# ---------------------------------------------------------------- helpers


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


def _is_pidns_init(pid: int) -> bool:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                ids = line.split()[1:]
                return len(ids) > 1 and ids[-1] == "1"
    except OSError:
        pass
    return False


def _wait_pidfd_exit(pidfd: int, timeout: float) -> None:
    import select

    p = select.poll()
    p.register(pidfd, select.POLLIN)
    p.poll(int(timeout * 1000))


def _live_netns_inodes() -> set[int]:
    out: set[int] = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                out.add(os.stat(f"/proc/{d}/ns/net").st_ino)
            except OSError:
                pass
    return out


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []


def _mkdirs_like(upper: Path, rel: str, default_mode: int = 0o755) -> Path:
    """Create ``upper/rel`` with each component's owner and mode copied from ``/rel``.

    In an overlay, a directory that exists in the upper layer takes its
    attributes from there, so they must match the host's (lower) ones.
    """
    cur = upper
    lower = Path("/")
    for part in Path(rel).parts:
        cur, lower = cur / part, lower / part
        if cur.is_dir():
            continue
        cur.mkdir()
        try:
            st = os.stat(lower)
            os.chown(cur, st.st_uid, st.st_gid)
            os.chmod(cur, st.st_mode & 0o7777)
        except FileNotFoundError:
            os.chmod(cur, default_mode)
    return cur


def _write_like(upper: Path, rel: str, text: str, default_mode: int = 0o644) -> None:
    parent = _mkdirs_like(upper, os.path.dirname(rel))
    dest = parent / os.path.basename(rel)
    dest.write_text(text)
    try:
        st = os.stat("/" + rel)
        os.chown(dest, st.st_uid, st.st_gid)
        os.chmod(dest, st.st_mode & 0o7777)
    except FileNotFoundError:
        os.chmod(dest, default_mode)


def _copy_skel(home: Path, uid: int, gid: int) -> None:
    skel = Path("/etc/skel")
    if not skel.is_dir():
        return
    for src in skel.iterdir():
        if src.is_file() and not src.is_symlink():
            dest = home / src.name
            shutil.copyfile(src, dest)
            os.chown(dest, uid, gid)
            os.chmod(dest, 0o644)


def _rmtree(path: Path) -> None:
    def onerror(func, p, exc_info):  # noqa: ANN001
        exc = exc_info[1]
        if isinstance(exc, FileNotFoundError):
            return
        if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM):
            try:
                os.chmod(os.path.dirname(p), 0o700)
                func(p)
                return
            except OSError:
                pass
        raise exc

    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, onerror=onerror)
