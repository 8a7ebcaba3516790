"""Everything the user sees: progress while working, tables at the end (rich)."""
from __future__ import annotations

import contextlib
import json
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

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
    styles = {"create": "green", "replace": "yellow", "delete": "red", "keep": "dim"}
    for row in plan.rows():
        table.add_row(*(row[c] for c in ("action", "kind", "name", "group", "location")),
                      style=styles[row["action"]])
    return table


def plan_summary(plan) -> str:
    return (f"{len(plan.create)} to create, {len(plan.replace)} to replace, "
            f"{len(plan.delete) - len(plan.replace)} to delete, {len(plan.keep)} unchanged")


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
