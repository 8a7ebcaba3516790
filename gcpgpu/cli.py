"""The `gcpgpu` command. Imports stay inside commands: `gcpgpu --help` must not load the
Google client libraries (about a second of imports)."""
from __future__ import annotations

import sys

import click

from gcpgpu.clients import ENDPOINT_ENV

EXAMPLE = "examples/single-gpu.yaml"
QUIET_ENV = "GCPGPU_QUIET"


class Session:
    """What every command shares: the endpoint and the loaded plugins."""

    def __init__(self, endpoint: str | None, quiet: bool = False, command: str = ""):
        from gcpgpu.plugins import Plugins

        self.endpoint = endpoint
        self.plugins = Plugins()
        self.quiet, self.command = quiet, command

    def load(self, path: str) -> dict:
        from gcpgpu.engine import read_spec

        return read_spec(path, self.plugins)

    def cluster(self, path: str):
        from gcpgpu.engine import open_cluster

        cluster = open_cluster(path, self.plugins, self.endpoint)
        self._quiet_log(cluster.state.dir)
        return cluster

    def _quiet_log(self, state_dir) -> None:
        """Quiet mode: the full log goes to <state dir>/logs/<time>-<command>.log."""
        import time

        from gcpgpu import report

        if self.quiet and report.log_file is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            report.quiet_to(state_dir / "logs" / f"{stamp}-{self.command or 'gcpgpu'}.log")
            report.terminal.print(f"full log: {report.log_file}", soft_wrap=True)


class Command(click.Group):
    """Prints gcpgpu's own errors as one clear message and exits with their code; adds the
    commands plugins contribute (loaded only when a name is not built in, or for --help)."""

    def _plugin_commands(self) -> dict:
        if not hasattr(self, "_from_plugins"):
            from gcpgpu.plugins import Plugins

            found = Plugins().hook.gcpgpu_commands()
            self._from_plugins = {c.name: c for commands in found for c in commands
                                  if c.name not in self.commands}
        return self._from_plugins

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self._plugin_commands()))

    def get_command(self, ctx, name):
        return super().get_command(ctx, name) or self._plugin_commands().get(name)

    def invoke(self, ctx):
        from gcpgpu.errors import GcpgpuError

        try:
            return super().invoke(ctx)
        except GcpgpuError as error:
            from gcpgpu import report

            if report.log_file:
                report.console.print(f"error: {error}", markup=False)
            click.secho(f"error: {error}", fg="red", err=True)
            sys.exit(error.exit_code)


@click.group(cls=Command)
@click.option("--endpoint", envvar=ENDPOINT_ENV, metavar="URL",
              help=f"Send every Google API call to URL (the bundled emulator, e.g. "
                   f"http://127.0.0.1:8085) instead of Google Cloud. Env: {ENDPOINT_ENV}.")
@click.option("-q", "--quiet", is_flag=True, envvar=QUIET_ENV,
              help="Print only the summary; the full log (progress, API calls, Ansible output) goes "
                   f"to a file in the cluster's state directory. Env: {QUIET_ENV}=1.")
@click.option("-v", "--verbose", is_flag=True,
              help="Debug output on stderr: every API request (method, URL, status) and provider messages.")
@click.version_option(package_name="gcpgpu")
@click.pass_context
def cli(ctx, endpoint, quiet, verbose):
    """Provision GPU clusters on Google Cloud and configure their nodes.

    \b
    One YAML file describes a cluster:
      gcpgpu validate cluster.yaml   check it, before any API call
      gcpgpu plan cluster.yaml       what up would create / keep / delete
      gcpgpu up cluster.yaml         create what is missing
      gcpgpu status cluster.yaml     nodes, zones, addresses, states
      gcpgpu down cluster.yaml       delete everything the cluster owns

    Against Google Cloud, commands use Application Default Credentials.
    """
    if verbose:
        from gcpgpu import report

        report.verbose()
    ctx.obj = Session(endpoint, quiet=quiet, command=ctx.invoked_subcommand or "")


spec_argument = click.argument("spec_file", metavar="CLUSTER_YAML", type=click.Path(dir_okay=True))
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@cli.command()
@spec_argument
@click.pass_obj
def validate(session, spec_file):
    """Check CLUSTER_YAML without calling any API. Exit code 2 when it is invalid.

    Example: gcpgpu validate examples/single-gpu.yaml
    """
    spec = session.load(spec_file)
    groups = ", ".join(f"{name} ({g['count']})" for name, g in spec["node_groups"].items())
    click.echo(f"ok: cluster {spec['name']!r} in {spec['project']}/{spec['zone']}: {groups}")


