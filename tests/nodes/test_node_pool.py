"""Real local test nodes: SSH in, sudo, isolation, release/close hygiene, crash recovery."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gcpgpu.emulator import nodes as nodes_mod
from gcpgpu.emulator.nodes import NodeError, NodePool, nodes_supported

REPO = Path(__file__).resolve().parents[2]
USER = "gcpgpu"


def instance(name: str, pub: str | None = None, user: str = USER) -> dict:
    inst = {
        "name": name,
        "zone": "https://www.googleapis.com/compute/v1/projects/test-proj/zones/us-central1-a",
        "metadata": {"items": [{"key": "startup-script", "value": "true"}]},
    }
    if pub:
        inst["metadata"]["items"].append({"key": "ssh-keys", "value": f"{user}:{pub}\n"})
    return inst


def ssh(key: Path, ip: str, command: str, user: str = USER, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-i", str(key), "-F", "/dev/null",
         "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", "-o", "ControlMaster=no", "-o", "ControlPath=none",
         f"{user}@{ip}", command],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def host_key(ip: str) -> str:
    res = subprocess.run(["ssh-keyscan", "-T", "5", "-t", "ed25519", ip], capture_output=True, text=True, timeout=20)
    lines = [line for line in res.stdout.splitlines() if line and not line.startswith("#")]
    assert lines, res.stderr
    return lines[0].split(None, 1)[1]


def pids_in_pidns(ns_inode: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}/ns/pid").st_ino == ns_inode:
                    out.append(int(d))
            except OSError:
                pass
    return out


def host_leftovers(pool: NodePool) -> dict[str, list[str]]:
    """Everything of this pool still visible on the host (should be empty after close)."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.splitlines()
    mounts = Path("/proc/mounts").read_text().splitlines()
    link_names = [line.split(":")[1].strip().split("@")[0] for line in links]
    return {
        "netns": [n.split()[0] for n in netns if n.startswith(pool.bridge + "-")],
        "links": [n for n in link_names if n == pool.bridge or n.startswith(pool._veth_prefix)],
        "mounts": [m for m in mounts if str(pool.workdir) in m or f"/run/netns/{pool.bridge}-" in m],
        "node_dirs": [p.name for p in (pool.workdir / "nodes").iterdir()] if (pool.workdir / "nodes").exists() else [],
    }


CLEAN = {"netns": [], "links": [], "mounts": [], "node_dirs": []}


def test_nodes_supported_reports_reason():
    ok, reason = nodes_supported()
    assert isinstance(ok, bool) and isinstance(reason, str)
    assert ok or reason


def test_three_nodes_ssh_sudo_isolation_and_peers(node_pool, ssh_keypair):
    key, pub = ssh_keypair
    names = ["node-a", "node-b", "node-c"]
    with ThreadPoolExecutor(3) as ex:  # the emulator may bind from several threads at once
        ips = dict(zip(names, ex.map(lambda n: node_pool.acquire(n, instance(n, pub)), names)))
    assert len(set(ips.values())) == 3
    for name, ip in ips.items():
        assert ip.startswith(node_pool.subnet + ".")
        node = node_pool.node(name)
        assert (node.name, node.ip) == (name, ip)
        assert node.users == [USER]

        res = ssh(key, ip, "hostname")
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == name

        res = ssh(key, ip, "sudo -n true && sudo -n id -u && id -un")
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == ["0", USER]

        res = ssh(key, ip, f"echo written-on-{name} > ~/marker && sudo -n sh -c 'echo {name} > /etc/gcpgpu-marker'")
        assert res.returncode == 0, res.stderr

        hosts = node.path("/etc/hosts").read_text()
        assert f"{ip}\t" in hosts and name in hosts
        assert node.run(["hostname"]).stdout.strip() == name

    for name, ip in ips.items():
        node = node_pool.node(name)
        # Lands in this node only: visible through Node.path and its upper dir ...
        assert node.path(f"/home/{USER}/marker").read_text() == f"written-on-{name}\n"
        assert node.path("/etc/gcpgpu-marker").read_text() == f"{name}\n"
        assert (node.upper / "etc/gcpgpu-marker").read_text() == f"{name}\n"
        # ... not on the host, not on the other nodes.
        assert not Path("/etc/gcpgpu-marker").exists()
        assert not Path(f"/home/{USER}/marker").exists()
        for other in names:
            if other != name:
                assert node_pool.node(other).path("/etc/gcpgpu-marker").read_text() == f"{other}\n"
        assert node.run(["cat", "/etc/gcpgpu-marker"]).stdout == f"{name}\n"
        # The user exists in the node only.
        assert node.run(["id", "-u", USER]).returncode == 0
        assert f"\n{USER}:" not in "\n" + Path("/etc/passwd").read_text()

    # Nodes reach each other by IP (TCP to sshd), both over SSH and via Node.run.
    a, b, c = (ips[n] for n in names)
    res = ssh(key, a, f"exec 3<>/dev/tcp/{b}/22 && head -c 7 <&3")
    assert res.returncode == 0 and res.stdout == "SSH-2.0", res.stderr
    res = node_pool.node("node-c").run(["bash", "-c", f"exec 3<>/dev/tcp/{a}/22 && head -c 7 <&3"], timeout=10)
    assert res.stdout == "SSH-2.0", res.stderr
    # And they have no route out.
    res = node_pool.node("node-b").run(["ip", "route", "show", "default"])
    assert res.stdout.strip() == ""


