"""cluster.yaml loading: defaults, every problem reported with path, line and a suggestion."""
from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

from gcpgpu.errors import Problem, SpecError
from gcpgpu.spec import build_schema, core_schema, format_path, load_spec, schema_path
from gcpgpu_plugins import compute_spec

HERE = Path(__file__).parent
INVALID = sorted((HERE / "invalid").glob("*.yaml"))
VALID = sorted((HERE / "valid").glob("*.yaml"))


def expectation(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: <text>'"
    return first[len("# expect: "):]


def write(tmp_path: Path, text: str, name: str = "cluster.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_enough_invalid_examples():
    assert len(INVALID) >= 35


@pytest.mark.parametrize("plugin_set", ["plugins", "installed_plugins"])
@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_file_is_rejected_with_path_and_hint(path, plugin_set, request):
    with pytest.raises(SpecError) as info:
        load_spec(path, request.getfixturevalue(plugin_set))
    text = str(info.value)
    assert expectation(path) in text, text
    assert info.value.exit_code == 2
    assert info.value.source == str(path)
    for problem in info.value.problems:
        assert isinstance(problem, Problem)
        assert problem.message


def test_enough_valid_examples():
    assert len(VALID) >= 3


@pytest.mark.parametrize("plugin_set", ["plugins", "installed_plugins"])
@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_examples_load(path, plugin_set, request):
    plugins = request.getfixturevalue(plugin_set)
    spec = load_spec(path, plugins)
    jsonschema.Draft202012Validator(build_schema(plugins)).validate(spec)  # filled spec still valid
    for group in spec["node_groups"].values():
        assert {"provider", "count", "labels", "machine_type", "image", "disk", "spot",
                "metadata", "tags"} <= set(group)


def test_minimal_file_gets_the_documented_defaults(tmp_path, plugins):
    spec = load_spec(write(tmp_path, "name: demo\nproject: my-proj\n"), plugins)
    assert spec == {
        "name": "demo",
        "project": "my-proj",
        "zone": "us-central1-a",
        "fallback_zones": [],
        "labels": {},
        "node_groups": {"gpu": {
            "provider": "compute",
            "count": 1,
            "labels": {},
            "machine_type": "a2-highgpu-2g",
            "accelerator": {"type": "nvidia-tesla-a100", "count": 2},
            "image": {"family": "pytorch-latest-gpu", "project": "deeplearning-platform-release"},
            "disk": {"size_gb": 2000, "type": "pd-ssd"},
            "spot": False,
            "metadata": {},
            "tags": [],
        }},
    }
    assert "state" not in spec  # unset: the core picks ~/.local/state/gcpgpu


def test_full_example_keeps_what_was_written(plugins):
    spec = load_spec(HERE / "valid" / "full.yaml", plugins)
    workers = spec["node_groups"]["workers"]
    assert workers["accelerator"] == {"type": "nvidia-a100-80gb", "count": 8}
    assert workers["disk"] == {"size_gb": 4000, "type": "pd-ssd"}
    assert workers["metadata"]["startup-script"].startswith("#!/bin/bash")
    assert spec["fallback_zones"] == ["us-central1-b", "us-central1-c", "us-east4-c"]
    assert spec["state"] == {"path": "~/.local/state/gcpgpu"}
    assert spec["node_groups"]["l4s"]["accelerator"] == {"type": "nvidia-l4", "count": 2}
    assert "accelerator" not in spec["node_groups"]["cpu"]
    assert spec["node_groups"]["t4s"]["count"] == 0


def test_yaml_aliases_do_not_share_objects(tmp_path, plugins):
    text = ("name: demo\nproject: p\n"
            "x-base: &base {machine_type: g2-standard-4, tags: [a]}\n"
            "node_groups:\n  a: *base\n  b: {<<: *base, count: 3}\n  c: *base\n")
    spec = load_spec(write(tmp_path, text), plugins)
    assert "x-base" not in spec
    a, b, c = (spec["node_groups"][k] for k in "abc")
    assert a == c and a is not c and a["tags"] is not c["tags"]
    assert b["count"] == 3 and b["machine_type"] == "g2-standard-4"
    a["tags"].append("z")
    assert c["tags"] == ["a"]


def test_defaults_are_not_shared_between_groups(tmp_path, plugins):
    spec = load_spec(write(tmp_path, "name: demo\nproject: p\nnode_groups: {a: {}, b: {}}\n"), plugins)
    a, b = spec["node_groups"]["a"], spec["node_groups"]["b"]
    a["tags"].append("x")
    a["disk"]["size_gb"] = 1
    assert b["tags"] == [] and b["disk"]["size_gb"] == 2000


@pytest.mark.parametrize("machine_type, accelerator", [
    ("a2-highgpu-8g", {"type": "nvidia-tesla-a100", "count": 8}),
    ("a2-megagpu-16g", {"type": "nvidia-tesla-a100", "count": 16}),
    ("a2-ultragpu-4g", {"type": "nvidia-a100-80gb", "count": 4}),
    ("g2-standard-24", {"type": "nvidia-l4", "count": 2}),
    ("g2-standard-32", {"type": "nvidia-l4", "count": 1}),
    ("g2-standard-96", {"type": "nvidia-l4", "count": 8}),
    ("a3-highgpu-8g", {"type": "nvidia-h100-80gb", "count": 8}),
    ("a3-megagpu-8g", {"type": "nvidia-h100-mega-80gb", "count": 8}),
    ("n1-standard-8", None),
    ("n2-standard-8", None),
])
def test_accelerator_is_implied_by_the_machine_type(tmp_path, plugins, machine_type, accelerator):
    text = f"name: demo\nproject: p\nnode_groups:\n  g:\n    machine_type: {machine_type}\n"
    group = load_spec(write(tmp_path, text), plugins)["node_groups"]["g"]
    assert group.get("accelerator") == accelerator


def test_partial_accelerator_is_completed(tmp_path, plugins):
    text = ("name: demo\nproject: p\nnode_groups:\n"
            "  a: {machine_type: a2-highgpu-4g, accelerator: {count: 4}}\n"
            "  t: {machine_type: n1-standard-8, accelerator: {type: nvidia-tesla-t4}}\n"
            "  v: {machine_type: n1-highmem-16, accelerator: {type: nvidia-tesla-v100, count: 2}}\n")
    groups = load_spec(write(tmp_path, text), plugins)["node_groups"]
    assert groups["a"]["accelerator"] == {"type": "nvidia-tesla-a100", "count": 4}
    assert groups["t"]["accelerator"] == {"type": "nvidia-tesla-t4", "count": 1}
    assert groups["v"]["accelerator"] == {"type": "nvidia-tesla-v100", "count": 2}


def test_image_by_name_keeps_its_project_unset(tmp_path, plugins):
    text = "name: demo\nproject: p\nnode_groups:\n  g: {image: {name: my-image}}\n"
    assert load_spec(write(tmp_path, text), plugins)["node_groups"]["g"]["image"] == {"name": "my-image"}
    text = "name: demo\nproject: p\nnode_groups:\n  g: {image: {family: common-cu124}}\n"
    assert load_spec(write(tmp_path, text), plugins)["node_groups"]["g"]["image"] == {
        "family": "common-cu124", "project": "deeplearning-platform-release"}


def test_all_problems_are_reported_at_once_in_line_order(tmp_path, plugins):
    text = ("name: Bad_Name\n"                        # 1
            "project: p\n"                            # 2
            "zone: us-central1\n"                     # 3
            "node_groups:\n"                          # 4
            "  workers:\n"                            # 5
            "    acelerator: {type: t4}\n"            # 6
            "    count: two\n"                        # 7
            "    machine_type: a2-highgpu-2g\n"       # 8
            "    disk: {type: pd-sdd}\n")             # 9
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text), plugins)
    problems = info.value.problems
    assert [p.path for p in problems] == [
        "name", "zone", "node_groups.workers.acelerator", "node_groups.workers.count",
        "node_groups.workers.disk.type"]
    assert [p.message.split(":")[0] for p in problems] == [
        "line 1", "line 3", "line 6", "line 7", "line 9"]
    assert all(p.hint for p in problems)
    assert "did you mean 'accelerator'?" in problems[2].hint
    assert "expected an integer, got a string 'two'" in problems[3].message


