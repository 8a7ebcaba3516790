"""Everything the user sees: progress while working, tables at the end (rich)."""
from __future__ import annotations

import contextlib
import json
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from gcpgpu.configure import failure_of

console = Console()
errors = Console(stderr=True)


@contextlib.contextmanager
def progress():
    """Yields ``start_batch(description, total) -> advance(n)`` for the engine."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=False) as bar:
        def start_batch(description: str, total: int):
            task = bar.add_task(description, total=total)
            return lambda n=1: bar.advance(task, n)
        yield start_batch


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def plan_table(plan) -> Table:
    table = Table(title="plan")
    for column in ("action", "kind", "name", "group", "location"):
        table.add_column(column)
    styles = {"create": "green", "update": "cyan", "replace": "yellow", "delete": "red", "keep": "dim"}
    for row in plan.rows():
        table.add_row(*(row[c] for c in ("action", "kind", "name", "group", "location")),
                      style=styles[row["action"]])
    return table


def plan_summary(plan) -> str:
    return (f"{len(plan.create)} to create, {len(plan.update)} to update in place, "
            f"{len(plan.replace)} to replace, {len(plan.delete) - len(plan.replace)} to delete, "
            f"{len(plan.keep)} unchanged")


def host_rows(hosts) -> list[dict]:
    return [{"name": h.name, "group": h.group, "zone": h.zone, "address": h.address,
             "status": h.status, "instance_id": h.instance_id} for h in hosts]


def hosts_table(hosts, title: str = "nodes") -> Table:
    table = Table(title=title)
    columns = ("name", "group", "zone", "address", "status")
    for column in columns:
        table.add_column(column)
    for row in host_rows(hosts):
        table.add_row(*(row[c] for c in columns),
                      style="green" if row["status"] == "RUNNING" else "yellow")
    return table


class ConfigureDisplay:
    """Turns ansible-runner's event stream into per-host progress and prints failures as they
    happen (host, task, message)."""

    def __init__(self, hosts: list[str]):
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.fields[host]:<24} {task.description}"),
                            TextColumn("{task.completed} tasks"), TimeElapsedColumn(), console=console)
        self.tasks = {h: self.bar.add_task("waiting", total=None, host=h) for h in hosts}

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        for task in self.tasks.values():
            self.bar.update(task, description="done")
        self.bar.__exit__(*exc)

    def __call__(self, event: dict) -> None:
        data = event.get("event_data", {})
        task = self.tasks.get(data.get("host"))
        if task is None:
            return
        kind = event.get("event")
        if kind == "runner_on_start":
            self.bar.update(task, description=data.get("task", ""))
        elif kind in ("runner_on_ok", "runner_on_skipped", "runner_on_failed", "runner_on_unreachable"):
            self.bar.advance(task)
        failure = failure_of(event)
        if failure:
            self.bar.console.print(f"[red]{failure['host']}: {failure['task']}: {failure['message']}")


def recap_table(result) -> Table:
    table = Table(title="configuration")
    for column in ("host", "ok", "changed", "failed", "unreachable"):
        table.add_column(column)
    for host in sorted(set(result.ok) | set(result.failed) | set(result.unreachable)):
        bad = host in result.failed or host in result.unreachable
        table.add_row(host, str(result.ok.get(host, 0)), str(result.changed.get(host, 0)),
                      str(result.failed.get(host, 0)), str(result.unreachable.get(host, 0)),
                      style="red" if bad else None)
    return table


def how_to_connect(spec_file: str, hosts) -> str:
    running = [h for h in hosts if h.status == "RUNNING"]
    if not running:
        return "no running nodes"
    return "\n".join([
        "how to reach it:",
        f"  gcpgpu ssh {spec_file} {running[0].name}        # a shell on a node",
        f"  gcpgpu ssh-config {spec_file}                    # prints an Include line for ~/.ssh/config",
        f"  GCPGPU_CLUSTER={spec_file} ansible -i $(command -v gcpgpu-inventory) all -m ping",
        f"  gcpgpu down {spec_file}                          # delete everything, stop paying",
    ])