def test_release_kills_everything_and_reacquire_gets_new_host_key(node_pool, ssh_keypair):
    key, pub = ssh_keypair
    ip1 = node_pool.acquire("vm-1", instance("vm-1", pub))
    node = node_pool.node("vm-1")
    key1 = host_key(ip1)
    assert key1 == node.host_public_key.split()[0] + " " + node.host_public_key.split()[1]

    # A daemon started over SSH lives in the node's PID namespace and must die with it.
    res = ssh(key, ip1, "touch ~/before && setsid -f sleep 600 </dev/null >/dev/null 2>&1; echo ok")
    assert res.returncode == 0, res.stderr
    pidns = os.stat(f"/proc/{node.pid}/ns/pid").st_ino
    deadline = time.monotonic() + 5
    while len(pids_in_pidns(pidns)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(pids_in_pidns(pidns)) >= 2  # sshd (init) + sleep
    node_dir = node.dir

    node_pool.release("vm-1")
    assert pids_in_pidns(pidns) == []
    assert not Path(f"/proc/{node.pid}/ns").exists() or os.stat(f"/proc/{node.pid}/ns/pid").st_ino != pidns
    assert node.netns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert subprocess.run(["ip", "link", "show", "dev", node.veth], capture_output=True).returncode != 0
    assert str(node_dir) not in Path("/proc/mounts").read_text()
    assert not node_dir.exists()
    assert "vm-1" not in node_pool
    node_pool.release("vm-1")  # unknown/released names are ignored

    ip2 = node_pool.acquire("vm-1", instance("vm-1", pub))
    assert ip2 == ip1  # the address is free again and reused
    key2 = host_key(ip2)
    assert key2 != key1  # a recreated VM presents a new host key
    res = ssh(key, ip2, "test -e ~/before && echo kept || echo reset")
    assert res.stdout.strip() == "reset", res.stderr


def test_no_ssh_keys_metadata_means_no_user(node_pool, ssh_keypair):
    key, _pub = ssh_keypair
    ip = node_pool.acquire("bare", instance("bare"))
    node = node_pool.node("bare")
    assert node.users == []
    assert node.run(["id", USER]).returncode != 0
    assert ssh(key, ip, "true").returncode != 0  # sshd is up, but nobody may log in
    assert node.run(["hostname"]).stdout.strip() == "bare"


def test_ssh_keys_several_users_and_keys(node_pool, ssh_keypair, tmp_path):
    key, pub = ssh_keypair
    key2 = tmp_path / "k2"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key2)], check=True)
    pub2 = key2.with_suffix(".pub").read_text().strip()
    inst = instance("multi")
    inst["metadata"]["items"].append({"key": "ssh-keys", "value": f"alice:{pub}\nbob:{pub2}\nalice:{pub2}\n\nnot a key line\n"})
    ip = node_pool.acquire("multi", inst)
    assert sorted(node_pool.node("multi").users) == ["alice", "bob"]
    assert ssh(key, ip, "id -un", user="alice").stdout.strip() == "alice"
    assert ssh(key2, ip, "id -un", user="alice").stdout.strip() == "alice"
    assert ssh(key2, ip, "sudo -n whoami", user="bob").stdout.strip() == "root"
    assert ssh(key, ip, "true", user="bob").returncode != 0
    uids = node_pool.node("multi").run(["sh", "-c", "id -u alice; id -u bob"]).stdout.split()
    assert len(set(uids)) == 2