def test_missing_file(tmp_path, plugins):
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "nope.yaml", plugins)
    assert info.value.problems == [Problem("", "file not found", "check the path")]


def test_directory(tmp_path, plugins):
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path, plugins)
    assert "is a directory, not a file" in str(info.value)


def test_permission_denied(tmp_path, plugins, monkeypatch):
    path = write(tmp_path, "name: demo\nproject: p\n")

    def deny(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(SpecError) as info:
        load_spec(path, plugins)
    assert "permission denied reading the file" in str(info.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads anything")
def test_permission_denied_for_real(tmp_path, plugins):
    path = write(tmp_path, "name: demo\nproject: p\n")
    path.chmod(0)
    with pytest.raises(SpecError, match="permission denied"):
        load_spec(path, plugins)


def test_binary_file(tmp_path, plugins):
    path = tmp_path / "cluster.yaml"
    path.write_bytes(b"name: \xff\xfe\x00\n")
    with pytest.raises(SpecError, match="not UTF-8 text"):
        load_spec(path, plugins)


def test_unknown_provider_without_the_test_plugin(tmp_path, monkeypatch):
    from gcpgpu.plugins import Plugins, entry_point_names, hookimpl

    class Only:
        @hookimpl
        def gcpgpu_register_providers(self, register):
            register(type("P", (), {"name": "static"})())

    monkeypatch.setenv("GCPGPU_DISABLE_PLUGINS", ",".join(entry_point_names()))  # only `Only`'s provider
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, "name: demo\nproject: p\n"), Plugins(extra=(Only(),)))
    assert [str(p) for p in info.value.problems] == [
        "node_groups.gpu.provider: unknown provider 'compute'; available: static "
        "(install the plugin that offers it; `gcpgpu plugins` lists them)"]


