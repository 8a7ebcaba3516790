"""Local state: what gcpgpu intended and achieved for a cluster, and the lock that serialises
commands on it.

Intent is recorded before every mutating call and the outcome after, so a run killed at any
point leaves enough to converge from: a resource in ``creating`` keeps its request id, which a
re-run reuses so the API deduplicates the insert instead of making a second resource.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path

from gcpgpu.errors import LockedError

STATE_ENV = "GCPGPU_STATE_DIR"


def default_state_root() -> Path:
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV])
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "gcpgpu"


class ClusterState:
    def __init__(self, root: Path, project: str, cluster: str):
        self.dir = Path(root).expanduser() / project / cluster
        self.file = self.dir / "state.json"
        self.resources: dict[str, dict] = {}
        self._write_lock = threading.Lock()  # batches of one apply record in parallel
        if self.file.exists():
            self.resources = json.loads(self.file.read_text()).get("resources", {})

    @classmethod
    def for_spec(cls, spec: dict) -> "ClusterState":
        root = (spec.get("state") or {}).get("path") or default_state_root()
        return cls(Path(root), spec["project"], spec["name"])

    def record(self, entries: dict[str, dict]) -> None:
        """Merge ``{key: fields}`` into the recorded resources and save once."""
        with self._write_lock:
            for key, entry in entries.items():
                self.resources[key] = {**self.resources.get(key, {}), **entry, "updated": time.time()}
            self._save()

    def forget(self, keys) -> None:
        with self._write_lock:
            if [self.resources.pop(key) for key in keys if key in self.resources]:
                self._save()

    def remember_spec(self, spec: dict, spec_path: str) -> None:
        """Keep the spec `up` used, so `gcpgpu ls` and `sweep` know the cluster without its file."""
        self.dir.mkdir(parents=True, exist_ok=True)
        snapshot = {"spec_path": str(Path(spec_path).resolve()), "spec": spec, "saved": time.time(),
                    "meta": {"created_at": time.time(), **self.meta}}  # created_at: the first up
        tmp = self.dir / "spec.json.tmp"
        tmp.write_text(json.dumps(snapshot, indent=1, sort_keys=True, default=str))
        os.replace(tmp, self.dir / "spec.json")

    @property
    def stopped(self) -> set[str]:
        """Hosts `gcpgpu stop` stopped (a stopped spot VM not listed here was preempted)."""
        path = self.dir / "stopped.json"
        return set(json.loads(path.read_text())) if path.exists() else set()

    def mark_stopped(self, names, stopped: bool) -> None:
        with self._write_lock:
            names = (self.stopped | set(names)) if stopped else (self.stopped - set(names))
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.dir / "stopped.json.tmp"
            tmp.write_text(json.dumps(sorted(names)))
            os.replace(tmp, self.dir / "stopped.json")

    def forget_spec(self) -> None:
        (self.dir / "spec.json").unlink(missing_ok=True)

    @property
    def meta(self) -> dict:
        return (self.remembered_spec() or {}).get("meta", {})

    def remembered_spec(self) -> dict | None:
        path = self.dir / "spec.json"
        return json.loads(path.read_text()) if path.exists() else None

    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"resources": self.resources}, indent=1, sort_keys=True))
        os.replace(tmp, self.file)  # atomic: a kill never leaves half a file

    @contextlib.contextmanager
    def lock(self, command: str):
        """Hold the cluster's lock; fail fast, naming the holder, if another command has it.

        flock is released by the kernel when the holder dies, so kill -9 leaves no stale lock.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "lock"
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another gcpgpu process"
                raise LockedError(
                    f"cluster {self.dir.name!r} is locked by {holder}; wait for it to finish "
                    f"(or stop it) and retry"
                ) from None
            handle.truncate(0)
            handle.write(f"pid {os.getpid()} on {socket.gethostname()} running '{command}' "
                         f"since {time.strftime('%Y-%m-%d %H:%M:%S')}")
            handle.flush()
            try:
                yield self
            finally:
                handle.truncate(0)


def known_clusters(root: Path | None = None):
    """(state, snapshot) of every cluster whose spec `up` remembered under the state root."""
    root = Path(root or default_state_root()).expanduser()
    for path in sorted(root.glob("*/*/spec.json")):
        state = ClusterState(root, path.parent.parent.name, path.parent.name)
        yield state, json.loads(path.read_text())
