"""Role variables from cluster.yaml: checked against roles/*/meta/argument_specs.yml before any
playbook runs (exit 2, field hints), and the node_roles fields that feed them."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gcpgpu.configure import assemble_playbook
from gcpgpu.engine import read_spec
from gcpgpu.errors import SpecError
from gcpgpu.plugins import Plugins, hookimpl
from gcpgpu.role_vars import role_var_problems
from gcpgpu_plugins import node_roles

REPO = Path(__file__).resolve().parents[1]
ROLES = REPO / "roles"
BASE = "name: demo\nproject: my-proj\n"


def write_spec(tmp_path: Path, extra: str = "") -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text(BASE + extra)
    return str(path)


def role_play(role: str, variables: dict, fields: dict | None = None) -> list[dict]:
    return [{"name": "p", "hosts": "all", "roles": [{"role": role, "vars": variables, "fields": fields or {}}]}]


def test_every_role_declares_an_argument_spec():
    for role in sorted(p for p in ROLES.iterdir() if p.is_dir()):
        specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
        assert specs["argument_specs"]["main"]["options"], role.name


def test_wrong_type_names_the_cluster_yaml_field():
    problems = role_var_problems(role_play("nvidia_driver", {"nvidia_driver_reboot": "maybe"},
                                           {"nvidia_driver_reboot": "nvidia_driver.reboot"}), ROLES)
    assert len(problems) == 1
    assert problems[0].path == "nvidia_driver.reboot"
    assert "nvidia_driver_reboot" in problems[0].message and "bool" in problems[0].message
    assert problems[0].hint == "role nvidia_driver variable nvidia_driver_reboot"


def test_value_outside_choices_and_unknown_variable_with_suggestion():
    problems = role_var_problems(role_play("gpu_health", {"gpu_health_dcgm_level": 7, "gpu_health_max_temp": 80}), ROLES)
    text = "\n".join(str(p) for p in problems)
    assert "value of gpu_health_dcgm_level must be one of: 0, 1, 2, 3, got: 7" in text
    assert "role gpu_health variable gpu_health_max_temp is not declared" in text
    assert "did you mean 'gpu_health_max_temperature_c'?" in text


def test_templates_are_left_to_ansible_but_their_names_are_checked():
    assert role_var_problems(role_play("ops_agent", {"ops_agent_gpu_metrics": "{{ gcpgpu_gpus > 0 }}"}), ROLES) == []
    assert role_var_problems(role_play("ops_agent", {"ops_agent_gpu_metric": "{{ x }}"}), ROLES)


def test_roles_without_a_spec_are_not_checked(tmp_path):
    (tmp_path / "bare" / "tasks").mkdir(parents=True)
    assert role_var_problems(role_play("bare", {"anything": 1}), tmp_path) == []


class BadPlays:
    """A third-party plugin whose play passes a value its role rejects."""

    @hookimpl
    def gcpgpu_plays(self, spec):
        return [{"name": "bad", "hosts": "all", "order": 60,
                 "roles": [{"role": "gpu_health", "vars": {"gpu_health_max_temperature_c": "hot"},
                            "fields": {"gpu_health_max_temperature_c": "x-thermal.limit"}}]}]


def test_bad_role_vars_fail_validate_with_exit_2_before_any_playbook(tmp_path, monkeypatch):
    plugins = Plugins(extra=(BadPlays(),))
    with pytest.raises(SpecError) as info:
        read_spec(write_spec(tmp_path), plugins)
    assert info.value.exit_code == 2
    assert "x-thermal.limit: argument 'gpu_health_max_temperature_c' is of type str" in str(info.value)
    # configure checks again where it assembles the playbook: ansible-runner is never reached.
    import ansible_runner

    monkeypatch.setattr(ansible_runner, "run", lambda **_: pytest.fail("a playbook ran"))
    with pytest.raises(SpecError):
        assemble_playbook({"name": "demo"}, plugins)


def test_cli_validate_exits_2_on_bad_role_vars(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from gcpgpu import cli as cli_module

    class WithBadPlays(cli_module.Session):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.plugins = Plugins(extra=(BadPlays(),))

    monkeypatch.setattr(cli_module, "Session", WithBadPlays)
    result = CliRunner().invoke(cli_module.cli, ["validate", write_spec(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "x-thermal.limit" in result.output


# ----------------------------------------------------------------- node_roles fields -> plays

def roles_of(spec: dict) -> dict[str, dict]:
    return {r["role"]: r for play in node_roles.gcpgpu_plays(spec) for r in play["roles"]}


def test_defaults_install_driver_ops_agent_and_health(tmp_path):
    spec = read_spec(write_spec(tmp_path, "startup_command: python train.py\n"), Plugins())
    assert spec["nvidia_driver"] == {"install": "auto", "branch": "", "reboot": True}
    assert spec["ops_agent"] is True
    assert spec["health"] == {"enabled": True, "max_temperature_c": 85, "dcgm_level": 1}
    playbook = assemble_playbook(spec, Plugins())
    order = [r["role"] for play in playbook for r in play["roles"]]
    # The driver before anything that needs GPUs (files, startup command), health last.
    assert order.index("nvidia_driver") < order.index("ops_agent") < order.index("startup_command")
    assert order[-1] == "gpu_health"


def test_fields_reach_the_role_variables(tmp_path):
    spec = read_spec(write_spec(tmp_path, "nvidia_driver: {branch: '550', reboot: false}\n"
                                          "health: {max_temperature_c: 80, dcgm_level: 2}\n"), Plugins())
    roles = roles_of(spec)
    assert roles["nvidia_driver"]["vars"] == {"nvidia_driver_branch": "550", "nvidia_driver_reboot": False}
    assert roles["gpu_health"]["vars"] == {"gpu_health_max_temperature_c": 80, "gpu_health_dcgm_level": 2}


def test_off_switches_leave_the_roles_out(tmp_path):
    spec = read_spec(write_spec(tmp_path, "nvidia_driver: {install: false}\nops_agent: false\n"
                                          "health: {enabled: false}\n"), Plugins())
    assert roles_of(spec) == {}


@pytest.mark.parametrize(("extra", "expect"), [
    ("ops_agent: sometimes\n", "ops_agent: line 3: expected true or false, got a string 'sometimes'"),
    ("nvidia_driver: {install: yes-please}\n", "nvidia_driver.install: line 3:"),
    ("nvidia_driver: {branch: 550}\n", "nvidia_driver.branch: line 3:"),
    ("nvidia_driver: {branch: 'latest'}\n", "nvidia_driver.branch: line 3:"),
    ("nvidia_driver: {brnch: '550'}\n", "unknown key 'brnch'"),
    ("health: {dcgm_level: 4}\n", "health.dcgm_level: line 3:"),
    ("health: {max_temperature_c: 500}\n", "health.max_temperature_c: line 3:"),
], ids=["ops-agent-string", "install-word", "branch-int", "branch-word", "branch-typo", "dcgm-level", "temp"])
def test_invalid_fields_exit_2_with_their_path(tmp_path, extra, expect):
    with pytest.raises(SpecError) as info:
        read_spec(write_spec(tmp_path, extra), Plugins())
    assert expect in str(info.value)
    assert info.value.exit_code == 2