def test_schema_file_is_a_valid_2020_12_schema_with_docs():
    schema = core_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"]
    assert schema_path().name == "cluster.schema.json"


def _properties(schema: dict, where: str = ""):
    for name, prop in schema.get("properties", {}).items():
        yield f"{where}.{name}", prop
        yield from _properties(prop, f"{where}.{name}")
    for name, sub in schema.get("$defs", {}).items():
        yield from _properties(sub, f"{where}$defs.{name}")


def test_every_property_has_a_description_and_objects_are_closed(plugins):
    schema = build_schema(plugins)
    jsonschema.Draft202012Validator.check_schema(schema)
    props = list(_properties(schema))
    assert len(props) > 20
    for where, prop in props:
        assert prop.get("description"), f"{where} has no description"
        if prop.get("type") == "object" and "properties" in prop:
            assert prop.get("additionalProperties") is False, f"{where} is open"
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["node_group"]["additionalProperties"] is False


def test_plugin_fragments_are_merged(plugins):
    from gcpgpu.plugins import Plugins, hookimpl

    class Extra:
        @hookimpl
        def gcpgpu_schema(self):
            return {"cluster": {"properties": {"ray": {"description": "Ray", "type": "object",
                                                       "$ref": "#/$defs/ray"}},
                                "$defs": {"ray": {"type": "object", "properties": {
                                    "dashboard": {"type": "boolean", "default": True,
                                                  "description": "d"}}}}},
                    "node_group": {"properties": {"ray_role": {"type": "string", "description": "r"}}}}

    schema = build_schema(Plugins(extra=(Extra(),)))
    assert "ray" in schema["properties"] and "ray" in schema["$defs"]
    assert "ray_role" in schema["$defs"]["node_group"]["properties"]


