"""Long-running operations: status derived from elapsed time, effects fired on phase changes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

from .errors import OperationError
from .resources import new_id, rfc3339

PENDING_SHARE = 0.2  # first 20% of the latency PENDING, the rest RUNNING, then DONE


@dataclass
class Operation:
    project: str
    scope: str  # "zones/us-central1-a", "regions/us-central1" or "global"
    name: str
    operation_type: str
    target_link: str
    target_id: str | None
    base_url: str
    latency: float
    error: OperationError | None = None
    user: str = "anonymous@gcpgpu-emulator.invalid"
    bulk_target_count: int | None = None  # set for bulkInsert: instancesBulkInsertOperationMetadata
    bulk_created_count: int = 0
    on_running: list[Callable[[], None]] = field(default_factory=list)
    on_done: list[Callable[[], None]] = field(default_factory=list)
    id: str = field(default_factory=new_id)
    created_monotonic: float = field(default_factory=time.monotonic)
    created_wall: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    fired_running: bool = False
    fired_done: bool = False

    # ----------------------------------------------------------------------- timing

    @property
    def running_at(self) -> float:
        return self.created_monotonic + self.latency * PENDING_SHARE

    @property
    def done_at(self) -> float:
        return self.created_monotonic + self.latency

    def phase(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        if now >= self.done_at:
            return "DONE"
        return "RUNNING" if now >= self.running_at else "PENDING"

    def advance(self, now: float) -> None:
        """Fire the callbacks of every phase reached since the last call (under the state lock)."""
        phase = self.phase(now)
        if phase in ("RUNNING", "DONE") and not self.fired_running:
            self.fired_running = True
            if self.error is None:
                for callback in self.on_running:
                    callback()
        if phase == "DONE" and not self.fired_done:
            self.fired_done = True
            if self.error is None:
                for callback in self.on_done:
                    callback()

    # -------------------------------------------------------------------------- JSON

    def self_link(self) -> str:
        return f"{self.base_url}/compute/v1/projects/{self.project}/{self.scope}/operations/{self.name}"

    def to_json(self, now: float | None = None) -> dict:
        now = time.monotonic() if now is None else now
        phase = self.phase(now)
        op = {
            "kind": "compute#operation",
            "id": self.id,
            "name": self.name,
            "operationType": self.operation_type,
            "targetLink": self.target_link,
            "status": phase,
            "user": self.user,
            "progress": self._progress(phase, now),
            "insertTime": rfc3339(self.created_wall),
            "selfLink": self.self_link(),
        }
        if self.target_id:
            op["targetId"] = self.target_id
        if self.scope != "global":
            collection = self.scope.split("/")[0]  # "zones" -> field "zone"
            op[collection[:-1]] = f"{self.base_url}/compute/v1/projects/{self.project}/{self.scope}"
        if phase != "PENDING":
            op["startTime"] = rfc3339(self.created_wall + timedelta(seconds=self.latency * PENDING_SHARE))
        if phase == "DONE":
            op["endTime"] = rfc3339(self.created_wall + timedelta(seconds=self.latency))
            if self.error:
                op.update(self.error.as_operation_fields())
        if self.bulk_target_count is not None:
            op["instancesBulkInsertOperationMetadata"] = self._bulk_metadata(phase)
        return op

    def _progress(self, phase: str, now: float) -> int:
        if phase == "DONE":
            return 100
        if phase == "PENDING" or self.latency <= 0:
            return 0
        return int(100 * (now - self.created_monotonic) / self.latency)

    def _bulk_metadata(self, phase: str) -> dict:
        done = phase == "DONE"
        created = self.bulk_created_count if done else 0
        status = {
            "status": "DONE" if done else "CREATING",
            "targetVmCount": self.bulk_target_count,
            "createdVmCount": created,
            "failedToCreateVmCount": (self.bulk_target_count - created) if done else 0,
            "deletedVmCount": 0,
        }
        return {"perLocationStatus": {self.scope: status}}
