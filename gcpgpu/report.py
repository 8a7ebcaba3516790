"""Everything the user sees: progress while working, tables at the end (rich)."""
from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from gcpgpu.configure import failure_of

terminal = Console()
console = terminal  # where progress and details go: the terminal, or the log file in quiet mode
errors = Console(stderr=True)
log_file: Path | None = None
# What the log file (quiet) or stderr (verbose) gets besides the console's output: every HTTP
# request the Google clients make (urllib3 logs method, URL and status; never headers or bodies)
# and the messages providers log.
DEBUG_LOGGERS = {"gcpgpu": logging.DEBUG, "urllib3": logging.DEBUG, "google": logging.INFO}


def _log_to(handler: logging.Handler) -> None:
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name, level in DEBUG_LOGGERS.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.addHandler(handler)


def quiet_to(path: Path) -> None:
    """Quiet mode: progress, tables, Ansible's output and the API calls go to ``path``; only
    what ``summary`` prints reaches the terminal."""
    global console, log_file
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = path.open("a", encoding="utf-8", buffering=1)
    console = Console(file=stream, width=120, no_color=True, force_terminal=False)
    log_file = path
    _log_to(logging.StreamHandler(stream))


def verbose() -> None:
    """Debug output: the same API-call and provider log lines on stderr."""
    _log_to(logging.StreamHandler(sys.stderr))


def summary(*renderables) -> None:
    """What a person acts on: always on the terminal (and in the log file in quiet mode)."""
    terminal.print(*renderables)
    if console is not terminal:
        console.print(*renderables)


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


URLS_VAR = "gcpgpu_urls"  # hostvar a provider sets to {name: url} for what a node serves


def cost_table(rows: list[dict], title: str) -> Table:
    from gcpgpu.cost import total

    table = Table(title=title)
    for column in ("group", "item", "units", "$/hour"):
        table.add_column(column, justify="right" if column in ("units", "$/hour") else "left")
    for row in rows:
        table.add_row(row["group"], row["item"], str(row["units"]), f"{row['hourly']:.2f}")
    table.add_row("total", "", "", f"{total(rows):.2f}", style="bold")
    return table


def clusters_table(rows: list[dict]) -> Table:
    import time

    table = Table(title="clusters")
    for column in ("cluster", "project", "resources", "$/hour when up", "expires", "spec"):
        table.add_column(column)
    for row in rows:
        expires = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["expires"])) if row["expires"] else ""
        resources = f"in {row['state']}" if row["resources"] is None else str(row["resources"])
        table.add_row(row["cluster"], row["project"], resources, f"{row['hourly']:.2f}",
                      expires, row["spec"])
    if not rows:
        table.caption = "no clusters: nothing of yours is billed from this machine's state"
    return table


def host_state(host, stopped: set = frozenset()) -> str:
    """running / stopped (by `gcpgpu stop`) / preempted (a spot VM the cloud stopped) / other."""
    if host.status in ("TERMINATED", "STOPPED", "SUSPENDED"):
        if host.name in stopped or not host.preemptible:
            return "stopped"
        return "preempted"
    return host.status.lower()


def host_rows(hosts, stopped: set = frozenset()) -> list[dict]:
    return [{"name": h.name, "group": h.group, "zone": h.zone, "address": h.address,
             "status": h.status, "state": host_state(h, stopped), "instance_id": h.instance_id,
             "urls": h.hostvars.get(URLS_VAR, {})}
            for h in hosts]


def hosts_table(hosts, title: str = "nodes", stopped: set = frozenset()) -> Table:
    table = Table(title=title)
    rows = host_rows(hosts, stopped)
    columns = ("name", "group", "zone", "address", "state") + (("urls",) if any(r["urls"] for r in rows) else ())
    for column in columns:
        table.add_column(column)
    styles = {"running": "green", "preempted": "red"}
    for row in rows:
        cells = {**row, "urls": " ".join(f"{k}: {v}" for k, v in sorted(row["urls"].items()))}
        table.add_row(*(cells[c] for c in columns), style=styles.get(row["state"], "yellow"))
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
        if log_file and event.get("stdout"):  # quiet mode keeps Ansible's own output in the log
            self.bar.console.print(event["stdout"], markup=False, highlight=False)
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
        *(f"  {name} on {h.name}: {url}" for h in running
          for name, url in sorted(h.hostvars.get(URLS_VAR, {}).items())),
    ])
