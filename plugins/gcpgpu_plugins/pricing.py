"""Prices of what the built-in providers create, from data/prices.yaml (or the user's `prices:`
file merged over it): VMs with their GPUs and boot disks, and Filestore shares."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from gcpgpu.plugins import hookimpl

HOURS_PER_MONTH = 730
DEFAULT_TABLE = Path(__file__).parent / "data" / "prices.yaml"
VM_PROVIDERS = {"compute", "mig", "gke"}
DEFAULT_SHARE_GB = 2560

SCHEMA = {"cluster": {"properties": {"prices": {
    "type": "string",
    "description": "A YAML price table merged over the built-in one (same shape as "
                   "gcpgpu_plugins/data/prices.yaml), for negotiated or current prices.",
}}}}


@hookimpl
def gcpgpu_schema():
    return SCHEMA


@lru_cache(maxsize=8)
def price_table(override: str | None = None) -> dict:
    table = yaml.safe_load(DEFAULT_TABLE.read_text())
    if override:
        for key, value in (yaml.safe_load(Path(override).read_text()) or {}).items():
            table[key] = {**table.get(key, {}), **value} if isinstance(value, dict) else value
    return table


def _override_path(spec: dict) -> str | None:
    if not spec.get("prices"):
        return None
    return str(Path(spec.get("_base_dir", ".")) / spec["prices"])


def region_factor(table: dict, zone: str) -> float:
    factors = table["region_factor"]
    return factors.get(zone.rsplit("-", 1)[0], factors["default"])


def machine_price(table: dict, machine_type: str, mode: str) -> float:
    if machine_type in table["per_machine"]:
        return table["per_machine"][machine_type][mode]
    family, _, shape = machine_type.partition("-")
    vcpu_rate, gib_rate = table["per_vcpu_and_gib"][family][mode]
    vcpus = int(shape.rsplit("-", 1)[-1])
    gib_per_vcpu = {"standard": 3.75, "highmem": 6.5, "highcpu": 0.9}[shape.rsplit("-", 1)[0]]
    if family != "n1":
        gib_per_vcpu = {"standard": 4, "highmem": 8, "highcpu": 1}[shape.rsplit("-", 1)[0]]
    return vcpus * vcpu_rate + vcpus * gib_per_vcpu * gib_rate


def node_price(table: dict, group: dict, zone: str) -> tuple[float, float]:
    """($/hour running, $/hour stopped) of one node of a group."""
    mode = "spot" if group.get("spot") else "on_demand"
    running = machine_price(table, group["machine_type"], mode)
    accelerator = group.get("accelerator") or {}
    if accelerator.get("type") in table["gpu"] and group["machine_type"] not in table["per_machine"]:
        running += accelerator.get("count", 1) * table["gpu"][accelerator["type"]][mode]
    disk = group.get("disk") or {}
    disk_hourly = (disk.get("size_gb", 0) * table["disk_gb_month"].get(disk.get("type"), 0)
                   / HOURS_PER_MONTH)
    factor = region_factor(table, zone)
    return (running * factor + disk_hourly), disk_hourly


def _describe(group: dict) -> str:
    accelerator = group.get("accelerator") or {}
    gpus = f" + {accelerator.get('count', 1)}x {accelerator['type']}" if accelerator.get("type") else ""
    return f"{group['machine_type']}{gpus}{' (spot)' if group.get('spot') else ''}"


def _share(entry) -> tuple[str, str, int]:
    if isinstance(entry, str):  # the env-var tool's "/mount/path:TIER[:SIZE_GB]"
        path, tier, *size = entry.split(":")
        return path, tier, int(size[0]) if size else DEFAULT_SHARE_GB
    return (entry.get("path", ""), entry.get("tier", "BASIC_HDD"),
            int(entry.get("size_gb", DEFAULT_SHARE_GB)))


@hookimpl
def gcpgpu_prices(spec):
    table = price_table(_override_path(spec))
    zone = spec.get("zone", table["base_region"] + "-a")
    items = []
    for name, group in spec.get("node_groups", {}).items():
        if group.get("provider") not in VM_PROVIDERS or not group.get("machine_type"):
            continue
        try:
            running, stopped = node_price(table, group, zone)
            item = _describe(group)
        except (KeyError, ValueError, IndexError):  # a shape the table does not know
            running, stopped, item = 0.0, 0.0, f"{_describe(group)} (not in the price table)"
        items.append({"group": name, "item": item, "units": group.get("count", 1),
                      "running": round(running, 6), "stopped": round(stopped, 6), "per_host": True})
    nfs = (spec.get("storage") or {}).get("nfs") or []
    for entry in nfs.split(",") if isinstance(nfs, str) else nfs:
        path, tier, size_gb = _share(entry)
        hourly = size_gb * table["filestore_gb_month"].get(tier, 0) / HOURS_PER_MONTH * region_factor(table, zone)
        items.append({"group": "storage", "item": f"Filestore {tier} {size_gb} GB ({path})", "units": 1,
                      "running": round(hourly, 6), "stopped": round(hourly, 6), "per_host": False})
    return items
