"""Role variables checked against each role's ``meta/argument_specs.yml`` before a playbook runs.

Plugins map cluster.yaml fields to role variables in their ``gcpgpu_plays``; a mismatch (a wrong
type, a value outside ``choices``, a variable the role does not declare) would otherwise surface
half-way through a run on every node. Each play role may carry ``"fields": {variable:
"cluster.yaml.path"}`` so a problem names the field the user wrote. Values that are Jinja
templates are resolved per host by Ansible: only their names are checked here.
"""
from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path

import yaml

from gcpgpu.errors import Problem, SpecError


@lru_cache(maxsize=None)
def role_options(roles_dir: Path, role: str) -> dict | None:
    """The options of a role's main entry point; None when it declares no argument spec."""
    path = roles_dir / role / "meta" / "argument_specs.yml"
    if not path.is_file():
        return None
    specs = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return ((specs.get("argument_specs") or {}).get("main") or {}).get("options") or {}


def is_template(value) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def variable_problems(role: str, name: str, value, options: dict, field: str | None) -> list[Problem]:
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    where = field or f"role {role}"
    source = f"role {role} variable {name}"
    if name not in options:
        close = difflib.get_close_matches(name, options, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"{role} declares: {', '.join(sorted(options))}"
        return [Problem(where, f"{source} is not declared in roles/{role}/meta/argument_specs.yml", hint)]
    if is_template(value):
        return []
    result = ArgumentSpecValidator({name: options[name]}).validate({name: value})
    return [Problem(where, error.msg, source) for error in result.errors]


def role_var_problems(plays: list[dict], roles_dir: Path) -> list[Problem]:
    problems = []
    for play in plays:
        for entry in play.get("roles", []):
            options = role_options(Path(roles_dir), entry["role"])
            if options is None:
                continue
            fields = entry.get("fields", {})
            for name, value in entry.get("vars", {}).items():
                problems += variable_problems(entry["role"], name, value, options, fields.get(name))
    return problems


def check_role_vars(plays: list[dict], roles_dir: Path, source: str = "cluster.yaml") -> None:
    """Raise SpecError (exit code 2) listing every role variable its role would reject."""
    problems = role_var_problems(plays, roles_dir)
    if problems:
        raise SpecError(source, problems)