@cli.command()
@spec_argument
@json_option
@click.pass_obj
def plan(session, spec_file, as_json):
    """Show what `up` would create, replace, delete and keep.

    Example: gcpgpu plan examples/single-gpu.yaml --json
    """
    from gcpgpu import cost, report

    cluster = session.cluster(spec_file)
    the_plan = cluster.plan()
    hourly = cost.planned(cost.price_items(cluster.spec, session.plugins))
    if as_json:
        return report.print_json({"changes": the_plan.rows(), "cost": hourly,
                                  "hourly_total": cost.total(hourly)})
    report.console.print(report.plan_table(the_plan))
    report.summary(report.plan_summary(the_plan))
    report.summary(report.cost_table(hourly, "cost when up (approximate list prices)"))


@cli.command()
@spec_argument
@click.option("--configure/--no-configure", default=True, show_default=True,
              help="Wait for SSH and configure the nodes after creating them.")
@click.pass_obj
def up(session, spec_file, configure):
    """Create whatever the cluster is missing, wait for SSH, configure every node, and print
    how to reach it. Re-running changes nothing.

    Example: gcpgpu up examples/quickstart.yaml
    """
    from gcpgpu import cost, report

    cluster = session.cluster(spec_file)
    with cluster.state.lock("gcpgpu up"):
        cluster.state.remember_spec(cluster.spec, spec_file)
        the_plan = cluster.plan()
        hourly = cost.total(cost.planned(cost.price_items(cluster.spec, session.plugins)))
        report.summary(f"{report.plan_summary(the_plan)}; about ${hourly:.2f}/hour when up")
        with report.progress() as start_batch:
            cluster.apply(the_plan, start_batch)
        # Nothing changed: the plan's live view is current, no need to list again.
        hosts = cluster.hosts(None if the_plan.changes else the_plan.keep)
        report.summary(report.hosts_table(hosts, title=f"cluster {cluster.spec['name']}"))
        problems = configure_hosts(cluster, hosts).problems if configure else []
    if problems:
        report.summary(f"[yellow]cluster {cluster.spec['name']} is up but not ready: "
                       f"{len(problems)} problem(s) listed above")
    elif configure:
        report.summary(f"[green]cluster {cluster.spec['name']} is ready")
    report.summary(report.how_to_connect(spec_file, hosts))


def configure_hosts(cluster, hosts, **options):
    """Wait for SSH on the running hosts, run the playbook, show progress and a recap; fail with
    a summary naming each failed host (the others stay configured)."""
    from gcpgpu import report
    from gcpgpu.configure import run_playbook
    from gcpgpu.errors import GcpgpuError
    from gcpgpu.inventory import cluster_inventory
    from gcpgpu.ssh import wait_for_ssh

    running = [h for h in hosts if h.status == "RUNNING"]
    report.console.print(f"waiting for SSH on {len(running)} node(s)")
    wait_for_ssh(cluster.keys.ensure(), running, (cluster.spec.get("ssh") or {}).get("timeout_s", 300))
    inventory = cluster_inventory(cluster, running)
    with report.ConfigureDisplay(sorted(inventory.hostvars)) as display:
        result = run_playbook(cluster, inventory, event_handler=display, **options)
    report.console.print(report.recap_table(result))
    result.problems = [p for found in cluster.plugins.hook.gcpgpu_after_configure(
        cluster=cluster, hosts=running, result=result) for p in found or []]
    for problem in result.problems:
        report.summary(f"[yellow]problem: {problem}")
    if result.failed_hosts:
        details = "\n".join(f"  - {f['host']}: {f['task']}: {f['message']}" for f in result.failures)
        raise GcpgpuError(f"configuration failed on {', '.join(result.failed_hosts)} (other hosts "
                          f"are configured; fix and run `gcpgpu configure`):\n{details}")
    return result


@cli.command()
@spec_argument
@click.option("--limit", metavar="PATTERN", help="Only these hosts or groups (Ansible pattern).")
@click.option("--tags", metavar="TAGS", help="Only these roles/tags, comma-separated (e.g. files).")
@click.option("--skip-roles", metavar="ROLES", default="", help="Roles to leave out, comma-separated.")
@click.option("--check", is_flag=True, help="Change nothing; report what would change.")
@click.option("--diff", is_flag=True, help="Show the changes to files.")
@click.pass_obj
def configure(session, spec_file, limit, tags, skip_roles, check, diff):
    """Re-run configuration on the cluster's existing nodes.

    Example: gcpgpu configure cluster.yaml --limit workers --tags files --check --diff
    """
    cluster = session.cluster(spec_file)
    with cluster.state.lock("gcpgpu configure"):
        configure_hosts(cluster, cluster.hosts(), limit=limit, tags=tags, check=check, diff=diff,
                        skip_roles=tuple(r for r in skip_roles.split(",") if r))


