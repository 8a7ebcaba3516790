"""`gcpgpu sync` (push a local directory to every node, optionally on every change) and
`gcpgpu fetch` (pull results back): rsync over the cluster's own SSH settings (key, pinned host
keys, ProxyCommand), so nothing else needs configuring."""
from __future__ import annotations

import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

from gcpgpu.plugins import hookimpl

spec_argument = click.argument("spec_file", metavar="CLUSTER_YAML", type=click.Path(dir_okay=True))
ARCHIVE = "-rlptDz"  # recursive, links, perms, times, devices; owners stay the remote side's


def rsync_ssh(cluster, host) -> str:
    """The `-e` program for rsync: ssh with the cluster's options."""
    keys = cluster.keys.ensure()
    return shlex.join(["ssh", *keys.ssh_options(host)])


def _remote(cluster, host, path: str) -> str:
    return f"{cluster.keys.user}@{host.address}:{path}"


def _run(argv: list[str], what: str) -> str | None:
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return None if done.returncode == 0 else f"{what}: {done.stderr.strip() or done.stdout.strip()}"


def push(cluster, hosts, src: Path, dest: str, excludes, delete: bool) -> list[str]:
    """rsync src/ to dest on every host in parallel; returns the failures."""
    def one(host):
        argv = ["rsync", ARCHIVE, "--rsync-path", f"sudo mkdir -p {shlex.quote(dest)} && sudo rsync",
                "-e", rsync_ssh(cluster, host), *(f"--exclude={e}" for e in excludes),
                *(["--delete"] if delete else []), f"{src}/", _remote(cluster, host, dest.rstrip("/") + "/")]
        return _run(argv, host.name)

    with ThreadPoolExecutor(max_workers=min(16, len(hosts) or 1)) as pool:
        return [failure for failure in pool.map(one, hosts) if failure]


def _running(cluster) -> list:
    from gcpgpu.errors import GcpgpuError

    hosts = [h for h in cluster.hosts() if h.status == "RUNNING"]
    if not hosts:
        raise GcpgpuError("the cluster has no running node")
    return hosts


@click.command()
@spec_argument
@click.argument("src", required=False, type=click.Path(file_okay=False))
@click.argument("dest", required=False)
@click.option("--exclude", "excludes", multiple=True, metavar="GLOB",
              help="Leave these out (repeatable); default: the spec's files.excludes.")
@click.option("--delete", is_flag=True, help="Delete files on the nodes that SRC does not have.")
@click.option("--watch", is_flag=True, help="Keep running and sync again on every change.")
@click.pass_obj
def sync(session, spec_file, src, dest, excludes, delete, watch):
    """Push a local directory to every running node with rsync (default: the spec's files.src
    to files.dest). With --watch, sync again whenever a file under SRC changes.

    Example: gcpgpu sync cluster.yaml ./code /opt/code --delete --watch
    """
    from gcpgpu import report
    from gcpgpu.errors import GcpgpuError

    cluster = session.cluster(spec_file)
    files = cluster.spec.get("files") or {}
    src = Path(src) if src else Path(cluster.spec["_base_dir"]) / files.get("src", "")
    dest = dest or files.get("dest")
    if not (src.is_dir() and dest):
        raise GcpgpuError("give SRC and DEST, or set files.src and files.dest in the cluster file")
    excludes = excludes or files.get("excludes", [])

    def once():
        hosts = _running(cluster)
        failures = push(cluster, hosts, src.resolve(), dest, excludes, delete)
        if failures:
            raise GcpgpuError("sync failed on:\n" + "\n".join(f"  - {f}" for f in failures))
        report.console.print(f"synced {src} -> {dest} on {len(hosts)} node(s)")

    once()
    if watch:
        from watchfiles import watch as changes

        report.console.print(f"watching {src} (Ctrl-C to stop)")
        for _ in changes(src):
            once()


@click.command()
@spec_argument
@click.argument("remote", metavar="NODE:PATH")
@click.argument("local", type=click.Path())
@click.pass_obj
def fetch(session, spec_file, remote, local):
    """Pull a file or directory from a node (rsync; a trailing / copies a directory's contents).

    Example: gcpgpu fetch cluster.yaml demo-head-0000:/opt/code/results ./results
    """
    from gcpgpu.cli import pick_host
    from gcpgpu.errors import GcpgpuError

    node, sep, path = remote.partition(":")
    if not (sep and node and path):
        raise GcpgpuError(f"{remote!r}: give NODE:PATH, e.g. demo-head-0000:/opt/code/results")
    cluster = session.cluster(spec_file)
    host = pick_host(cluster, node)
    failure = _run(["rsync", ARCHIVE, "--rsync-path", "sudo rsync", "-e", rsync_ssh(cluster, host),
                    _remote(cluster, host, path), local], host.name)
    if failure:
        raise GcpgpuError(f"fetch failed: {failure}")
    click.echo(f"fetched {remote} -> {local}")


@hookimpl
def gcpgpu_commands():
    return [sync, fetch]
