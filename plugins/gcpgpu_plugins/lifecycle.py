"""`gcpgpu stop`, `start` and `keepalive`: pause a cluster without losing its disks, and bring
preempted spot VMs back (restart, or recreate in a fallback zone when the restart finds no
capacity), then configure those hosts again and re-run the startup command on them only.

Works on hosts whose provider can `power` them (the compute provider); others are skipped with
a note. Managed instance groups and GKE node pools scale instead: `stop` leaves them alone.
"""
from __future__ import annotations

import time

import click

from gcpgpu.plugins import hookimpl

STARTUP_RUNNER = "/usr/local/sbin/gcpgpu-startup"  # installed by the startup_command role
KEEPALIVE_INTERVAL_S = 60
spec_argument = click.argument("spec_file", metavar="CLUSTER_YAML", type=click.Path(dir_okay=True))
group_option = click.option("--group", "groups", multiple=True, metavar="GROUP",
                            help="Only this node group (repeatable); default: every group.")


def _powerable(cluster, hosts) -> dict:
    """{provider: hosts} for providers that can stop and start their hosts."""
    from gcpgpu import report

    by_provider: dict = {}
    for host in hosts:
        provider = cluster.plugins.providers[host.provider]
        if hasattr(provider, "power"):
            by_provider.setdefault(provider, []).append(host)
        else:
            report.console.print(f"{host.name}: provider {host.provider!r} cannot stop/start; skipped")
    return by_provider


def _selected(cluster, groups) -> list:
    from gcpgpu.errors import GcpgpuError

    unknown = sorted(set(groups) - set(cluster.spec["node_groups"]))
    if unknown:
        raise GcpgpuError(f"unknown node group(s) {', '.join(unknown)}; "
                          f"groups: {', '.join(cluster.spec['node_groups'])}")
    return [h for h in cluster.hosts() if not groups or h.group in groups]


def power(cluster, hosts, on: bool) -> None:
    from gcpgpu import report

    for provider, batch in _powerable(cluster, hosts).items():
        verb = "start" if on else "stop"
        with report.progress() as start_batch:
            advance = start_batch(f"{verb} {len(batch)} node(s)", len(batch))
            provider.power(cluster.context(progress=advance), batch, on)


