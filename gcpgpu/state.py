"""State: what gcpgpu intended and achieved for a cluster, and the lock that serialises
commands on it.

Intent is recorded before every mutating call and the outcome after, so a run killed at any
point leaves enough to converge from: a resource in ``creating`` keeps its request id, which a
re-run reuses so the API deduplicates the insert instead of making a second resource.

Where the records live is a *store*: by default a local directory (:class:`LocalStore`); a
``state.path`` with a scheme (``gs://bucket/prefix``) is kept by the plugin whose
``gcpgpu_state_store`` hook claims it. A store keeps a few small text records by name
(``state.json``, ``spec.json``, ``stopped.json``) and the cluster's lock. Every cluster also has a
local working directory (``ClusterState.dir``: logs and other local files) whatever its store.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import threading
import time
from pathlib import Path

from gcpgpu.errors import GcpgpuError, LockedError

STATE_ENV = "GCPGPU_STATE_DIR"
SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def default_state_root() -> Path:
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV])
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "gcpgpu"


def scheme_of(path) -> str | None:
    """The scheme of a remote ``state.path`` (``gs`` for ``gs://bucket``); None for a local path."""
    found = SCHEME.match(str(path)) if isinstance(path, str) else None
    return found.group(1).lower() if found else None


def holder_line(command: str) -> str:
    """Who holds a lock, as a lock's content: read back into the LockedError of the next command."""
    return (f"pid {os.getpid()} on {socket.gethostname()} running '{command}' "
            f"since {time.strftime('%Y-%m-%d %H:%M:%S')}")


class LocalStore:
    """Records as files in a local directory (replaced atomically); the lock is an flock."""

    remote = False

    def __init__(self, directory: Path):
        self.dir = Path(directory)

    @property
    def where(self) -> str:
        return str(self.dir)

    def read(self, name: str) -> str | None:
        path = self.dir / name
        return path.read_text() if path.exists() else None

    def write(self, name: str, text: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f"{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.dir / name)  # atomic: a kill never leaves half a file

    def delete(self, name: str) -> None:
        (self.dir / name).unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self, command: str):
        """Hold the lock; fail fast, naming the holder, if another command has it.

        flock is released by the kernel when the holder dies, so kill -9 leaves no stale lock.
        """
        with self._locked(command, "wait for it to finish (or stop it) and retry") as handle:
            handle.truncate(0)
            handle.write(holder_line(command))
            handle.flush()
            try:
                yield
            finally:
                handle.truncate(0)

    def unlock(self) -> str | None:
        """Nothing to remove: an flock dies with its holder. Fails naming a live holder."""
        with self._locked("", "an flock is released when its process exits: stop that process"):
            return None

    @contextlib.contextmanager
    def _locked(self, command: str, advice: str):
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another gcpgpu process"
                raise LockedError(f"cluster {self.dir.name!r} is locked by {holder}; {advice}") from None
            yield handle


class ClusterState:
    def __init__(self, root: Path, project: str, cluster: str, store=None):
        self.dir = Path(root).expanduser() / project / cluster  # local working directory
        self.store = store or LocalStore(self.dir)
        self.resources: dict[str, dict] = {}
        self._write_lock = threading.Lock()  # batches of one apply record in parallel
        text = self.store.read("state.json")
        if text:
            self.resources = json.loads(text).get("resources", {})

    @classmethod
    def for_spec(cls, spec: dict, clients=None, plugins=None) -> "ClusterState":
        """The cluster's state where ``state.path`` says: a local directory, or a store a plugin
        offers for a path with a scheme (its working directory is then under the default root)."""
        path = (spec.get("state") or {}).get("path")
        if not scheme_of(path):
            return cls(Path(path or default_state_root()), spec["project"], spec["name"])
        if plugins is None:
            from gcpgpu.plugins import Plugins

            plugins = Plugins()
        if clients is None:
            from gcpgpu.clients import ClientFactory, endpoint_from_env

            clients = ClientFactory(endpoint_from_env())
        store = plugins.hook.gcpgpu_state_store(path=path, project=spec["project"],
                                                cluster=spec["name"], clients=clients)
        if store is None:
            raise GcpgpuError(f"state.path: no plugin keeps state at {path!r}; "
                              f"`gcpgpu plugins` lists the loaded plugins")
        return cls(default_state_root(), spec["project"], spec["name"], store)

    @property
    def where(self) -> str:
        """Where the records are kept: a directory, or e.g. gs://bucket/prefix/project/cluster."""
        return self.store.where

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
        """Keep the spec `up` used, so `gcpgpu ls` and `sweep` know the cluster without its file.

        A remote store gets it, and so does the local working directory: `ls` and `sweep` read
        only this machine's state root."""
        snapshot = {"spec_path": str(Path(spec_path).resolve()), "spec": spec, "saved": time.time(),
                    "meta": {"created_at": time.time(), **self.meta}}  # created_at: the first up
        text = json.dumps(snapshot, indent=1, sort_keys=True, default=str)
        self.store.write("spec.json", text)
        if self.store.remote:
            LocalStore(self.dir).write("spec.json", text)

    @property
    def stopped(self) -> set[str]:
        """Hosts `gcpgpu stop` stopped (a stopped spot VM not listed here was preempted)."""
        text = self.store.read("stopped.json")
        return set(json.loads(text)) if text else set()

    def mark_stopped(self, names, stopped: bool) -> None:
        with self._write_lock:
            names = (self.stopped | set(names)) if stopped else (self.stopped - set(names))
            self.store.write("stopped.json", json.dumps(sorted(names)))

    def forget_spec(self) -> None:
        self.store.delete("spec.json")
        if self.store.remote:
            LocalStore(self.dir).delete("spec.json")

    @property
    def meta(self) -> dict:
        return (self.remembered_spec() or {}).get("meta", {})

    def remembered_spec(self) -> dict | None:
        text = self.store.read("spec.json")
        return json.loads(text) if text else None

    def _save(self) -> None:
        self.store.write("state.json", json.dumps({"resources": self.resources}, indent=1, sort_keys=True))

    @contextlib.contextmanager
    def lock(self, command: str):
        """Hold the cluster's lock; fail fast, naming the holder, if another command has it."""
        with self.store.lock(command):
            yield self

    def unlock(self) -> str | None:
        """Remove a lock its holder left behind (killed, machine lost); the holder it named."""
        return self.store.unlock()


def known_clusters(root: Path | None = None):
    """(state, snapshot) of every cluster whose spec `up` remembered under the state root."""
    root = Path(root or default_state_root()).expanduser()
    for path in sorted(root.glob("*/*/spec.json")):
        state = ClusterState(root, path.parent.parent.name, path.parent.name)
        yield state, json.loads(path.read_text())
