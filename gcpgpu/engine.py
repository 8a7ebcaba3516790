"""spec -> plan -> apply. Knows no resource kind: providers say what is desired and live."""
from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

from gcpgpu.errors import GcpgpuError
from gcpgpu.provider import Context, Host, Resource

# Called once per batch with (description, size); returns a callable that advances it.
StartBatch = Callable[[str, int], Callable[[int], None]]


@dataclass
class Plan:
    create: list[Resource] = field(default_factory=list)
    keep: list[Resource] = field(default_factory=list)
    update: list[Resource] = field(default_factory=list)  # changed in place (desired values)
    replace: list[Resource] = field(default_factory=list)
    delete: list[Resource] = field(default_factory=list)
    forget: list[str] = field(default_factory=list)  # state entries with nothing live behind them

    @property
    def changes(self) -> bool:
        return bool(self.create or self.update or self.replace or self.delete)

    def rows(self) -> list[dict]:
        actions = (("create", self.create), ("update", self.update), ("replace", self.replace),
                   ("delete", self.delete), ("keep", self.keep))
        return [{"action": action, "provider": r.provider, "kind": r.kind, "name": r.name,
                 "group": r.group, "location": r.location}
                for action, resources in actions for r in resources]


class ApplyError(GcpgpuError):
    def __init__(self, failures: list[str]):
        super().__init__("some resources could not be changed (re-run to converge):\n"
                         + "\n".join(f"  - {f}" for f in failures))


