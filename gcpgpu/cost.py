"""What a cluster costs per hour, from the price items plugins give (hook gcpgpu_prices).

Planned cost counts every unit running; live cost counts each host by its state (a stopped VM
still pays for its disk) and every other item (a file share) as running.
"""
from __future__ import annotations

from collections import Counter

RUNNING_STATES = {"PROVISIONING", "STAGING", "RUNNING", "REPAIRING"}


def price_items(spec: dict, plugins) -> list[dict]:
    return [item for items in plugins.hook.gcpgpu_prices(spec=spec) for item in items]


def planned(items: list[dict]) -> list[dict]:
    return [{**item, "hourly": item["units"] * item["running"]} for item in items]


def live(items: list[dict], hosts) -> list[dict]:
    running = Counter(h.group for h in hosts if h.status in RUNNING_STATES)
    present = Counter(h.group for h in hosts)
    rows = []
    for item in items:
        if item.get("per_host"):
            up, down = running[item["group"]], present[item["group"]] - running[item["group"]]
            rows.append({**item, "units": up + down, "hourly": up * item["running"] + down * item["stopped"]})
        else:
            rows.append({**item, "hourly": item["units"] * item["running"]})
    return rows


def total(rows: list[dict]) -> float:
    return round(sum(row["hourly"] for row in rows), 4)