def rerun_startup_command(cluster, hosts) -> None:
    """Start the user's command again now (the runner the startup_command role installed)."""
    import subprocess

    from gcpgpu.cli import ssh_argv
    from gcpgpu.errors import GcpgpuError

    if not cluster.spec.get("startup_command"):
        return
    for host in hosts:
        done = subprocess.run(ssh_argv(cluster, host, ["sudo", STARTUP_RUNNER, "start"]),
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise GcpgpuError(f"{host.name}: could not re-run the startup command: {done.stderr.strip()}")


def configure_only(cluster, names: set[str]) -> None:
    """Configure these hosts; the inventory still lists every running host (/etc/hosts)."""
    from gcpgpu.cli import configure_hosts

    running = [h for h in cluster.hosts() if h.status == "RUNNING"]
    configure_hosts(cluster, running, limit=",".join(sorted(names)))


@click.command()
@spec_argument
@group_option
@click.pass_obj
def stop(session, spec_file, groups):
    """Stop the cluster's VMs (or one group's). Their boot disks are kept and keep billing
    (see `gcpgpu status`); GPUs, CPUs and memory stop billing. `gcpgpu start` brings them back.

    Example: gcpgpu stop cluster.yaml --group workers
    """
    from gcpgpu import report

    cluster = session.cluster(spec_file)
    with cluster.state.lock("gcpgpu stop"):
        hosts = [h for h in _selected(cluster, groups) if h.status not in ("TERMINATED", "STOPPED")]
        power(cluster, hosts, on=False)
        cluster.state.mark_stopped([h.name for h in hosts], stopped=True)
    report.console.print(f"stopped {len(hosts)} node(s); their disks still bill: "
                         f"`gcpgpu status {spec_file}` shows the cost, `gcpgpu down` ends it")


@click.command()
@spec_argument
@group_option
@click.option("--configure/--no-configure", default=True, show_default=True,
              help="Configure the started nodes and re-run the startup command on them.")
@click.pass_obj
def start(session, spec_file, groups, configure):
    """Start the cluster's stopped VMs (or one group's), wait for SSH, configure them again and
    re-run the startup command on them.

    Example: gcpgpu start cluster.yaml
    """
    from gcpgpu import report

    cluster = session.cluster(spec_file)
    with cluster.state.lock("gcpgpu start"):
        stopped = [h for h in _selected(cluster, groups) if h.status in ("TERMINATED", "STOPPED")]
        power(cluster, stopped, on=True)
        cluster.state.mark_stopped([h.name for h in stopped], stopped=False)
        names = {h.name for h in stopped}
        if configure and names:
            configure_only(cluster, names)
            rerun_startup_command(cluster, [h for h in cluster.hosts() if h.name in names])
    report.console.print(f"started {len(stopped)} node(s)")


def revive(cluster) -> list[str]:
    """One keep-alive pass: restart preempted spot VMs, recreate those a restart cannot place,
    configure them and re-run the startup command. Returns the names brought back."""
    from gcpgpu import report
    from gcpgpu.errors import CapacityError

    stopped_by_user = cluster.state.stopped
    live = cluster.observe()  # one aggregated list finds them all
    preempted = [h for h in cluster.hosts(live) if h.preemptible and h.name not in stopped_by_user
                 and h.status in ("TERMINATED", "STOPPED")]
    if not preempted:
        return []
    report.console.print(f"preempted: {', '.join(h.name for h in preempted)}; restarting")
    stuck = []
    for host in preempted:
        try:
            power(cluster, [host], on=True)
        except CapacityError as error:
            report.console.print(f"{host.name}: {error}; recreating it in a fallback zone")
            stuck.append(host)
    if stuck:
        recreate(cluster, stuck, live)
    names = {h.name for h in preempted}
    configure_only(cluster, names)
    # A recreated VM is a new machine: configuring it ran its command already.
    restarted = names - {h.name for h in stuck}
    rerun_startup_command(cluster, [h for h in cluster.hosts() if h.name in restarted])
    return sorted(names)


def recreate(cluster, hosts, live) -> None:
    """Delete the VMs a restart could not place; the plan then creates them again, trying the
    cluster's zone and its fallback_zones in order."""
    from gcpgpu import report
    from gcpgpu.engine import Plan

    names = {h.name for h in hosts}
    plan = Plan(delete=[r for r in live if r.name in names],
                create=[r for r in cluster.desired() if r.name in names])
    with report.progress() as start_batch:
        cluster.apply(plan, start_batch)


@click.command()
@spec_argument
@click.option("--once", is_flag=True, help="One pass, then exit (for cron).")
@click.option("--interval", default=KEEPALIVE_INTERVAL_S, show_default=True, type=int,
              metavar="SECONDS", help="Seconds between passes in the foreground loop.")
@click.pass_obj
def keepalive(session, spec_file, once, interval):
    """Keep spot VMs alive: find preempted ones with one list call, restart them (or recreate
    them in a fallback zone when there is no capacity), configure them and re-run the startup
    command on them only. Runs in the foreground every --interval seconds; --once for cron.

    Example: gcpgpu keepalive cluster.yaml --once   (cron: */5 * * * *)
    """
    from gcpgpu import report

    cluster = session.cluster(spec_file)
    while True:
        with cluster.state.lock("gcpgpu keepalive"):
            revived = revive(cluster)
        report.console.print(f"{time.strftime('%H:%M:%S')} keepalive: "
                             + (f"brought back {', '.join(revived)}" if revived else "all nodes up"))
        if once:
            return
        time.sleep(interval)


@click.command()
@click.option("--dry-run", is_flag=True, help="Only say which clusters would be deleted.")
@click.pass_obj
def sweep(session, dry_run):
    """Delete every cluster in this machine's state whose `ttl_hours` has run out (counted from
    its first `up`), as `gcpgpu down` would. Run it from cron next to `keepalive`.

    Example: gcpgpu sweep --dry-run
    """
    from gcpgpu import report
    from gcpgpu.clients import ClientFactory
    from gcpgpu.cli import expires_at
    from gcpgpu.engine import Cluster
    from gcpgpu.state import ClusterState, known_clusters, scheme_of

    now = time.time()
    for state, snapshot in known_clusters():
        expiry = expires_at(snapshot)
        if not expiry or expiry > now:
            continue
        spec = snapshot["spec"]
        report.console.print(f"{spec['name']} ({spec['project']}) expired "
                             f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(expiry))}"
                             + (": would delete it" if dry_run else ": deleting it"))
        if dry_run:
            continue
        clients = ClientFactory(session.endpoint)
        if scheme_of((spec.get("state") or {}).get("path")):  # here: only the spec copy; state is remote
            state = ClusterState.for_spec(spec, clients, session.plugins)
        cluster = Cluster(spec, session.plugins, clients, state)
        with state.lock("gcpgpu sweep"):
            with report.progress() as start_batch:
                cluster.apply(cluster.plan_down(), start_batch)
            state.forget_spec()


SCHEMA = {"cluster": {"properties": {
    "ttl_hours": {
        "type": "integer", "minimum": 1,
        "description": "Time to live: `gcpgpu sweep` deletes the cluster this many hours after "
                       "its first `up` (`gcpgpu ls` shows when). Unset: no expiry.",
    },
    "autostop": {
        "type": "object", "additionalProperties": False, "required": ["idle_minutes"],
        "description": "An idle watchdog on the head node: stops (or deletes) the cluster's VMs "
                       "when no GPU process and no SSH session has run for idle_minutes.",
        "properties": {
            "idle_minutes": {"type": "integer", "minimum": 1, "description": "Idle time before acting."},
            "action": {"enum": ["stop", "down"], "default": "stop",
                       "description": "stop: VMs stopped, disks kept (they still bill); down: VMs deleted."},
            "group": {"type": "string", "description": "Node group whose first node runs the "
                                                       "watchdog (default: the first group)."},
        },
    },
}}}


@hookimpl
def gcpgpu_schema():
    return SCHEMA


@hookimpl
def gcpgpu_validate(spec):
    from gcpgpu.errors import Problem

    group = (spec.get("autostop") or {}).get("group")
    groups = spec.get("node_groups") or {}
    if isinstance(group, str) and isinstance(groups, dict) and group not in groups:
        return [Problem("autostop.group", f"no node group {group!r}",
                        f"use one of: {', '.join(groups)}")]
    return []


@hookimpl
def gcpgpu_plays(spec):
    autostop = spec.get("autostop")
    if not autostop:
        return []
    from gcpgpu.inventory import group_name

    group = group_name(autostop.get("group") or next(iter(spec["node_groups"])))
    return [{"name": "idle watchdog", "hosts": f"{group}[0]", "order": 95, "gather_facts": False,
             "roles": [{"role": "autostop", "tags": ["autostop"], "vars": {
                 "autostop_idle_seconds": autostop["idle_minutes"] * 60,
                 "autostop_action": autostop.get("action", "stop"),
                 "autostop_project": spec["project"], "autostop_cluster": spec["name"]}}]}]


@hookimpl
def gcpgpu_commands():
    return [stop, start, keepalive, sweep]
