"""The Ray plugin without nodes: its cluster.yaml fields and their errors, host groups, the play
it adds, what `up` prints after configure, and `gcpgpu ray wheelhouse`."""
from __future__ import annotations

import shlex
import subprocess
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from gcpgpu.cli import cli
from gcpgpu.errors import SpecError
from importlib import metadata

from gcpgpu.plugins import ENTRY_POINT_GROUP, Plugins, hookimpl
from gcpgpu.provider import Host
from gcpgpu.spec import load_spec, orchestrator_rule
from gcpgpu.ssh import ClusterKeys
from gcpgpu_plugins import compute, node_setup
from gcpgpu_plugins import ray as ray_plugin

BASE = """name: demo
project: my-proj
node_groups:
  head: {count: 1, machine_type: n1-standard-4}
  gpu: {count: 2, machine_type: g2-standard-8}
"""


def block_installed_plugins(monkeypatch) -> None:
    """Only the plugins a test names, whatever else is installed (in any distribution)."""
    names = {ep.name for dist in metadata.distributions() for ep in dist.entry_points
             if ep.group == ENTRY_POINT_GROUP}
    monkeypatch.setenv("GCPGPU_DISABLE_PLUGINS", ",".join(sorted(names)))


@pytest.fixture
def plugins(monkeypatch) -> Plugins:
    block_installed_plugins(monkeypatch)
    return Plugins(extra=(compute, node_setup, ray_plugin))


def load(tmp_path, plugins, orchestrator: str, base: str = BASE) -> dict:
    path = tmp_path / "cluster.yaml"
    path.write_text(base + orchestrator)
    return load_spec(path, plugins)


def problems(tmp_path, plugins, orchestrator: str, base: str = BASE) -> str:
    with pytest.raises(SpecError) as info:
        load(tmp_path, plugins, orchestrator, base)
    return str(info.value)


def test_defaults(tmp_path, plugins):
    spec = load(tmp_path, plugins, "orchestrator: {type: ray, head_group: head}\n")
    assert spec["orchestrator"] == {
        "type": "ray", "head_group": "head", "version": ray_plugin.RAY_VERSION, "dashboard": True,
        "port": 6379, "dashboard_port": 8265, "venv": "/opt/gcpgpu/ray"}


@pytest.mark.parametrize("orchestrator, path, expected", [
    ("{type: rya, head_group: head}", "orchestrator.type", "unknown orchestrator type 'rya'; available: ray (did you mean 'ray'?)"),
    ("{type: ray}", "orchestrator.head_group", "missing required key 'head_group'"),
    ("{type: ray, head_grup: head}", "orchestrator.head_grup", "unknown key 'head_grup' (did you mean 'head_group'?)"),
    ("{type: ray, head_group: haed}", "orchestrator.head_group", "there is no node group 'haed' (node groups: head, gpu)"),
    ("{type: ray, head_group: gpu}", "node_groups.gpu.count", "the Ray head group 'gpu' has count 2; it must have 1"),
    ("{type: ray, head_group: head, dashboard_port: 6379}", "orchestrator.dashboard_port", "is the same as orchestrator.port"),
    ("{type: ray, head_group: head, version: latest}", "orchestrator.version", "'latest' has the wrong format"),
    ("{type: ray, head_group: head, object_store_memory: 1000}", "orchestrator.object_store_memory",
     "1000 is out of range (must be at least 78643200)"),
    ("{type: ray, head_group: head, venv: opt/ray}", "orchestrator.venv", "'opt/ray' has the wrong format"),
    ("{type: ray, head_group: head, dashboard: yes please}", "orchestrator.dashboard", "expected true or false"),
])
def test_invalid_fields_are_reported_with_path_and_hint(tmp_path, plugins, orchestrator, path, expected):
    text = problems(tmp_path, plugins, f"orchestrator: {orchestrator}\n")
    assert f"  - {path}: line " in text and expected in text, text


