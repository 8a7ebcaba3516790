"""Ray as the cluster's orchestrator: `orchestrator: {type: ray, head_group: head}`.

The head group's one node runs the Ray head (GCS, and the dashboard bound to 127.0.0.1); every
other node joins it as a worker. The `ray` role installs a pinned Ray into a venv (from PyPI or
from a wheelhouse for nodes without internet) and runs it under the startup_command runner, so
it starts at every boot. After configure, the dashboard tunnel and `ray status` are printed;
`gcpgpu ray status|dashboard|submit|wheelhouse` are the day-to-day commands.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import click

from gcpgpu.cli import spec_argument, ssh_argv
from gcpgpu.errors import GcpgpuError, Problem
from gcpgpu.plugins import hookimpl
from gcpgpu.spec import orchestrator_rule

RAY_VERSION = "2.60.0"
MIN_OBJECT_STORE = 75 * 1024 * 1024  # Ray refuses less
HEAD_GROUP, WORKER_GROUP = "ray_head", "ray_workers"
# Where the nvidiaN devices are counted at each start (tests point it at fake devices).
GPU_DEVICE_DIR = "/dev"

RAY_FIELDS = {
    "head_group": {"type": "string",
                   "description": "Node group of the head node; it must have count 1. Every other "
                                  "node joins the head as a worker."},
    "version": {"type": "string", "default": RAY_VERSION, "pattern": r"^\d+\.\d+\.\d+$",
                "description": "Ray version installed on every node, e.g. 2.60.0 (pinned: a "
                               "cluster's nodes and its drivers must run the same one)."},
    "wheelhouse": {"type": "string",
                   "description": "Local directory of wheels (`gcpgpu ray wheelhouse DIR`), relative "
                                  "to cluster.yaml: copied to the nodes and installed offline. "
                                  "Unset: the nodes install from PyPI."},
    "dashboard": {"type": "boolean", "default": True,
                  "description": "Install ray[default] and run the dashboard on the head, bound to "
                                 "127.0.0.1 (reach it with `gcpgpu ray dashboard`)."},
    "port": {"type": "integer", "minimum": 1024, "maximum": 65535, "default": 6379,
             "description": "Port of the head's GCS, which the workers join."},
    "dashboard_port": {"type": "integer", "minimum": 1024, "maximum": 65535, "default": 8265,
                       "description": "Port of the dashboard on the head's 127.0.0.1."},
    "venv": {"type": "string", "pattern": "^/", "default": "/opt/gcpgpu/ray",
             "description": "Virtual environment on the nodes Ray is installed into."},
    "num_cpus": {"type": "integer", "minimum": 1,
                 "description": "CPUs each node offers to Ray. Unset: all of them."},
    "object_store_memory": {"type": "integer", "minimum": MIN_OBJECT_STORE,
                            "description": "Object store size per node, in bytes. Unset: Ray's "
                                           "default (30% of memory)."},
}


def ray_settings(spec: dict) -> dict | None:
    orchestrator = spec.get("orchestrator")
    return orchestrator if isinstance(orchestrator, dict) and orchestrator.get("type") == "ray" else None


def wheelhouse_path(ray: dict, base_dir) -> Path | None:
    if not ray.get("wheelhouse"):
        return None
    return (Path(base_dir) / Path(ray["wheelhouse"]).expanduser()).resolve()


def default_wheelhouse(version: str = RAY_VERSION, dashboard: bool = False) -> Path:
    return Path.home() / ".cache" / "gcpgpu" / f"wheelhouse-ray-{version}{'-default' if dashboard else ''}"


def has_ray_wheel(directory: Path, version: str) -> bool:
    return any(directory.glob(f"ray-{version}-*.whl"))


@hookimpl
def gcpgpu_schema():
    # The core's `orchestrator` is open; this rule closes it to these keys when type is ray.
    return {"cluster": {"allOf": [orchestrator_rule("ray", {"required": ["head_group"],
                                                            "properties": RAY_FIELDS})]}}


@hookimpl
def gcpgpu_validate(spec, base_dir):
    ray = ray_settings(spec)
    if not ray or not isinstance(ray.get("head_group"), str):
        return []
    problems = []
    groups = spec.get("node_groups") if isinstance(spec.get("node_groups"), dict) else {}
    head = ray["head_group"]
    if head not in groups:
        problems.append(Problem("orchestrator.head_group", f"there is no node group {head!r}",
                                "node groups: " + (", ".join(groups) or "none")))
    elif isinstance(groups[head], dict) and groups[head].get("count", 1) != 1:
        problems.append(Problem(f"node_groups.{head}.count", f"the Ray head group {head!r} has "
                                f"count {groups[head].get('count')}; it must have 1",
                                "give the head its own group with count: 1"))
    if ray.get("port") == ray.get("dashboard_port", 8265):
        problems.append(Problem("orchestrator.dashboard_port", "is the same as orchestrator.port",
                                "use two different ports, e.g. 6379 and 8265"))
    problems.extend(_wheelhouse_problems(ray, base_dir))
    return problems


def _wheelhouse_problems(ray: dict, base_dir) -> list[Problem]:
    path = wheelhouse_path(ray, base_dir) if isinstance(ray.get("wheelhouse"), str) else None
    if path is None:
        return []
    version = ray.get("version", RAY_VERSION)
    fix = f"gcpgpu ray wheelhouse {path} --version {version}" + ("" if ray.get("dashboard", True)
                                                                else " --no-dashboard")
    if not path.is_dir():
        return [Problem("orchestrator.wheelhouse", f"{path} is not a directory", f"make one: {fix}")]
    if not has_ray_wheel(path, version):
        return [Problem("orchestrator.wheelhouse", f"{path} has no wheel of ray {version}",
                        f"download it: {fix}")]
    return []


@hookimpl
def gcpgpu_host_groups(spec, hosts):
    ray = ray_settings(spec)
    if not ray:
        return {}
    head = ray["head_group"]
    return {HEAD_GROUP: [h.name for h in hosts if h.group == head],
            WORKER_GROUP: [h.name for h in hosts if h.group != head]}


@hookimpl
def gcpgpu_plays(spec):
    ray = ray_settings(spec)
    if not ray:
        return []
    wheelhouse = wheelhouse_path(ray, spec.get("_base_dir", "."))
    role_vars = {
        "ray_version": ray["version"], "ray_dashboard": ray["dashboard"], "ray_port": ray["port"],
        "ray_dashboard_port": ray["dashboard_port"], "ray_venv": ray["venv"],
        "ray_wheelhouse": str(wheelhouse) if wheelhouse else "",
        "ray_head_group": HEAD_GROUP, "ray_worker_group": WORKER_GROUP,
        "ray_num_cpus": ray.get("num_cpus", 0), "ray_object_store_memory": ray.get("object_store_memory", 0),
        "ray_gpu_device_dir": GPU_DEVICE_DIR,
    }
    # After the node roles (drivers, mounts, files): Ray counts the GPUs the driver exposes.
    return [{"name": "ray", "hosts": f"{HEAD_GROUP}:{WORKER_GROUP}", "order": 70, "gather_facts": False,
             "roles": [{"role": "ray", "tags": ["ray"], "vars": role_vars}]}]


def head_host(cluster, hosts=None):
    ray = ray_settings(cluster.spec)
    if not ray:
        raise GcpgpuError(f"cluster {cluster.spec['name']!r} has no `orchestrator: {{type: ray}}`")
    hosts = cluster.hosts() if hosts is None else hosts
    for host in hosts:
        if host.group == ray["head_group"] and host.status == "RUNNING":
            return host
    raise GcpgpuError(f"the Ray head (group {ray['head_group']!r}) is not running; run `gcpgpu up`")


def internal_ip(host) -> str:
    interfaces = host.hostvars.get("networkInterfaces") or [{}]
    return interfaces[0].get("networkIP") or host.address


def status_command(ray: dict, head) -> list[str]:
    return [f"{ray['venv']}/bin/ray", "status", f"--address={internal_ip(head)}:{ray['port']}"]


def tunnel_argv(cluster, head, local_port: int) -> list[str]:
    """OpenSSH forwarding local_port to the dashboard on the head's loopback: no public port."""
    ray = ray_settings(cluster.spec)
    argv = ssh_argv(cluster, head, interactive=True)
    return [*argv[:-1], "-N", "-L", f"{local_port}:127.0.0.1:{ray['dashboard_port']}", argv[-1]]


