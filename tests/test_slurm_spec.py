"""The Slurm plugin without nodes: its part of cluster.yaml (composable with other orchestrator
plugins), checks, host groups, plays, the munge key, and slurm.conf rendered for systemd hosts."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gcpgpu.errors import GcpgpuError, SpecError
from gcpgpu.plugins import Plugins, hookimpl
from gcpgpu.provider import Host
from gcpgpu.spec import load_spec, orchestrator_rule
from gcpgpu_plugins import slurm

REPO = Path(__file__).resolve().parents[1]
BASE = """name: demo
project: my-proj
node_groups:
  head: {count: 1, machine_type: n1-standard-4}
  workers: {count: 2, machine_type: g2-standard-24}
  big: {count: 1, machine_type: a2-highgpu-8g}
"""


class OtherOrchestrator:
    """Another orchestrator plugin, as a third party (or the Ray plugin) would write it."""

    @hookimpl
    def gcpgpu_schema(self):
        return {"cluster": {"allOf": [orchestrator_rule("other", {
            "properties": {"head_group": {"type": "string", "description": "head"},
                           "port": {"type": "integer", "default": 6379, "description": "port"}}})]}}


def load(tmp_path: Path, text: str, plugins=None) -> dict:
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return load_spec(path, plugins or Plugins())


def problems(tmp_path: Path, text: str, plugins=None) -> str:
    with pytest.raises(SpecError) as info:
        load(tmp_path, text, plugins)
    return str(info.value)


def test_orchestrator_types_compose_without_closing_the_list(tmp_path):
    plugins = Plugins(extra=(OtherOrchestrator(),))
    spec = load(tmp_path, BASE + "orchestrator: {type: other, head_group: head}\n", plugins)
    assert spec["orchestrator"] == {"type": "other", "head_group": "head", "port": 6379}
    spec = load(tmp_path, BASE + "orchestrator: {type: slurm, controller_group: head}\n", plugins)
    assert spec["orchestrator"]["gpu_device_prefix"] == "/dev/nvidia"  # slurm's defaults only
    # Each type accepts its own keys only, and an unknown type lists every installed one.
    text = problems(tmp_path, BASE + "orchestrator: {type: other, controller_group: head}\n", plugins)
    assert "orchestrator.controller_group: line 7: unknown key 'controller_group' (allowed: head_group, port, type)" in text
    text = problems(tmp_path, BASE + "orchestrator: {type: slurmm, controller_group: head}\n", plugins)
    assert "unknown orchestrator type 'slurmm'; available: other, " in text  # every plugin's type
    assert "slurm (did you mean 'slurm'?)" in text
    assert "missing required key 'type'" in problems(tmp_path, BASE + "orchestrator: {controller_group: head}\n")


def test_two_plugins_cannot_claim_one_orchestrator_type():
    class Twin:
        @hookimpl
        def gcpgpu_schema(self):
            return {"cluster": {"allOf": [orchestrator_rule("slurm", {})]}}

    from gcpgpu.spec import build_schema

    with pytest.raises(GcpgpuError, match="same orchestrator type"):
        build_schema(Plugins(extra=(Twin(),)))


@pytest.mark.parametrize("orchestrator, expected", [
    ("{type: slurm, controller_group: haed}",
     "orchestrator.controller_group: line 7: 'haed' is not a node group (did you mean 'head'?)"),
    ("{type: slurm, controller_group: head, compute_groups: [wokers]}",
     "orchestrator.compute_groups[0]: line 7: 'wokers' is not a node group (did you mean 'workers'?)"),
    ("{type: slurm, controller_group: head, compute_groups: [workers], partitions: {p: {groups: [big]}}}",
     "orchestrator.partitions.p.groups[0]: line 7: 'big' is not a compute group"),
    ("{type: slurm, controller_group: head, partitions: {a: {groups: [big], default: true}, "
     "b: {groups: [workers], default: true}}}", "2 default partitions (a, b)"),
    ("{type: slurm, controller_group: head, config: {NodeName: x}}",
     "orchestrator.config.NodeName: line 7: 'NodeName' is written by gcpgpu from the cluster"),
    ("{type: slurm, controller_group: head, partitions: {'a b': {groups: [big]}}}",
     "'a b' is not a valid partition name"),
    ("{type: slurm}", "missing required key 'controller_group'"),
])
def test_slurm_settings_are_checked(tmp_path, orchestrator, expected):
    assert expected in problems(tmp_path, BASE + f"orchestrator: {orchestrator}\n")


def test_a_controller_group_without_nodes_is_refused(tmp_path):
    text = BASE.replace("head: {count: 1", "head: {count: 0") + "orchestrator: {type: slurm, controller_group: head}\n"
    assert "node_groups.head.count: line 4: is 0, but this group runs the Slurm controller" in problems(tmp_path, text)


def test_groups_and_partitions_default_to_the_node_groups(tmp_path):
    spec = load(tmp_path, BASE + "orchestrator: {type: slurm, controller_group: head}\n")
    settings = slurm.settings(spec)
    assert slurm.compute_groups(spec, settings) == ["workers", "big"]
    assert slurm.partitions(spec, settings) == [
        {"name": "workers", "groups": ["workers"], "default": True, "options": {}},
        {"name": "big", "groups": ["big"], "default": False, "options": {}}]
    alone = load(tmp_path, "name: demo\nproject: p\nnode_groups: {gpu: {count: 2}}\n"
                           "orchestrator: {type: slurm, controller_group: gpu}\n")
    assert slurm.compute_groups(alone, slurm.settings(alone)) == ["gpu"]  # controller computes too


def test_host_groups_name_the_controller_compute_nodes_and_partitions(tmp_path):
    spec = load(tmp_path, BASE + "orchestrator: {type: slurm, controller_group: head, "
                                 "partitions: {all: {groups: [workers, big]}}}\n")
    hosts = [Host(n, g, "10.0.0.1") for n, g in
             [("w-1", "workers"), ("w-0", "workers"), ("h-1", "head"), ("h-0", "head"), ("b-0", "big")]]
    groups = [g for g in Plugins().hook.gcpgpu_host_groups(spec=spec, hosts=hosts) if g]
    assert groups == [{"slurm_controller": ["h-0"], "slurm_compute": ["w-0", "w-1", "b-0"],
                       "slurm_partition_all": ["w-0", "w-1", "b-0"]}]
    plain = load(tmp_path, BASE)
    assert not any(Plugins().hook.gcpgpu_host_groups(spec=plain, hosts=hosts))


def test_play_and_munge_key(tmp_path, monkeypatch):
    spec = load(tmp_path, BASE + "orchestrator: {type: slurm, controller_group: head, "
                                 "config: {MaxJobCount: 5000}}\n")
    plays = [p for ps in Plugins().hook.gcpgpu_plays(spec=spec) for p in ps if p["name"] == "slurm"]
    assert len(plays) == 1 and plays[0]["hosts"] == "slurm_controller:slurm_compute"
    role_vars = plays[0]["roles"][0]["vars"]
    assert role_vars["slurm_config"] == {"MaxJobCount": 5000}
    assert role_vars["slurm_partitions"][0] == {"name": "workers", "group": "slurm_partition_workers",
                                                 "default": True, "options": {}}
    key = Path(role_vars["slurm_munge_key_file"])
    assert key.parent == Path(os.environ["GCPGPU_KEYS_DIR"]) / "my-proj" / "demo"  # next to the SSH key
    assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == slurm.MUNGE_KEY_BYTES
    first = key.read_bytes()
    Plugins().hook.gcpgpu_plays(spec=spec)
    assert key.read_bytes() == first  # made once
    assert not (Path(os.environ["GCPGPU_STATE_DIR"]).exists()
                and any(p.name == "munge.key" for p in Path(os.environ["GCPGPU_STATE_DIR"]).rglob("*")))
    assert not [p for ps in Plugins().hook.gcpgpu_plays(spec=load(tmp_path, BASE)) for p in ps
                if p["name"] == "slurm"]


def test_slurm_conf_for_systemd_hosts(tmp_path):
    """The systemd path cannot run here (test nodes have no systemd): render its files."""
    if not shutil.which("ansible-playbook"):
        pytest.skip("ansible-playbook is not installed")
    role = REPO / "roles" / "slurm"
    hardware = "NodeName={} CPUs=96 Boards=1 SocketsPerBoard=2 CoresPerSocket=24 ThreadsPerCore=2 RealMemory=680000"
    hosts = {"ctl": {"ansible_host": "10.0.0.2", "gcpgpu_gpus": 0},
             "gpu-0": {"ansible_host": "10.0.0.3", "gcpgpu_gpus": 8},
             "gpu-1": {"ansible_host": "10.0.0.4", "gcpgpu_gpus": 1}}
    inventory = {"all": {
        "hosts": {n: {**v, "ansible_connection": "local", "ansible_python_interpreter": shutil.which("python3")}
                  for n, v in hosts.items()},
        "children": {"slurm_controller": {"hosts": {"ctl": None}},
                     "slurm_compute": {"hosts": {"gpu-0": None, "gpu-1": None}},
                     "slurm_partition_gpu": {"hosts": {"gpu-0": None, "gpu-1": None}}}}}
    extra = {"slurm_cluster_name": "demo", "slurm_munge_key_file": "/nonexistent",
             "slurm_partitions": [{"name": "gpu", "group": "slurm_partition_gpu", "default": True,
                                   "options": {"MaxTime": "24:00:00"}},
                                  {"name": "empty", "group": "slurm_partition_empty", "default": False}],
             "slurm_config": {"SchedulerType": "sched/builtin"}}
    play = [{"hosts": "all", "gather_facts": False,
             "vars_files": [str(role / "defaults" / "main.yml"), str(role / "vars" / "main.yml")],
             "tasks": [
                 {"ansible.builtin.set_fact": {
                     "_slurm_systemd_dir": {"stat": {"exists": True, "isdir": True}},
                     "_slurm_hardware": {"stdout_lines": ["{{ hardware.format(inventory_hostname) }}", "UpTime=1"]}},
                  "vars": {"hardware": hardware}},
                 {"ansible.builtin.copy": {"content": "{{ lookup('ansible.builtin.template', '%s/templates/' + item) }}"
                                                      % role, "dest": f"{tmp_path}/{{{{ item }}}}", "mode": "0644"},
                  "loop": ["slurm.conf.j2", "gres.conf.j2"], "run_once": True}]}]
    (tmp_path / "inventory.json").write_text(json.dumps(inventory))
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    result = subprocess.run(["ansible-playbook", "-i", str(tmp_path / "inventory.json"),
                             "-e", f"@{tmp_path / 'extra.json'}", str(tmp_path / "play.yml")],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_NOCOLOR": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    conf = (tmp_path / "slurm.conf.j2").read_text()
    assert "SlurmctldHost=ctl(10.0.0.2)" in conf
    assert "ProctrackType=proctrack/cgroup" in conf and "TaskPlugin=task/affinity,task/cgroup" in conf
    assert "SchedulerType=sched/builtin" in conf  # config overrides the role's settings
    assert ("NodeName=gpu-0 NodeAddr=10.0.0.3 CPUs=96 Boards=1 SocketsPerBoard=2 CoresPerSocket=24 "
            "ThreadsPerCore=2 RealMemory=680000 Gres=gpu:8 State=UNKNOWN") in conf
    assert "NodeName=ctl" not in conf  # the controller computes only when it is a compute node
    assert "PartitionName=gpu Nodes=gpu-0,gpu-1 Default=YES State=UP MaxTime=24:00:00" in conf
    assert "PartitionName=empty" not in conf  # a partition with no node is left out
    gres = (tmp_path / "gres.conf.j2").read_text()
    assert "NodeName=gpu-0 Name=gpu File=/dev/nvidia[0-7]" in gres
    assert "NodeName=gpu-1 Name=gpu File=/dev/nvidia0" in gres


def test_the_example_is_valid():
    spec = load_spec(REPO / "examples" / "slurm.yaml", Plugins())
    assert slurm.partitions(spec, slurm.settings(spec)) == [
        {"name": "gpu", "groups": ["workers"], "default": True, "options": {"MaxTime": "24:00:00"}}]
