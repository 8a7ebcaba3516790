"""`gcpgpu image create`: an image of a configured node's boot disk, so later clusters boot
already configured (a node group with `image: {family: F}`; configure then finds little or
nothing to change)."""
from __future__ import annotations

import re
import subprocess
import time

import click

from gcpgpu.plugins import hookimpl

NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
IMAGE_OF_LABEL = "gcpgpu-image-of"  # not the cluster label: `down` must not delete the image
# Per-host identity the next machine must not inherit (systemd makes a new one at boot).
# SSH host keys need no cleaning: a new instance gets new ones from the guest environment.
CLEAN_COMMAND = "sudo truncate -s 0 /etc/machine-id && sudo rm -f /var/lib/dbus/machine-id"


@click.group()
def image():
    """Base images made from configured nodes.

    Example: gcpgpu image create cluster.yaml --from demo-head-0000 --family demo-base
    """


@image.command("create")
@click.argument("spec_file", metavar="CLUSTER_YAML", type=click.Path(dir_okay=True))
@click.option("--from", "node", required=True, metavar="NODE", help="The configured node to copy.")
@click.option("--family", required=True, help="Image family; node groups boot its newest image.")
@click.option("--name", help="Image name (default: FAMILY-YYYYMMDD-HHMMSS).")
@click.option("--leave-stopped", is_flag=True, help="Do not start the node again afterwards.")
@click.pass_obj
def create(session, spec_file, node, family, name, leave_stopped):
    """Make an image of NODE's boot disk: clean its per-host identity (machine-id), stop it,
    create the image (labelled, in FAMILY), and start it again.

    Example: gcpgpu image create cluster.yaml --from demo-head-0000 --family demo-base
    """
    from gcpgpu import report
    from gcpgpu.errors import GcpgpuError
    from gcpgpu_plugins.lifecycle import power

    name = name or f"{family}-{time.strftime('%Y%m%d-%H%M%S')}"
    for field, value in (("--family", family), ("--name", name)):
        if not NAME.match(value):
            raise GcpgpuError(f"{field} {value!r}: 1-63 of a-z, 0-9 and '-', starting with a letter")
    cluster = session.cluster(spec_file)
    with cluster.state.lock("gcpgpu image create"):
        host = next((h for h in cluster.hosts() if h.name == node), None)
        if host is None or not host.hostvars.get("disks"):
            raise GcpgpuError(f"no VM {node!r} in cluster {cluster.spec['name']}")
        was_running = host.status == "RUNNING"
        if was_running:
            _clean(cluster, host)
            power(cluster, [host], on=False)
        _insert_image(cluster, host, name, family)
        if was_running and not leave_stopped:
            power(cluster, [host], on=True)
    report.console.print(f"image {name} (family {family}) made from {node}; boot a node group from "
                         f"it with:  image: {{family: {family}, project: {cluster.spec['project']}}}")


def _clean(cluster, host) -> None:
    from gcpgpu.cli import ssh_argv
    from gcpgpu.errors import GcpgpuError

    done = subprocess.run(ssh_argv(cluster, host, [CLEAN_COMMAND]), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise GcpgpuError(f"{host.name}: could not clean per-host files: {done.stderr.strip()}")


def _insert_image(cluster, host, name: str, family: str) -> None:
    from google.cloud import compute_v1

    from gcpgpu_plugins.gcp import retry_policy, wait_global_operation

    ctx = cluster.context()
    body = compute_v1.Image(
        name=name, family=family, source_disk=host.hostvars["disks"][0]["source"],
        labels={IMAGE_OF_LABEL: cluster.spec["name"], "gcpgpu-group": host.group},
        description=f"gcpgpu: {host.name} of cluster {cluster.spec['name']}")
    operation = ctx.clients.get(compute_v1.ImagesClient).insert(
        project=ctx.project, image_resource=body, retry=retry_policy())
    wait_global_operation(ctx.clients, ctx.project, operation.name)


@hookimpl
def gcpgpu_commands():
    return [image]