@hookimpl
def gcpgpu_after_configure(cluster, hosts, result):
    """Print how to reach the dashboard and `ray status`; return the problems (no head, no status)."""
    ray = ray_settings(cluster.spec)
    if not ray:
        return []
    try:
        head = head_host(cluster, hosts)
    except GcpgpuError as error:
        return [f"ray: {error}"]
    if ray["dashboard"]:
        port = ray["dashboard_port"]
        say(f"Ray dashboard: bound to 127.0.0.1 on {head.name}; tunnel it, then open http://localhost:{port}")
        say("  " + shlex.join(tunnel_argv(cluster, head, port)))
        say("  (or: gcpgpu ray dashboard CLUSTER_YAML)")
    try:
        status = subprocess.run(ssh_argv(cluster, head, [shlex.join(status_command(ray, head))]),
                                capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return [f"ray: `ray status` on {head.name} did not answer within 120 s"]
    if status.returncode != 0:
        last = (status.stderr.strip().splitlines() or ["no output"])[-1]
        return [f"ray: `ray status` on {head.name} failed: {last}"]
    say(f"ray status on {head.name}:")
    for line in status.stdout.rstrip().splitlines():
        say(f"  {line}")
    return []


def say(line: str) -> None:
    from gcpgpu import report

    report.console.print(line, markup=False, highlight=False, soft_wrap=True)


# -- commands ---------------------------------------------------------------------------------------

@hookimpl
def gcpgpu_commands():
    return [ray_command]


@click.group("ray")
def ray_command():
    """The cluster's Ray: status, dashboard tunnel, jobs, offline wheelhouse.

    Example: gcpgpu ray status cluster.yaml
    """


def _ray_and_head(session, spec_file):
    cluster = session.cluster(spec_file)
    head = head_host(cluster)
    return cluster, ray_settings(cluster.spec), head


@ray_command.command("status")
@spec_argument
@click.pass_obj
def ray_status(session, spec_file):
    """Print `ray status` of the cluster: nodes, resources (CPU, GPU) and their use.

    Example: gcpgpu ray status cluster.yaml
    """
    cluster, ray, head = _ray_and_head(session, spec_file)
    sys.exit(subprocess.run(ssh_argv(cluster, head, [shlex.join(status_command(ray, head))])).returncode)


@ray_command.command("dashboard")
@spec_argument
@click.option("--local-port", type=int, default=None, help="Local port (default: the dashboard's).")
@click.pass_obj
def ray_dashboard(session, spec_file, local_port):
    """Forward the head's dashboard (bound to its 127.0.0.1) to localhost over SSH, until Ctrl-C.

    Example: gcpgpu ray dashboard cluster.yaml --local-port 8265
    """
    import os

    cluster, ray, head = _ray_and_head(session, spec_file)
    if not ray["dashboard"]:
        raise GcpgpuError("the dashboard is off (orchestrator.dashboard: false)")
    port = local_port or ray["dashboard_port"]
    click.echo(f"Ray dashboard of {cluster.spec['name']}: http://localhost:{port} (Ctrl-C to stop)", err=True)
    argv = tunnel_argv(cluster, head, port)
    os.execvp(argv[0], argv)


@ray_command.command("submit", context_settings={"ignore_unknown_options": True})
@spec_argument
@click.argument("script", type=click.File("rb"))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def ray_submit(session, spec_file, script, args):
    """Run a local Python SCRIPT as a Ray driver on the head (the venv's python, ARGS passed
    on); its output streams back and its exit code is this command's.

    Example: gcpgpu ray submit cluster.yaml train.py --epochs 3
    """
    cluster, ray, head = _ray_and_head(session, spec_file)
    remote = shlex.join([f"{ray['venv']}/bin/python", "-", *args])
    # The script arrives on stdin: nothing is left behind on the head.
    done = subprocess.run(ssh_argv(cluster, head, [remote]), stdin=script)
    sys.exit(done.returncode)


@ray_command.command("wheelhouse")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--version", "version", default=RAY_VERSION, show_default=True, help="Ray version.")
@click.option("--dashboard/--no-dashboard", default=True, show_default=True,
              help="Include ray[default] (the dashboard's dependencies).")
@click.option("--python-version", default=None, metavar="X.Y",
              help="The nodes' Python, when it differs from this one (e.g. 3.10).")
@click.option("--platform", "platforms", multiple=True, default=(), metavar="TAG",
              help="Wheel platform of the nodes (repeatable), e.g. manylinux2014_x86_64.")
def ray_wheelhouse(directory, version, dashboard, python_version, platforms):
    """Download Ray and its dependencies as wheels into DIRECTORY, for nodes without internet
    (`orchestrator.wheelhouse: DIRECTORY`). Does nothing when DIRECTORY is complete already.
    Default DIRECTORY: ~/.cache/gcpgpu/wheelhouse-ray-VERSION[-default].

    Example: gcpgpu ray wheelhouse ./wheels --version 2.60.0 --python-version 3.10
    """
    target = Path(directory) if directory else default_wheelhouse(version, dashboard)
    done = target / ".complete"
    if done.exists() and has_ray_wheel(target, version):
        click.echo(f"{target}: complete")
        return
    requirement = f"ray{'[default]' if dashboard else ''}=={version}"
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--dest", str(target), requirement]
    if python_version or platforms:
        argv += ["--only-binary=:all:", *(["--python-version", python_version] if python_version else []),
                 *(arg for tag in platforms for arg in ("--platform", tag))]
    target.mkdir(parents=True, exist_ok=True)
    if subprocess.run(argv).returncode != 0:
        raise click.ClickException(f"pip download {requirement} failed")
    done.write_text(requirement + "\n")
    click.echo(f"{target}: {requirement} and its dependencies "
               f"({len(list(target.glob('*.whl')))} wheels)")