def test_format_path():
    assert format_path(("node_groups", "workers", "accelerator", "count")) == \
        "node_groups.workers.accelerator.count"
    assert format_path(("fallback_zones", 1)) == "fallback_zones[1]"
    assert format_path(("labels", "a.b")) == 'labels["a.b"]'


# -- compute_spec on its own ----------------------------------------------------------------------

def _group(**group):
    group.setdefault("provider", "compute")
    return {"name": "demo", "project": "p", "node_groups": {"g": group}}


@pytest.mark.parametrize("machine_type, acc, count", [
    ("n1-standard-32", "nvidia-tesla-t4", 1),
    ("n1-highcpu-32", "nvidia-tesla-t4", 2),
    ("n1-standard-96", "nvidia-tesla-t4", 4),
    ("n1-highmem-8", "nvidia-tesla-v100", 1),
    ("n1-standard-96", "nvidia-tesla-v100", 8),
    ("n1-standard-16", "nvidia-tesla-p100", 1),
    ("n1-standard-16", "nvidia-tesla-p4", 1),
    ("custom-12-79872", "nvidia-tesla-v100", 1),
    ("a2-highgpu-2g", "nvidia-tesla-a100", 2),
    ("g2-standard-8", "nvidia-l4-vws", 1),
])
def test_compatible_pairs(machine_type, acc, count):
    spec = _group(machine_type=machine_type, accelerator={"type": acc, "count": count})
    assert compute_spec.validate(spec) == []


@pytest.mark.parametrize("machine_type, acc, count, path_end", [
    ("n1-standard-64", "nvidia-tesla-t4", 2, "machine_type"),
    ("n1-standard-32", "nvidia-tesla-v100", 2, "machine_type"),
    ("n1-standard-32", "nvidia-tesla-p100", 1, "machine_type"),
    ("n1-standard-32", "nvidia-tesla-p4", 1, "machine_type"),
    ("n1-standard-8", "nvidia-tesla-p100", 8, "accelerator.count"),
    ("n1-standard-8", "nvidia-h100-80gb", 8, "accelerator.type"),
    ("a3-highgpu-8g", "nvidia-tesla-a100", 8, "accelerator.type"),
    ("e2-standard-8", "nvidia-tesla-t4", 1, "accelerator"),
    ("g1-small", "nvidia-tesla-t4", 1, "accelerator"),
])
def test_incompatible_pairs(machine_type, acc, count, path_end):
    spec = _group(machine_type=machine_type, accelerator={"type": acc, "count": count})
    problems = compute_spec.validate(spec)
    assert [p.path for p in problems] == [f"node_groups.g.{path_end}"], problems
    assert problems[0].hint


def test_other_providers_groups_are_not_checked():
    assert compute_spec.validate(_group(provider="static", machine_type="nonsense")) == []


def test_validate_survives_schema_invalid_specs():
    for spec in ({}, {"node_groups": []}, {"node_groups": {"g": 3}},
                 _group(machine_type=5, accelerator="x", image=[], tags={}, metadata=[])):
        assert compute_spec.validate(spec) == []


def test_instance_name_limit_is_exact():
    ok = _group()
    ok["name"] = "c" * (63 - len("-g-0000"))
    assert compute_spec.validate(ok) == []
    ok["name"] += "c"
    [problem] = compute_spec.validate(ok)
    assert "64 characters; GCE allows 63" in problem.message
    assert "by 1 characters" in problem.hint


def test_schema_fragment_defaults_match_the_design_brief():
    props = compute_spec.SCHEMA_FRAGMENT["node_group"]["properties"]
    assert props["machine_type"]["default"] == "a2-highgpu-2g"
    assert props["disk"]["properties"]["size_gb"]["default"] == 2000
    assert props["disk"]["properties"]["type"]["default"] == "pd-ssd"
    assert props["image"]["default"]["family"] == "pytorch-latest-gpu"
    assert json.dumps(compute_spec.SCHEMA_FRAGMENT)  # plain JSON