class Cluster:
    """One cluster: its spec, the plugins serving it, its clients and its state."""

    def __init__(self, spec: dict, plugins, clients, state):
        self.spec, self.plugins, self.clients, self.state = spec, plugins, clients, state

    def context(self, progress=lambda n: None) -> Context:
        return Context(spec=self.spec, clients=self.clients, progress=progress, ssh_keys=self.keys,
                       log=logging.getLogger("gcpgpu.providers").info)

    @cached_property
    def keys(self):
        from gcpgpu.ssh import ClusterKeys

        return ClusterKeys.for_spec(self.spec)  # the key pair is made on first use

    def desired(self) -> list[Resource]:
        in_groups = [resource
                     for name, group in self.spec["node_groups"].items()
                     for resource in self.plugins.provider(group["provider"]).desired(self.spec, name, group)]
        return in_groups + [resource for provider in self.plugins.providers.values()
                            if hasattr(provider, "cluster_resources")
                            for resource in provider.cluster_resources(self.spec)]

    def _providers(self, everything: bool) -> list:
        """Providers to look at: those the spec or state use, or every one (the `down` sweep)."""
        if everything:
            return list(self.plugins.providers.values())
        names = {g["provider"] for g in self.spec["node_groups"].values()}
        names |= {entry["provider"] for entry in self.state.resources.values()}
        names |= {name for name, provider in self.plugins.providers.items()
                  if hasattr(provider, "cluster_resources") and provider.cluster_resources(self.spec)}
        return [self.plugins.providers[n] for n in sorted(names) if n in self.plugins.providers]

    def observe(self, everything: bool = False, offering: str = "") -> list[Resource]:
        """Live resources of the providers in use (of every provider with ``everything``). With
        ``offering``, only of providers that have that method: listing hosts reads no IAM policy."""
        providers = [p for p in self._providers(everything) if not offering or hasattr(p, offering)]
        with ThreadPoolExecutor(max_workers=max(1, len(providers))) as pool:
            found = pool.map(lambda p: p.observe(self.context()), providers)
        return [resource for resources in found for resource in resources]

    def _live_by_provider(self, live: list[Resource] | None, offering: str) -> dict[str, list[Resource]]:
        """{provider name: its live resources} for the providers that have method ``offering``."""
        live = self.observe(offering=offering) if live is None else live
        by_provider = {p.name: [] for p in self._providers(everything=False) if hasattr(p, offering)}
        for resource in live:
            if hasattr(self.plugins.providers.get(resource.provider), offering):
                by_provider.setdefault(resource.provider, []).append(resource)
        return by_provider

    def hosts(self, live: list[Resource] | None = None) -> list[Host]:
        found = []
        for name, resources in sorted(self._live_by_provider(live, "hosts").items()):
            for host in self.plugins.providers[name].hosts(self.context(), resources):
                host.provider = name
                found.append(host)
        return found

    def variables(self, live: list[Resource] | None = None) -> dict:
        """Variables every host sees, from the providers that offer some (e.g. share addresses)."""
        found: dict = {}
        for name, resources in sorted(self._live_by_provider(live, "variables").items()):
            found.update(self.plugins.providers[name].variables(self.context(), resources))
        return found

    def plan(self) -> Plan:
        live = {r.key: r for r in self.observe()}
        desired = self.desired()
        known = set(live) | {r.key for r in desired}
        plan = Plan(forget=[key for key in self.state.resources if key not in known])
        for want in desired:
            have = live.pop(want.key, None)
            if have is None:
                plan.create.append(want)
            elif have.digest != want.digest:
                plan.replace.append(want)
                plan.delete.append(have)
            elif have.update_digest != want.update_digest:
                plan.update.append(want)
            else:
                plan.keep.append(have)
        plan.delete.extend(live.values())  # ours by label, no longer in the spec
        return plan

    def plan_down(self) -> Plan:
        live = self.observe(everything=True)
        live_keys = {r.key for r in live}
        return Plan(delete=live, forget=[k for k in self.state.resources if k not in live_keys])

    def apply(self, plan: Plan, start_batch: StartBatch) -> None:
        """Deletes first (a replaced VM frees its name; later stages before earlier ones), then
        in-place updates, then creates stage by stage; batches within a stage run in parallel.
        A failed stage stops the stages that depend on it."""
        failures = []
        for stage in sorted({r.stage for r in plan.delete}, reverse=True):
            failures += self._run([r for r in plan.delete if r.stage == stage], "delete", start_batch)
        failures += self._run(plan.update, "update", start_batch)
        failed_deletes = {r.name for r in plan.delete if r.key in self.state.resources}
        creates = [r for r in plan.create + plan.replace if r.name not in failed_deletes]
        for stage in sorted({r.stage for r in creates}):
            failed = self._run([r for r in creates if r.stage == stage], "create", start_batch)
            failures += failed
            later = [r.key for r in creates if r.stage > stage]
            if failed and later:
                failures.append(f"not created, an earlier step failed: {', '.join(later)}")
                break
        self.state.forget(plan.forget)
        # Found live (perhaps made by a run that was killed): record it as ours.
        self.state.record({r.key: self._entry(r, "created") for r in plan.keep + plan.update
                           if self.state.resources.get(r.key, {}).get("status") != "created"})
        if failures:
            raise ApplyError(failures)

    @staticmethod
    def _entry(r: Resource, status: str) -> dict:
        return {"status": status, "request_id": r.request_id, "provider": r.provider,
                "kind": r.kind, "name": r.name, "group": r.group, "location": r.location,
                "digest": r.digest}

    def _run(self, resources: list[Resource], action: str, start_batch: StartBatch) -> list[str]:
        batches = defaultdict(list)
        for resource in resources:
            batches[(resource.provider, resource.group, resource.kind)].append(resource)
        if not batches:
            return []
        work = [(key, batch, start_batch(f"{action} {key[2]} {key[1]} ({len(batch)})", len(batch)))
                for key, batch in sorted(batches.items())]
        with ThreadPoolExecutor(max_workers=len(work)) as pool:
            results = pool.map(lambda item: self._run_batch(action, *item), work)
        return [failure for failure in results if failure]

    def _run_batch(self, action, key, batch, advance) -> str | None:
        provider = self.plugins.providers[key[0]]
        ctx = self.context(progress=advance)
        try:
            if action == "create":
                self._create(provider, ctx, batch)
            elif action == "update":
                provider.update(ctx, batch)
            else:
                self._delete(provider, ctx, batch)
        except GcpgpuError as error:
            return f"{action} {key[2]} {key[1]}: {error}"
        return None

    def _create(self, provider, ctx, batch: list[Resource]) -> None:
        for r in batch:
            entry = self.state.resources.get(r.key, {})
            # Reuse the request id only when the outcome of the last attempt is unknown.
            reuse = entry.get("status") == "creating" and entry.get("request_id")
            r.request_id = reuse or str(uuid.uuid4())
        self.state.record({r.key: self._entry(r, "creating") for r in batch})
        try:
            provider.create(ctx, batch)
        except GcpgpuError:
            self.state.record({r.key: {"status": "failed", "request_id": ""} for r in batch})
            raise
        self.state.record({r.key: {"status": "created", "request_id": ""} for r in batch})

    def _delete(self, provider, ctx, batch: list[Resource]) -> None:
        self.state.record({r.key: self._entry(r, "deleting") for r in batch})
        provider.delete(ctx, batch)
        self.state.forget(r.key for r in batch)


def read_spec(path: str, plugins) -> dict:
    """The validated spec, remembering its directory (relative paths in it start there)."""
    from gcpgpu.configure import assemble_playbook
    from gcpgpu.spec import load_spec

    spec = load_spec(path, plugins)
    spec["_base_dir"] = str(Path(path).resolve().parent)
    assemble_playbook(spec, plugins)  # role variables are part of the spec: bad ones exit 2 now
    return spec


def open_cluster(path: str, plugins, endpoint: str | None) -> Cluster:
    from gcpgpu.clients import ClientFactory
    from gcpgpu.state import ClusterState

    spec = read_spec(path, plugins)
    clients = ClientFactory(endpoint)
    return Cluster(spec, plugins, clients, ClusterState.for_spec(spec, clients, plugins))