def pick_host(cluster, node: str | None):
    from gcpgpu.errors import GcpgpuError

    hosts = [h for h in cluster.hosts() if h.status == "RUNNING"]
    if not hosts:
        raise GcpgpuError("the cluster has no running node")
    if node is None:
        return hosts[0]
    for host in hosts:
        if node in (host.name, host.address):
            return host
    raise GcpgpuError(f"no running node {node!r}; nodes: {', '.join(h.name for h in hosts)}")


@cli.command(context_settings={"ignore_unknown_options": True})
@spec_argument
@click.argument("node", required=False)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def ssh(session, spec_file, node, command):
    """Open a shell on NODE (default: the first node), or run COMMAND there.

    Example: gcpgpu ssh cluster.yaml demo-workers-0001 nvidia-smi
    """
    import os

    cluster = session.cluster(spec_file)
    os.execvp("ssh", ssh_argv(cluster, pick_host(cluster, node), command, interactive=True))


def ssh_argv(cluster, host, command=(), interactive=False) -> list[str]:
    """OpenSSH to a node with the cluster's key, pinned host keys and optional ProxyCommand."""
    keys = cluster.keys.ensure()
    # An interactive session may prompt, e.g. for a ProxyCommand's credentials.
    options = keys.ssh_options(host, BatchMode="no" if interactive else "yes")
    return ["ssh", *options, f"{keys.login_user(host)}@{host.address}", *command]


@cli.command("ssh-config")
@spec_argument
@click.pass_obj
def ssh_config(session, spec_file):
    """Write an SSH config with one Host per node and print the Include line for ~/.ssh/config
    (VS Code Remote-SSH then lists the nodes).

    Example: gcpgpu ssh-config cluster.yaml >> ~/.ssh/config
    """
    cluster = session.cluster(spec_file)
    keys = cluster.keys.ensure()
    blocks = []
    for host in cluster.hosts():
        settings = {"HostName": host.address, "User": keys.login_user(host), **keys.ssh_settings(host)}
        for interactive_only in ("BatchMode", "ConnectTimeout"):  # editors such as VS Code may prompt
            settings.pop(interactive_only)
        blocks.append("\n".join([f"Host {host.name}", *(f"  {k} {v}" for k, v in settings.items())]))
    path = keys.dir / "ssh_config"
    path.write_text("# written by gcpgpu ssh-config; re-run after up\n" + "\n\n".join(blocks) + "\n")
    click.echo(f"Include {path}")


@cli.command()
@spec_argument
@click.argument("node", required=False)
@click.pass_obj
def logs(session, spec_file, node):
    """Print the startup command's log of NODE (default: the first node).

    Example: gcpgpu logs cluster.yaml demo-workers-0000
    """
    import subprocess

    cluster = session.cluster(spec_file)
    subprocess.run(ssh_argv(cluster, pick_host(cluster, node), ["sudo cat /var/log/gcpgpu/startup.log"]))


@cli.command()
@spec_argument
@click.option("--write", "write_dir", type=click.Path(file_okay=False),
              help="Also write DIR/<cluster>.gcpgpu.yml for the Ansible inventory plugin.")
@click.pass_obj
def inventory(session, spec_file, write_dir):
    """Print the cluster's Ansible inventory (the same JSON as `gcpgpu-inventory --list`).

    Example: gcpgpu inventory cluster.yaml --write .  &&  ansible -i demo.gcpgpu.yml all -m ping
    """
    from pathlib import Path

    from gcpgpu import report
    from gcpgpu.inventory import cluster_inventory, write_plugin_config

    cluster = session.cluster(spec_file)
    report.print_json(cluster_inventory(cluster).script_format())
    if write_dir:
        path = write_plugin_config(Path(write_dir), spec_file, session.endpoint, cluster.spec["name"])
        click.echo(f"wrote {path}; use: ansible -i {path} all -m ping", err=True)


@cli.command()
@spec_argument
@json_option
@click.pass_obj
def status(session, spec_file, as_json):
    """List the cluster's nodes: group, zone, address, state.

    Example: gcpgpu status examples/single-gpu.yaml --json
    """
    from gcpgpu import cost, report

    cluster = session.cluster(spec_file)
    hosts = cluster.hosts()
    hourly = cost.live(cost.price_items(cluster.spec, session.plugins), hosts) if hosts else []
    stopped = cluster.state.stopped
    if as_json:
        return report.print_json({"cluster": cluster.spec["name"], "nodes": report.host_rows(hosts, stopped),
                                  "cost": hourly, "hourly_total": cost.total(hourly)})
    report.summary(report.hosts_table(hosts, f"cluster {cluster.spec['name']}", stopped))
    if not hosts:
        report.summary("no nodes: the cluster is down")
    else:
        report.summary(report.cost_table(hourly, "cost now (stopped nodes pay for disks)"))