def test_bad_input_is_rejected(node_pool, node_network, tmp_path):
    with pytest.raises(ValueError):
        node_pool.acquire("bad name!", {})
    with pytest.raises(KeyError):
        node_pool.node("nope")
    ip = node_pool.acquire("dup", {})
    with pytest.raises(NodeError, match="already has a node"):
        node_pool.acquire("dup", {})
    assert node_pool.node("dup").ip == ip and node_pool.node("dup").alive()
    # A second pool may not take the same subnet on another bridge.
    bridge, _ = _side_network(node_network, 12)
    with pytest.raises(NodeError, match="already used"):
        NodePool(tmp_path / "other", bridge=bridge, subnet=node_pool.subnet)
    assert subprocess.run(["ip", "link", "show", "dev", bridge], capture_output=True).returncode != 0


def test_sshd_failure_is_reported_and_cleaned_up(node_pool, monkeypatch):
    monkeypatch.setattr(nodes_mod, "_SSHD_CONFIG", "Port 22\nListenAddress {ip}:22\nNoSuchOption yes\n")
    with pytest.raises(NodeError) as err:
        node_pool.acquire("broken", {})
    assert "NoSuchOption" in str(err.value)  # sshd's own stderr is in the message
    left = host_leftovers(node_pool)
    assert left["netns"] == [] and left["node_dirs"] == []
    assert left["links"] == [node_pool.bridge]
    monkeypatch.undo()
    assert node_pool.acquire("fine", {}).endswith(f".{node_pool.first_host}")  # the IP was given back


def _side_network(network: tuple[str, str], offset: int) -> tuple[str, str]:
    bridge, subnet = network
    a, b, c = subnet.split(".")
    return (bridge + "x" + str(offset))[:15], f"{a}.{b}.{(int(c) + offset) % 256}"


def test_close_leaves_host_clean_and_is_idempotent(tmp_path, ssh_keypair, node_network):
    ok, reason = nodes_supported()
    if not ok:
        pytest.skip(reason)
    bridge, subnet = _side_network(node_network, 10)
    pool = NodePool(tmp_path / "wd", bridge=bridge, subnet=subnet)
    try:
        for n in ("c1", "c2"):
            pool.acquire(n, instance(n, ssh_keypair[1]))
        pids = [pool.node(n).pid for n in ("c1", "c2")]
        pidns = [os.stat(f"/proc/{p}/ns/pid").st_ino for p in pids]
        left = host_leftovers(pool)
        assert len(left["netns"]) == 2 and len(left["links"]) == 3
    finally:
        pool.close()
    assert host_leftovers(pool) == CLEAN
    assert all(pids_in_pidns(ns) == [] for ns in pidns)
    pool.close()  # idempotent
    with pytest.raises(NodeError):
        pool.acquire("late", {})


def test_crashed_run_is_cleaned_up_at_pool_creation(tmp_path, node_network):
    ok, reason = nodes_supported()
    if not ok:
        pytest.skip(reason)
    bridge, subnet = _side_network(node_network, 11)
    workdir = tmp_path / "wd"
    script = textwrap.dedent(f"""
        import json, os, signal
        from gcpgpu.emulator.nodes import NodePool
        pool = NodePool({str(workdir)!r}, bridge={bridge!r}, subnet={subnet!r})
        for n in ("s1", "s2"):
            pool.acquire(n, {{}})
        print(json.dumps([pool.node(n).pid for n in ("s1", "s2")]), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no close
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == -signal.SIGKILL, res.stderr
    pids = json.loads(res.stdout)
    pidns = [os.stat(f"/proc/{p}/ns/pid").st_ino for p in pids]
    assert all(pids_in_pidns(ns) for ns in pidns)  # the orphans are still running

    pool = NodePool(workdir, bridge=bridge, subnet=subnet)
    try:
        assert all(pids_in_pidns(ns) == [] for ns in pidns)
        left = host_leftovers(pool)
        assert left["netns"] == [] and left["node_dirs"] == [] and left["links"] == [bridge]
        ip = pool.acquire("s1", {})  # same name, same address: works again
        assert ip == f"{subnet}.10"
    finally:
        pool.close()
    assert host_leftovers(pool) == CLEAN


def test_time_acquiring_8_nodes(node_pool):
    names = [f"t{i}" for i in range(8)]
    t0 = time.perf_counter()
    for n in names:
        node_pool.acquire(n, {})
    seq = time.perf_counter() - t0
    t0 = time.perf_counter()
    for n in names:
        node_pool.release(n)
    rel = time.perf_counter() - t0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda n: node_pool.acquire(n, {}), names))
    par = time.perf_counter() - t0
    assert len({node_pool.node(n).ip for n in names}) == 8
    print(f"\n[test nodes] 8 nodes: sequential acquire {seq * 1000:.0f} ms ({seq / 8 * 1000:.1f} ms/node), "
          f"release {rel * 1000:.0f} ms, parallel acquire (8 threads) {par * 1000:.0f} ms")
