"""Errors users see. Each carries enough to act on: where, what, and what to do."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a cluster.yaml: its YAML path, what is wrong, and a suggestion."""

    path: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.path or '(top level)'}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class GcpgpuError(Exception):
    """An error with a message meant for the user; the CLI prints it without a traceback."""

    exit_code = 1


class SpecError(GcpgpuError):
    """The cluster file is unusable. Raised before any API call; exit code 2."""

    exit_code = 2

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


class LockedError(GcpgpuError):
    """Another gcpgpu command holds this cluster's lock."""


class CapacityError(GcpgpuError):
    """No zone could supply the requested machines (stockout or quota)."""
