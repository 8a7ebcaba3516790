"""GPU node roles: the NVIDIA driver (`nvidia_driver`), Google's Ops Agent (`ops_agent`, the
env-var tool's DISABLE_OPS_AGENT inverted) and GPU health checks (`gpu_health`, also run alone by
`gcpgpu health`). The driver comes before anything that needs GPUs, health last."""
from __future__ import annotations

import click

from gcpgpu.plugins import hookimpl

SCHEMA = {
    "nvidia_driver": {
        "description": "NVIDIA driver on nodes with NVIDIA GPUs (Google's GCE install sequence). "
                       "Nodes whose nvidia-smi already works (deep-learning images) are left alone.",
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "properties": {
            "install": {"enum": ["auto", False], "default": "auto",
                        "description": "auto: install where a GPU has no working driver; false: never "
                                       "install (bring your own image or driver)."},
            "branch": {"type": "string", "pattern": "^([0-9]{3})?$", "default": "",
                       "description": "Driver branch such as '550' (package cuda-drivers-550); empty: "
                                      "the newest (cuda-drivers)."},
            "reboot": {"type": "boolean", "default": True,
                       "description": "Reboot a node (and wait) when the new driver needs it; false "
                                      "fails that node with a message instead."},
        },
    },
    "ops_agent": {
        "type": "boolean", "default": True,
        "description": "Install Google's Ops Agent (logs and metrics, GPU metrics on GPU nodes) on "
                       "Compute Engine nodes. false is the env-var tool's DISABLE_OPS_AGENT=true.",
    },
    "health": {
        "description": "GPU health checks after configuration and in `gcpgpu health`.",
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "properties": {
            "enabled": {"type": "boolean", "default": True,
                        "description": "Check every node's GPUs at the end of up and configure."},
            "max_temperature_c": {"type": "integer", "minimum": 30, "maximum": 120, "default": 85,
                                  "description": "A GPU hotter than this (Celsius) makes its node unhealthy."},
            "dcgm_level": {"enum": [0, 1, 2, 3], "default": 1,
                           "description": "dcgmi diag run level where DCGM is installed: 1 takes "
                                          "seconds, 2 about two minutes, 3 longer; 0 skips DCGM."},
        },
    },
}

HEALTH_COLUMNS = ("node", "GPUs expected/found", "driver", "ECC errors", "max temp", "dcgm", "verdict")


@hookimpl
def gcpgpu_schema():
    return {"cluster": {"properties": SCHEMA}}


def driver_play(spec: dict) -> list[dict]:
    driver = spec.get("nvidia_driver") or {}
    if driver.get("install", "auto") is False:
        return []
    return [{"name": "nvidia driver", "hosts": "all", "order": 20, "gather_facts": False,
             "roles": [{"role": "nvidia_driver", "tags": ["driver"],
                        "vars": {"nvidia_driver_branch": driver.get("branch", ""),
                                 "nvidia_driver_reboot": driver.get("reboot", True)},
                        "fields": {"nvidia_driver_branch": "nvidia_driver.branch",
                                   "nvidia_driver_reboot": "nvidia_driver.reboot"}}]}]


def ops_agent_play(spec: dict) -> list[dict]:
    if not spec.get("ops_agent", True):
        return []
    return [{"name": "ops agent", "hosts": "all", "order": 25, "gather_facts": False,
             "roles": [{"role": "ops_agent", "tags": ["monitoring"],
                        "vars": {"ops_agent_gpu_metrics": "{{ (gcpgpu_gpus | default(0) | int) > 0 }}"}}]}]


def health_play(spec: dict) -> list[dict]:
    health = spec.get("health") or {}
    if not health.get("enabled", True):
        return []
    return [{"name": "gpu health", "hosts": "all", "order": 95, "gather_facts": False,
             "roles": [{"role": "gpu_health", "tags": ["health"],
                        "vars": {"gpu_health_max_temperature_c": health.get("max_temperature_c", 85),
                                 "gpu_health_dcgm_level": health.get("dcgm_level", 1)},
                        "fields": {"gpu_health_max_temperature_c": "health.max_temperature_c",
                                   "gpu_health_dcgm_level": "health.dcgm_level"}}]}]


@hookimpl
def gcpgpu_plays(spec):
    return driver_play(spec) + ops_agent_play(spec) + health_play(spec)


def health_rows(reports: dict) -> list[dict]:
    """One row per node from the gpu_health role's reports ({host: report})."""
    rows = []
    for node, r in sorted(reports.items()):
        temp = r.get("max_temperature_c")
        no_driver = r.get("driver", "-") == "-" and r.get("pci", 0)
        found = f"{r['pci']} on PCI, no driver" if no_driver else r.get("found", 0)
        rows.append({"node": node, "GPUs expected/found": f"{r.get('expected', 0)}/{found}",
                     "driver": r.get("driver", "-"),
                     "ECC errors": "-" if r.get("ecc") is None else str(r["ecc"]),
                     "max temp": "-" if temp is None else f"{temp} C", "dcgm": r.get("dcgm", "-"),
                     "verdict": "healthy" if r.get("healthy") else "UNHEALTHY: " + "; ".join(r.get("problems", [])),
                     "healthy": bool(r.get("healthy"))})
    return rows


def health_table(rows: list[dict]):
    from rich.table import Table

    table = Table(title="GPU health")
    for column in HEALTH_COLUMNS:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in HEALTH_COLUMNS), style=None if row["healthy"] else "red")
    return table


@hookimpl
def gcpgpu_after_configure(cluster, hosts, result):
    reports = result.custom_stats.get("gcpgpu_health") or {}
    if not reports:
        return []
    from gcpgpu import report

    rows = health_rows(reports)
    report.console.print(health_table(rows))
    return [f"{row['node']}: {row['verdict']}" for row in rows if not row["healthy"]]


@click.command()
@click.argument("spec_file", metavar="CLUSTER_YAML", type=click.Path(dir_okay=True))
@click.option("--limit", metavar="PATTERN", help="Only these hosts or groups (Ansible pattern).")
@click.pass_obj
def health(session, spec_file, limit):
    """Check every running node's GPUs (count against the machine type, driver, ECC errors,
    temperature, DCGM diagnostics where installed) and print a table. Exit code 1 when a node is
    unhealthy. Changes nothing on the nodes.

    Example: gcpgpu health cluster.yaml --limit workers
    """
    from gcpgpu.cli import configure_hosts
    from gcpgpu.configure import assemble_playbook
    from gcpgpu.errors import GcpgpuError

    cluster = session.cluster(spec_file)
    cluster.spec["health"] = {**cluster.spec.get("health", {}), "enabled": True}
    others = {role["role"] for play in assemble_playbook(cluster.spec, cluster.plugins)
              for role in play["roles"]} - {"gpu_health"}
    result = configure_hosts(cluster, cluster.hosts(), limit=limit, skip_roles=tuple(sorted(others)))
    if result.problems:
        raise GcpgpuError(f"{len(result.problems)} problem(s): see the GPU health table above")


@hookimpl
def gcpgpu_commands():
    return [health]
