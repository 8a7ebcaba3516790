"""The `gcpgpu` command. Imports stay inside commands: `gcpgpu --help` must not load the
Google client libraries (about a second of imports)."""
from __future__ import annotations

import sys

import click

from gcpgpu.clients import ENDPOINT_ENV

EXAMPLE = "examples/single-gpu.yaml"


class Session:
    """What every command shares: the endpoint and the loaded plugins."""

    def __init__(self, endpoint: str | None):
        from gcpgpu.plugins import Plugins

        self.endpoint = endpoint
        self.plugins = Plugins()

    def load(self, path: str) -> dict:
        from gcpgpu.engine import read_spec

        return read_spec(path, self.plugins)

    def cluster(self, path: str):
        from gcpgpu.engine import open_cluster

        return open_cluster(path, self.plugins, self.endpoint)


class Command(click.Group):
    """Prints gcpgpu's own errors as one clear message and exits with their code."""

    def invoke(self, ctx):
        from gcpgpu.errors import GcpgpuError

        try:
            return super().invoke(ctx)
        except GcpgpuError as error:
            click.secho(f"error: {error}", fg="red", err=True)
            sys.exit(error.exit_code)


@click.group(cls=Command)
@click.option("--endpoint", envvar=ENDPOINT_ENV, metavar="URL",
              help=f"Send every Google API call to URL (the bundled emulator, e.g. "
                   f"http://127.0.0.1:8085) instead of Google Cloud. Env: {ENDPOINT_ENV}.")
@click.version_option(package_name="gcpgpu")
@click.pass_context
def cli(ctx, endpoint):
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
    ctx.obj = Session(endpoint)


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
    from gcpgpu import report

    the_plan = session.cluster(spec_file).plan()
    if as_json:
        return report.print_json({"changes": the_plan.rows()})
    report.console.print(report.plan_table(the_plan))
    report.console.print(report.plan_summary(the_plan))


@cli.command()
@spec_argument
@click.pass_obj
def up(session, spec_file):
    """Create whatever the cluster is missing; re-running changes nothing.

    Example: gcpgpu up examples/single-gpu.yaml
    """
    from gcpgpu import report

    cluster = session.cluster(spec_file)
    with cluster.state.lock("gcpgpu up"):
        the_plan = cluster.plan()
        report.console.print(report.plan_summary(the_plan))
        with report.progress() as start_batch:
            cluster.apply(the_plan, start_batch)
        hosts = cluster.hosts()
    report.console.print(report.hosts_table(hosts, title=f"cluster {cluster.spec['name']}"))


@cli.command()
@spec_argument
@json_option
@click.pass_obj
def status(session, spec_file, as_json):
    """List the cluster's nodes: group, zone, address, state.

    Example: gcpgpu status examples/single-gpu.yaml --json
    """
    from gcpgpu import report

    cluster = session.cluster(spec_file)
    hosts = cluster.hosts()
    if as_json:
        return report.print_json({"cluster": cluster.spec["name"], "nodes": report.host_rows(hosts)})
    report.console.print(report.hosts_table(hosts, title=f"cluster {cluster.spec['name']}"))
    if not hosts:
        report.console.print("no nodes: the cluster is down")


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
    report.console.print(f"deleted {len(the_plan.delete)} resource(s); nothing of cluster "
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


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8085, show_default=True, type=int)
@click.option("--latency", default=1.0, show_default=True, type=float,
              help="Seconds an operation takes from PENDING to DONE.")
def emulator(host, port, latency):
    """Run the bundled GCP emulator in the foreground until Ctrl-C.

    Example: gcpgpu emulator --port 8085 & GCPGPU_ENDPOINT=http://127.0.0.1:8085 gcpgpu up c.yaml
    """
    from gcpgpu.emulator.server import serve

    serve(host=host, port=port, latency=latency)


def main():
    cli(prog_name="gcpgpu")