def test_wheelhouse_must_hold_the_pinned_ray(tmp_path, plugins):
    text = problems(tmp_path, plugins, "orchestrator: {type: ray, head_group: head, wheelhouse: wheels}\n")
    assert f"{tmp_path / 'wheels'} is not a directory" in text  # relative to cluster.yaml
    assert f"gcpgpu ray wheelhouse {tmp_path / 'wheels'} --version {ray_plugin.RAY_VERSION}" in text
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "ray-2.9.0-cp311-cp311-manylinux2014_x86_64.whl").write_text("")
    text = problems(tmp_path, plugins, "orchestrator: {type: ray, head_group: head, wheelhouse: wheels, "
                                       "dashboard: false}\n")
    assert f"has no wheel of ray {ray_plugin.RAY_VERSION} (download it: " in text and "--no-dashboard" in text
    (tmp_path / "wheels" / f"ray-{ray_plugin.RAY_VERSION}-cp311-cp311-manylinux2014_x86_64.whl").write_text("")
    assert load(tmp_path, plugins, "orchestrator: {type: ray, head_group: head, wheelhouse: wheels}\n")


class SlurmLike:
    """Another orchestrator plugin: its own type and keys in the same `orchestrator` field."""

    @hookimpl
    def gcpgpu_schema(self):
        return {"cluster": {"allOf": [orchestrator_rule("slurm", {"properties": {
            "partition": {"type": "string", "default": "gpu"}}})]}}


def test_two_orchestrator_plugins_share_the_orchestrator_field(tmp_path, monkeypatch):
    block_installed_plugins(monkeypatch)
    both = Plugins(extra=(compute, node_setup, ray_plugin, SlurmLike()))
    assert load(tmp_path, both, "orchestrator: {type: slurm}\n")["orchestrator"] == {"type": "slurm", "partition": "gpu"}
    ray = load(tmp_path, both, "orchestrator: {type: ray, head_group: head}\n")["orchestrator"]
    assert "partition" not in ray and ray["port"] == 6379  # each type gets only its own defaults
    assert "unknown key 'head_group'" in problems(tmp_path, both, "orchestrator: {type: slurm, head_group: head}\n")
    assert "available: ray, slurm" in problems(tmp_path, both, "orchestrator: {type: k8s}\n")


def test_no_orchestrator_adds_nothing(tmp_path, plugins):
    spec = load(tmp_path, plugins, "")
    assert ray_plugin.gcpgpu_plays(spec) == [] and ray_plugin.gcpgpu_host_groups(spec, []) == {}


def test_host_groups_and_the_play(tmp_path, plugins):
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / f"ray-{ray_plugin.RAY_VERSION}-py3-none-any.whl").write_text("")
    spec = load(tmp_path, plugins, "orchestrator: {type: ray, head_group: head, wheelhouse: wheels, num_cpus: 4}\n")
    spec["_base_dir"] = str(tmp_path)
    hosts = [Host("demo-head-0000", "head", "10.0.0.2"), Host("demo-gpu-0000", "gpu", "10.0.0.3"),
             Host("demo-gpu-0001", "gpu", "10.0.0.4")]
    assert ray_plugin.gcpgpu_host_groups(spec, hosts) == {
        "ray_head": ["demo-head-0000"], "ray_workers": ["demo-gpu-0000", "demo-gpu-0001"]}
    [play] = ray_plugin.gcpgpu_plays(spec)
    assert play["hosts"] == "ray_head:ray_workers" and play["order"] > 50  # after the node roles
    role_vars = play["roles"][0]["vars"]
    assert role_vars["ray_wheelhouse"] == str(tmp_path / "wheels")
    assert role_vars["ray_num_cpus"] == 4 and role_vars["ray_object_store_memory"] == 0
    assert role_vars["ray_version"] == ray_plugin.RAY_VERSION and role_vars["ray_dashboard"] is True


def fake_cluster(tmp_path, plugins, orchestrator: str):
    spec = load(tmp_path, plugins, orchestrator)
    head = Host("demo-head-0000", "head", "34.1.2.3", status="RUNNING", instance_id="11",
                hostvars={"networkInterfaces": [{"networkIP": "10.128.0.2"}]})
    worker = Host("demo-gpu-0000", "gpu", "34.1.2.4", status="RUNNING", instance_id="12")
    return SimpleNamespace(spec=spec, keys=ClusterKeys.for_spec(spec)), [worker, head]