@cli.command()
@spec_argument
@click.pass_obj
def down(session, spec_file):
    """Delete everything the cluster owns: what state records and whatever carries its label.

    Example: gcpgpu down examples/single-gpu.yaml
    """
    from gcpgpu import report

    cluster = session.cluster(spec_file)
    with cluster.state.lock("gcpgpu down"):
        the_plan = cluster.plan_down()
        with report.progress() as start_batch:
            cluster.apply(the_plan, start_batch)
        cluster.state.forget_spec()
    # Hosts that exist without any resource of ours (existing machines) are not ours to delete.
    existing = cluster.hosts([])
    if existing:
        report.summary(f"deleted {len(the_plan.delete)} resource(s); left alone: "
                       f"{len(existing)} existing host(s) gcpgpu did not create "
                       f"({', '.join(h.name for h in existing)}), still configured as they are")
    else:
        report.summary(f"deleted {len(the_plan.delete)} resource(s); nothing of cluster "
                       f"{cluster.spec['name']!r} is left")


@cli.command()
@json_option
@click.pass_obj
def plugins(session, as_json):
    """List loaded plugins, their versions and the hooks they implement.

    Example: GCPGPU_DISABLE_PLUGINS=myplugin gcpgpu plugins
    """
    from gcpgpu import report

    rows = session.plugins.describe()
    providers = sorted(session.plugins.providers)
    if as_json:
        return report.print_json({"plugins": rows, "providers": providers})
    from rich.table import Table

    table = Table(title="plugins")
    for column in ("name", "package", "version", "hooks"):
        table.add_column(column)
    for row in rows:
        hooks = "blocked by GCPGPU_DISABLE_PLUGINS" if row["blocked"] else ", ".join(row["hooks"])
        table.add_row(row["name"], row["package"], row["version"], hooks)
    report.console.print(table)
    report.console.print(f"providers: {', '.join(providers) or 'none'}")


def expires_at(snapshot: dict) -> float | None:
    """When a cluster with `ttl_hours` expires: its first `up` plus the time to live."""
    ttl = snapshot["spec"].get("ttl_hours")
    return snapshot["meta"]["created_at"] + ttl * 3600 if ttl else None


@cli.command(name="ls")
@json_option
@click.pass_obj
def list_clusters(session, as_json):
    """List every cluster this machine's state knows (made by `up`, not yet `down`), with its
    node count and cost per hour. Reads local state only: no API call (a cluster whose state is
    in a bucket is listed from the spec copy `up` left here; its resource count is not read).

    Example: gcpgpu ls
    """
    from gcpgpu import cost, report
    from gcpgpu.state import known_clusters, scheme_of

    rows = []
    for state, snapshot in known_clusters():
        spec = snapshot["spec"]
        hourly = cost.total(cost.planned(cost.price_items(spec, session.plugins)))
        path = (spec.get("state") or {}).get("path")
        remote = path if scheme_of(path) else None
        rows.append({"cluster": spec["name"], "project": spec["project"], "spec": snapshot["spec_path"],
                     "resources": None if remote else len(state.resources), "state": remote or str(state.dir),
                     "hourly": hourly, "expires": expires_at(snapshot)})
    if as_json:
        return report.print_json({"clusters": rows})
    report.console.print(report.clusters_table(rows))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8085, show_default=True, type=int)
@click.option("--latency", default=1.0, show_default=True, type=float,
              help="Seconds an operation takes from PENDING to DONE.")
@click.option("--nodes", "nodes_dir", type=click.Path(file_okay=False), default=None,
              help="Back every VM with a real local test node (root, Linux) kept under this dir.")
def emulator(host, port, latency, nodes_dir):
    """Run the bundled GCP emulator in the foreground until Ctrl-C or SIGTERM.

    Example: gcpgpu emulator --port 8085 & GCPGPU_ENDPOINT=http://127.0.0.1:8085 gcpgpu up c.yaml
    """
    import signal
    import threading

    from gcpgpu.emulator import Emulator

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    emu = Emulator(latency=latency)
    emu.start(host=host, port=port)
    pool = None
    try:
        if nodes_dir:
            from gcpgpu.emulator.nodes import NodePool, nodes_supported

            ok, reason = nodes_supported()
            if ok:
                pool = NodePool(nodes_dir)
                emu.bind_nodes(pool)
            click.echo(f"test nodes: {'on, bridge ' + pool.bridge if pool else 'off: ' + reason}")
        click.echo(f"emulator listening on {emu.url} (GCPGPU_ENDPOINT={emu.url})")
        sys.stdout.flush()
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if pool:
            pool.close()
        emu.stop()


def main():
    cli(prog_name="gcpgpu")
