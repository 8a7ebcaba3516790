"""The plugin manager: built-ins and third-party plugins both come from the ``gcpgpu``
entry-point group. ``GCPGPU_DISABLE_PLUGINS=a,b`` blocks plugins by entry-point name."""
from __future__ import annotations

import os
from functools import cached_property
from importlib import metadata

import pluggy

from gcpgpu import hookspecs
from gcpgpu.errors import GcpgpuError

hookimpl = pluggy.HookimplMarker("gcpgpu")
ENTRY_POINT_GROUP = "gcpgpu"


class Plugins:
    """A side-effect-free wrapper: nothing is imported until first use."""

    def __init__(self, extra: tuple = ()):
        self._extra = extra
        self._dists: dict = {}  # entry-point name -> distribution

    @cached_property
    def manager(self) -> pluggy.PluginManager:
        pm = pluggy.PluginManager("gcpgpu")
        pm.add_hookspecs(hookspecs)
        for name in blocked_plugins():
            pm.set_blocked(name)
        # One copy per distribution, the one Python imports (importlib.metadata deduplicates): a
        # venv's editable install may shadow another copy in the system site-packages, whose
        # entry points (pluggy's load_setuptools_entrypoints reads every copy) may not import.
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if not pm.is_blocked(ep.name) and pm.get_plugin(ep.name) is None:
                pm.register(ep.load(), name=ep.name)
                self._dists[ep.name] = ep.dist
        for plugin in self._extra:
            pm.register(plugin)
        return pm

    @property
    def hook(self):
        return self.manager.hook

    @cached_property
    def providers(self) -> dict:
        found: dict = {}

        def register(provider):
            if provider.name in found:
                raise GcpgpuError(f"two plugins offer provider {provider.name!r}")
            found[provider.name] = provider

        self.hook.gcpgpu_register_providers(register=register)
        return found

    def provider(self, name: str):
        try:
            return self.providers[name]
        except KeyError:
            available = ", ".join(sorted(self.providers)) or "none"
            raise GcpgpuError(f"unknown provider {name!r}; available: {available}") from None

    def describe(self) -> list[dict]:
        """Name, distribution, version and hooks of each loaded plugin (for `gcpgpu plugins`)."""
        pm = self.manager
        rows = []
        for name, plugin in pm.list_name_plugin():
            if plugin is None:  # blocked
                rows.append({"name": name, "package": "", "version": "", "hooks": [], "blocked": True})
                continue
            dist = self._dists.get(name)
            rows.append({
                "name": name,
                "package": dist.metadata["Name"] if dist else "",
                "version": dist.version if dist else "",
                "hooks": sorted(h.name for h in pm.get_hookcallers(plugin) or []),
                "blocked": False,
            })
        return rows


def blocked_plugins() -> list[str]:
    return [n.strip() for n in os.environ.get("GCPGPU_DISABLE_PLUGINS", "").split(",") if n.strip()]


def entry_point_names() -> list[str]:
    return sorted(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))