def test_after_configure_prints_the_tunnel_and_ray_status(tmp_path, plugins, monkeypatch, capsys):
    cluster, hosts = fake_cluster(tmp_path, plugins, "orchestrator: {type: ray, head_group: head}\n")
    calls = []

    def fake_run(argv, **kwargs):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout="Active:\n 1 node_a\n 1 node_b\n", stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert ray_plugin.gcpgpu_after_configure(cluster=cluster, hosts=hosts, result=None) == []
    lines = capsys.readouterr().out.splitlines()
    tunnel = shlex.split(lines[1])
    # The forward goes to the head's loopback, and comes before the destination (ssh stops
    # reading options at the destination).
    assert tunnel[0] == "ssh" and tunnel[-1] == "gcpgpu@34.1.2.3"
    assert tunnel[-4:-1] == ["-N", "-L", "8265:127.0.0.1:8265"]
    assert "UserKnownHostsFile=" + str(cluster.keys.known_hosts) in tunnel
    assert "http://localhost:8265" in lines[0]
    # ray status runs on the head against its internal address.
    assert calls[0][-1] == "/opt/gcpgpu/ray/bin/ray status --address=10.128.0.2:6379"
    assert calls[0][-2] == "gcpgpu@34.1.2.3"
    assert lines[-4:] == ["ray status on demo-head-0000:", "  Active:", "   1 node_a", "   1 node_b"]


def test_after_configure_reports_problems(tmp_path, plugins, monkeypatch, capsys):
    cluster, hosts = fake_cluster(tmp_path, plugins, "orchestrator: {type: ray, head_group: head, dashboard: false}\n")
    monkeypatch.setattr(subprocess, "run", lambda argv, **kw: subprocess.CompletedProcess(argv, 1, "", "x\nno cluster"))
    assert ray_plugin.gcpgpu_after_configure(cluster=cluster, hosts=hosts, result=None) == [
        "ray: `ray status` on demo-head-0000 failed: no cluster"]
    assert "dashboard" not in capsys.readouterr().out.lower()
    stopped = [h for h in hosts if h.group != "head"]
    assert ray_plugin.gcpgpu_after_configure(cluster=cluster, hosts=stopped, result=None) == [
        "ray: the Ray head (group 'head') is not running; run `gcpgpu up`"]


def test_wheelhouse_command(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda argv, **kw: calls.append(argv) or subprocess.CompletedProcess(argv, 0))
    target = tmp_path / "wheels"
    result = CliRunner().invoke(cli, ["ray", "wheelhouse", str(target), "--version", "2.9.3",
                                      "--python-version", "3.10", "--platform", "manylinux2014_x86_64"])
    assert result.exit_code == 0, result.output
    argv = calls[0]
    assert argv[1:4] == ["-m", "pip", "download"] and "ray[default]==2.9.3" in argv
    assert argv[argv.index("--dest") + 1] == str(target)
    assert {"--only-binary=:all:", "3.10", "manylinux2014_x86_64"} <= set(argv)
    # The download is marked complete; with the ray wheel there, the next call does nothing.
    assert (target / ".complete").read_text() == "ray[default]==2.9.3\n"
    (target / "ray-2.9.3-cp310-cp310-manylinux2014_x86_64.whl").write_text("")
    again = CliRunner().invoke(cli, ["ray", "wheelhouse", str(target), "--version", "2.9.3"])
    assert again.exit_code == 0 and "complete" in again.output and len(calls) == 1
    # Default directory: per version, with -default for the dashboard's extras.
    assert ray_plugin.default_wheelhouse("2.9.3", dashboard=False).name == "wheelhouse-ray-2.9.3"
    assert ray_plugin.default_wheelhouse("2.9.3", dashboard=True).name == "wheelhouse-ray-2.9.3-default"


def test_ray_commands_need_a_ray_cluster(tmp_path, monkeypatch):
    spec = tmp_path / "cluster.yaml"
    spec.write_text(BASE)
    result = CliRunner().invoke(cli, ["--endpoint", "http://127.0.0.1:9", "ray", "status", str(spec)])
    assert result.exit_code == 1 and "has no `orchestrator: {type: ray}`" in result.output


def test_the_example_is_valid(plugins):
    from pathlib import Path

    spec = load_spec(Path(__file__).parents[1] / "examples" / "ray.yaml", plugins)
    assert spec["orchestrator"]["head_group"] == "head" and spec["orchestrator"]["dashboard"] is True
