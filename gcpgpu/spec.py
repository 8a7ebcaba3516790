"""Load and validate cluster.yaml.

``load_spec`` reads the file (keeping the line of every key), validates it against the core schema
plus every plugin's fragment while filling in schema defaults (jsonschema's documented
"extend the validator to set defaults" pattern), runs the core GCP-wide checks and every plugin's
``gcpgpu_validate``, and raises one :class:`SpecError` listing all problems, or returns the spec.
Nothing here calls an API.
"""
from __future__ import annotations

import copy
import difflib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml
from jsonschema import validators

from gcpgpu.errors import GcpgpuError, Problem, SpecError

SCHEMA_NAME = "cluster.schema.json"
RESERVED_LABEL_PREFIX = "gcpgpu-"
EXTENSION_PREFIX = "x-"  # top-level keys for YAML anchors, as in docker-compose
TOOL_LABELS = 3  # gcpgpu-cluster, gcpgpu-group, gcpgpu-digest
MAX_LABELS = 64
MAX_NAME = 63
RFC1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
ZONE_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
# Only used to suggest a zone when one is malformed; a zone not listed here is still accepted.
KNOWN_REGIONS = (
    "africa-south1 asia-east1 asia-east2 asia-northeast1 asia-northeast2 asia-northeast3 "
    "asia-south1 asia-south2 asia-southeast1 asia-southeast2 australia-southeast1 "
    "australia-southeast2 europe-central2 europe-north1 europe-north2 europe-southwest1 "
    "europe-west1 europe-west2 europe-west3 europe-west4 europe-west6 europe-west8 europe-west9 "
    "europe-west10 europe-west12 me-central1 me-central2 me-west1 northamerica-northeast1 "
    "northamerica-northeast2 northamerica-south1 southamerica-east1 southamerica-west1 "
    "us-central1 us-east1 us-east4 us-east5 us-south1 us-west1 us-west2 us-west3 us-west4"
).split()


# -- schema ---------------------------------------------------------------------------------------

def schema_path() -> Path:
    """cluster.schema.json: in the wheel under gcpgpu/_data/schemas, in a checkout under schemas/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_data" / "schemas" / SCHEMA_NAME, here.parent / "schemas" / SCHEMA_NAME):
        if candidate.is_file():
            return candidate
    raise GcpgpuError(f"{SCHEMA_NAME} not found next to the gcpgpu package (broken install?)")


@lru_cache(maxsize=1)
def _core_schema_text() -> str:
    return schema_path().read_text(encoding="utf-8")


def core_schema() -> dict:
    """The core schema, without plugin fragments (a fresh copy)."""
    return json.loads(_core_schema_text())


def build_schema(plugins) -> dict:
    """The core schema with every plugin's ``gcpgpu_schema`` fragment merged in.

    A fragment may have ``cluster`` and ``node_group`` parts, each with ``properties`` (added to the
    top level / every node group), ``$defs`` (added to the schema's ``$defs``) and ``allOf``
    (appended: conditional rules and defaults, e.g. a default that depends on another property).
    A property defined twice is a plugin bug and raises GcpgpuError.
    """
    schema = core_schema()
    targets = {"cluster": schema, "node_group": schema["$defs"]["node_group"]}
    for fragment in plugins.hook.gcpgpu_schema():
        if not fragment:
            continue
        for part, target in targets.items():
            piece = fragment.get(part)
            if not piece:
                continue
            for name, prop in piece.get("properties", {}).items():
                if name in target["properties"]:
                    raise GcpgpuError(f"two plugins define the {part} property {name!r}")
                target["properties"][name] = copy.deepcopy(prop)
            for name, sub in piece.get("$defs", {}).items():
                if name in schema["$defs"]:
                    raise GcpgpuError(f"two plugins define the schema $defs entry {name!r}")
                schema["$defs"][name] = copy.deepcopy(sub)
            if piece.get("allOf"):
                target.setdefault("allOf", []).extend(copy.deepcopy(piece["allOf"]))
    types = orchestrator_types(schema)
    if len(types) != len(set(types)):
        raise GcpgpuError(f"two plugins define the same orchestrator type: {', '.join(types)}")
    return schema


def orchestrator_rule(kind: str, schema: dict) -> dict:
    """The cluster-level ``allOf`` rule an orchestrator plugin contributes: when
    ``orchestrator.type`` is ``kind``, the other keys of ``orchestrator`` follow ``schema`` (an
    object schema; keys it does not define are refused). The core schema leaves ``type`` open, so
    each orchestrator plugin adds its own type without closing the list for the others."""
    then = copy.deepcopy(schema)
    then.setdefault("type", "object")
    then.setdefault("additionalProperties", False)
    then["properties"] = {"type": {"const": kind, "description": "Orchestrator type."},
                          **then.get("properties", {})}
    return {"if": {"required": ["orchestrator"],
                   "properties": {"orchestrator": {"required": ["type"],
                                                   "properties": {"type": {"const": kind}}}}},
            "then": {"properties": {"orchestrator": then}}}


def orchestrator_types(schema: dict) -> list[str]:
    """The orchestrator types the merged schema has a rule for (see orchestrator_rule)."""
    types = []
    for rule in schema.get("allOf", []):
        try:
            types.append(rule["if"]["properties"]["orchestrator"]["properties"]["type"]["const"])
        except (KeyError, TypeError):
            continue
    return types


def orchestrator_problems(spec: dict, schema: dict) -> list[Problem]:
    orchestrator = spec.get("orchestrator")
    kind = orchestrator.get("type") if isinstance(orchestrator, dict) else None
    known = sorted(orchestrator_types(schema))
    if kind is not None and not isinstance(kind, str):
        return [Problem("orchestrator.type", f"expected a string, got {_kind(kind)} {_show(kind)}",
                        "e.g. `type: " + (known[0] if known else "slurm") + "`")]
    if kind is None or kind in known:
        return []
    guess = did_you_mean(kind, known)
    return [Problem("orchestrator.type",
                    f"unknown orchestrator type '{kind}'; available: {', '.join(known) or 'none'}",
                    f"did you mean '{guess}'?" if guess
                    else "install the plugin that offers it; `gcpgpu plugins` lists them")]


def _extend_with_default(validator_class):
    """jsonschema FAQ: "Why doesn't my schema's default property set the default on my instance?"

    Defaults are set before the ``properties`` keyword validates, so they are validated too and
    their own nested defaults are filled (``node_groups: {gpu: {}}`` gets a whole group). Defaults
    inside ``then`` apply only when the ``if`` matches, which gives conditional defaults."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


DefaultFillingValidator = _extend_with_default(jsonschema.Draft202012Validator)


# -- paths and line numbers -----------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


def format_path(parts: Iterable) -> str:
    """('node_groups', 'workers', 'count') -> 'node_groups.workers.count'; ints are [i]."""
    out = ""
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(str(part), ensure_ascii=False)}]"
    return out


def _parent_path(path: str) -> str | None:
    if not path:
        return None
    m = re.search(r'(\.[^.\[]+|\[(?:"(?:[^"\\]|\\.)*"|[^\]]*)\])$', path)
    return path[: m.start()] if m else ""


class _Lines:
    """The line of every key and list item in the YAML file, by formatted path."""

    def __init__(self):
        self.by_path: dict[str, int] = {"": 1}
        self.problems: list[Problem] = []

    def line(self, path: str) -> int | None:
        """Line of ``path`` or of its nearest ancestor written in the file; None for a path only
        defaults created (the top level counts only for the top-level problems)."""
        p: str | None = path
        while p:
            if p in self.by_path:
                return self.by_path[p]
            p = _parent_path(p)
        return self.by_path.get("") if path == "" else None

    def walk(self, loader: yaml.SafeLoader, node: yaml.Node, parts: tuple = (), seen=None) -> None:
        # Each node once: an alias (*name) is the same node again; its paths get the alias's line.
        seen = set() if seen is None else seen
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, value_node in node.value:
                try:
                    key = loader.construct_object(key_node, deep=True)
                except Exception:  # unhashable or odd keys: construct_document reported it
                    continue
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    continue
                line = key_node.start_mark.line + 1
                path = parts + (key,)
                if key in first:
                    self.problems.append(Problem(
                        format_path(path), f"line {line}: duplicate key '{key}' (first on line {first[key]})",
                        "remove one of them; only the last one would count"))
                else:
                    first[key] = line
                    self.by_path[format_path(path)] = line
                self.walk(loader, value_node, path, seen)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.by_path[format_path(parts + (i,))] = item.start_mark.line + 1
                self.walk(loader, item, parts + (i,), seen)


def _read_yaml(path: Path, source: str) -> tuple[Any, _Lines]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(source, [Problem("", "file not found", "check the path")]) from None
    except IsADirectoryError:
        raise SpecError(source, [Problem("", "is a directory, not a file",
                                         "pass the cluster file, e.g. cluster.yaml")]) from None
    except PermissionError:
        raise SpecError(source, [Problem("", "permission denied reading the file",
                                         "check its permissions (chmod u+r)")]) from None
    except OSError as e:
        raise SpecError(source, [Problem("", f"cannot read the file: {e.strerror or e}")]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError(source, [Problem("", f"not UTF-8 text (byte {e.start})",
                                         "save the file as UTF-8 YAML")]) from None

    lines = _Lines()
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
        if node is not None:
            lines.walk(loader, node)
    except yaml.MarkedYAMLError as e:
        raise SpecError(source, [_yaml_problem(e)]) from None
    except yaml.YAMLError as e:
        raise SpecError(source, [Problem("", f"invalid YAML: {e}")]) from None
    finally:
        loader.dispose()

    if data is not None:
        data = _unshare(data, source)
    if data is None:
        raise SpecError(source, [Problem("", "file is empty",
                                         "start with e.g. `name: my-cluster` and `project: my-gcp-project`")])
    if not isinstance(data, dict):
        raise SpecError(source, [Problem(
            "", f"line 1: the top level must be a mapping of keys (name, project, ...), not {_kind(data)}",
            "start with e.g. `name: my-cluster` and `project: my-gcp-project`")])
    return data, lines


MAX_VALUES = 100_000


def _unshare(data, source: str):
    """A copy in which YAML aliases (``*anchor``) no longer share one object, so filling defaults
    or editing one node group cannot change another. Refuses recursive aliases and alias bombs."""
    count = 0
    active: set[int] = set()

    def copy_of(value):
        nonlocal count
        count += 1
        if count > MAX_VALUES:
            raise SpecError(source, [Problem("", f"the file expands to more than {MAX_VALUES} values",
                                             "check for aliases (*name) nested inside each other")])
        if isinstance(value, (dict, list)):
            if id(value) in active:
                raise SpecError(source, [Problem("", "a YAML alias refers to itself (recursive)",
                                                 "use an anchor outside the value it is used in")])
            active.add(id(value))
            try:
                if isinstance(value, dict):
                    return {k: copy_of(v) for k, v in value.items()}
                return [copy_of(v) for v in value]
            finally:
                active.discard(id(value))
        return value

    return copy_of(data)


def _yaml_problem(e: yaml.MarkedYAMLError) -> Problem:
    mark = e.problem_mark or e.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    what = e.problem or "invalid YAML"
    context = e.context or ""
    opened = f" on line {e.context_mark.line + 1}" if e.context_mark else ""
    if "expected a single document" in context:
        return Problem("", f"{where}a second YAML document ('---')", "keep one cluster per file")
    if "'\\t'" in what:
        hint = "indent with spaces, not tabs"
    elif "flow mapping" in context:
        hint = f"close the '{{' opened{opened} with '}}'"
    elif "flow sequence" in context:
        hint = f"close the '[' opened{opened} with ']'"
    elif "quoted scalar" in context:
        hint = f"close the quote opened{opened}"
    elif "expected <block end>" in what or "mapping values are not allowed" in what:
        hint = "check the indentation: keys of one mapping line up, values need a space after ':'"
    elif "could not find expected ':'" in what:
        hint = "each line inside a mapping needs `key: value`"
    else:
        hint = f"{context}{opened}".strip()
    return Problem("", f"{where}invalid YAML: {what}", hint)


# -- schema errors -> problems --------------------------------------------------------------------

def _kind(value) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "empty"}


def _show(value, limit: int = 40) -> str:
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(word, choices: Iterable[str]) -> str | None:
    """Case, '-'/'_' and typo-tolerant match of ``word`` among ``choices``."""
    choices = [c for c in choices if isinstance(c, str)]
    if not isinstance(word, str) or not choices:
        return None

    def norm(s: str) -> str:
        return s.lower().replace("-", "_").replace(" ", "_")

    for c in choices:
        if norm(c) == norm(word):
            return c
    found = difflib.get_close_matches(norm(word), [norm(c) for c in choices], n=1, cutoff=0.6)
    if found:
        return next(c for c in choices if norm(c) == found[0])
    return None


def _example_value(prop: dict):
    """The first example, else the default, as YAML-ish text (None when there is neither)."""
    candidates = list(prop.get("examples") or [])[:1] + ([prop["default"]] if "default" in prop else [])
    for value in candidates:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)) or (isinstance(value, str) and value):
            return value
        if isinstance(value, (dict, list)) and value:
            return json.dumps(value)
    return None


def _example(schema: dict, name: str) -> str:
    value = _example_value(schema.get("properties", {}).get(name, {}))
    return f"{name}: {value if value is not None else '...'}"


def _schema_problems(errors, root_schema: dict) -> list[Problem]:
    problems: list[Problem] = []
    top_props = set(root_schema.get("properties", {}))
    group_props = set(root_schema.get("$defs", {}).get("node_group", {}).get("properties", {}))
    for error in errors:
        problems.extend(_translate(error, top_props, group_props))
    return problems


def _translate(error: jsonschema.ValidationError, top_props: set, group_props: set) -> list[Problem]:
    parts = tuple(error.absolute_path)
    path = format_path(parts)
    kw = error.validator
    value = error.instance
    schema = error.schema if isinstance(error.schema, dict) else {}
    last = parts[-1] if parts else None

    if kw == "additionalProperties" and isinstance(value, dict):
        allowed = list(schema.get("properties", {}))
        patterns = list(schema.get("patternProperties", {}))
        out = []
        for key in value:
            if key in allowed or any(re.search(p, str(key)) for p in patterns):
                continue
            guess = did_you_mean(key, allowed)
            if guess:
                hint = f"did you mean '{guess}'?"
            elif not parts and key in group_props:
                hint = f"'{key}' belongs in a node group: node_groups.<group>.{key}"
            elif len(parts) == 2 and parts[0] == "node_groups" and key in top_props:
                hint = f"'{key}' is set for the whole cluster, at the top level"
            else:
                hint = "allowed: " + ", ".join(sorted(allowed)) if allowed else "remove it"
            out.append(Problem(format_path(parts + (key,)), f"unknown key '{key}'", hint))
        return out

    if kw == "required" and isinstance(value, dict):
        out = []
        known = set(schema.get("properties", {}))
        for name in error.validator_value:
            if name in value:
                continue
            typo = did_you_mean(name, [k for k in value if isinstance(k, str) and k not in known])
            hint = f"rename '{typo}' to '{name}'" if typo else f"add e.g. `{_example(schema, name)}`"
            out.append(Problem(format_path(parts + (name,)), f"missing required key '{name}'", hint))
        return out

    if kw == "type":
        expected = error.validator_value
        expected = [expected] if isinstance(expected, str) else list(expected)
        want = " or ".join(_TYPE_NAMES.get(t, t) for t in expected)
        got = _kind(value)
        message = (f"is empty; expected {want}" if value is None
                   else f"expected {want}, got {got} {_show(value)}")
        hint = ""
        if value is None and len(parts) == 2 and parts[0] == "node_groups":
            hint = f"write `{last}: {{}}` for a group with every default"
        elif "string" in expected and isinstance(value, (bool, int, float)):
            hint = "quote it to make it a string, e.g. \"" + _show(value) + "\""
        elif "integer" in expected and isinstance(value, str) and value.strip().isdigit():
            hint = f"write it without quotes: {value.strip()}"
        elif "integer" in expected and isinstance(value, float) and value.is_integer():
            hint = f"write a whole number: {int(value)}"
        elif "boolean" in expected and isinstance(value, str):
            hint = "write true or false, without quotes"
        elif "object" in expected and len(parts) == 2 and parts[0] == "node_groups" and last in group_props:
            hint = f"node_groups maps group names to groups: write `node_groups: {{gpu: {{{last}: ...}}}}`"
        elif "object" in expected and isinstance(value, list):
            hint = "use `key: value` lines, not a '- item' list"
        elif "array" in expected and isinstance(value, str):
            hint = f"make it a list: [{value}]"
        elif isinstance(last, str) and (ex := _example_value(schema)) is not None:
            hint = f"e.g. `{last}: {ex}`"
        return [Problem(path, message, hint)]

    if kw in ("enum", "const"):
        choices = error.validator_value if kw == "enum" else [error.validator_value]
        guess = did_you_mean(value, [c for c in choices if isinstance(c, str)])
        name = f"{last}" if isinstance(last, str) else "value"
        hint = f"did you mean '{guess}'?" if guess else "choose one of: " + ", ".join(map(str, choices))
        return [Problem(path, f"{_show(value)} is not a valid {name}", hint)]

    if kw in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        bound = error.validator_value
        word = {"minimum": "at least", "exclusiveMinimum": "more than",
                "maximum": "at most", "exclusiveMaximum": "less than"}[kw]
        return [Problem(path, f"{_show(value)} is out of range", f"must be {word} {bound}")]

    if kw in ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"):
        bound = error.validator_value
        what = {"Length": "characters", "Items": "items", "Properties": "keys"}[
            next(s for s in ("Length", "Items", "Properties") if kw.endswith(s))]
        word = "at least" if kw.startswith("min") else "at most"
        return [Problem(path, f"has {len(value)} {what}; must have {word} {bound}")]

    if kw == "pattern":
        return [Problem(path, f"{_show(value)} has the wrong format",
                        schema.get("description", f"must match {error.validator_value}"))]

    if kw == "uniqueItems":
        return [Problem(path, "has duplicate items", "list each item once")]

    if kw in ("anyOf", "oneOf") and error.context:
        best = jsonschema.exceptions.best_match(error.context)
        return _translate(best, top_props, group_props)

    message = error.message if len(error.message) <= 100 else error.message[:97] + "..."
    return [Problem(path, message)]


# -- core semantic checks -------------------------------------------------------------------------

def name_problem(value, path: str, what: str) -> Problem | None:
    """RFC 1035 (1-63 chars, lowercase letter first, then lowercase, digits, '-', no '-' last)."""
    if not isinstance(value, str):
        return None
    if not value:
        return Problem(path, f"{what} is empty", "use 1-63 lowercase letters, digits and '-'")
    fixed = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")
    fixed = re.sub(r"^[0-9-]+", "", fixed)[:MAX_NAME].rstrip("-")
    suggestion = f"try '{fixed}'" if fixed and RFC1035.match(fixed) else ""
    if len(value) > MAX_NAME:
        return Problem(path, f"{what} is {len(value)} characters; at most {MAX_NAME}",
                       f"shorten it by {len(value) - MAX_NAME}")
    if RFC1035.match(value):
        return None
    if value != value.lower():
        why = "has uppercase letters"
    elif not value[0].isalpha() or not value[0].isascii():
        why = "must start with a lowercase letter"
    elif value.endswith("-"):
        why = "must not end with '-'"
    else:
        bad = sorted({c for c in value if not (c.isascii() and (c.islower() or c.isdigit() or c == "-"))})
        why = "has invalid character(s) " + " ".join(repr(c) for c in bad)
    return Problem(path, f"{what} '{value}' {why}",
                   suggestion or "use lowercase letters, digits and '-', starting with a letter")


def _label_chars_ok(text: str) -> bool:
    # GCE: lowercase letters, digits, '_', '-' and international characters (no uppercase letters).
    return all((c.isalpha() and not c.isupper()) or c.isdigit() or c in "_-" for c in text)


def label_problems(labels, parts: tuple) -> list[Problem]:
    """GCE rules for each key and value of the labels mapping at ``parts`` (counts: see core_problems)."""
    if not isinstance(labels, dict):
        return []
    problems: list[Problem] = []
    for key, value in labels.items():
        kpath = format_path(parts + (key,))
        if not isinstance(key, str):
            problems.append(Problem(kpath, f"label key {_show(key)} must be a string",
                                    f"quote it and start it with a letter, e.g. \"k{key}\""))
            continue
        if key.startswith(RESERVED_LABEL_PREFIX):
            problems.append(Problem(kpath, f"label keys starting with '{RESERVED_LABEL_PREFIX}' are reserved",
                                    f"rename it, e.g. '{key[len(RESERVED_LABEL_PREFIX):] or 'name'}'"))
        elif not key:
            problems.append(Problem(kpath, "label key is empty"))
        elif len(key) > MAX_NAME or len(key.encode()) > 128:
            problems.append(Problem(kpath, f"label key is {len(key)} characters; at most {MAX_NAME}"))
        elif not (key[0].isalpha() and not key[0].isupper()) or not _label_chars_ok(key):
            fixed = re.sub(r"[^a-z0-9_-]+", "-", key.lower()).strip("-")
            problems.append(Problem(
                kpath, f"invalid label key '{key}'",
                f"try '{fixed}'" if fixed and fixed[0].isalpha() and fixed != key
                else "start with a lowercase letter; then lowercase letters, digits, '_', '-'"))
        if isinstance(value, str):
            if len(value) > MAX_NAME or len(value.encode()) > 128:
                problems.append(Problem(kpath, f"label value is {len(value)} characters; at most {MAX_NAME}"))
            elif not _label_chars_ok(value):
                fixed = re.sub(r"[^a-z0-9_-]+", "-", value.lower()).strip("-")
                problems.append(Problem(kpath, f"invalid label value {_show(value)}",
                                        f"try '{fixed}'" if fixed and fixed != value
                                        else "use lowercase letters, digits, '_' and '-'"))
    return problems


def _known_zones() -> list[str]:
    return [f"{r}-{z}" for r in KNOWN_REGIONS for z in "abc"]


def zone_problem(zone, path: str) -> Problem | None:
    if not isinstance(zone, str) or ZONE_RE.match(zone):
        return None
    if re.match(r"^[a-z]+-[a-z]+[0-9]+$", zone):
        return Problem(path, f"'{zone}' is a region, not a zone", f"add the zone letter, e.g. '{zone}-a'")
    guess = did_you_mean(zone.lower(), _known_zones()) or (
        zone.lower() if ZONE_RE.match(zone.lower()) else None)
    return Problem(path, f"'{zone}' is not a zone name",
                   f"did you mean '{guess}'?" if guess else "zones look like 'us-central1-a'")


def core_problems(spec: dict) -> list[Problem]:
    """GCP-wide rules for every provider. Safe on schema-invalid specs (skips wrong types)."""
    problems: list[Problem] = []
    if p := name_problem(spec.get("name"), "name", "cluster name"):
        problems.append(p)
    if p := zone_problem(spec.get("zone"), "zone"):
        problems.append(p)
    fallbacks = spec.get("fallback_zones")
    if isinstance(fallbacks, list):
        seen: dict[str, int] = {}
        for i, zone in enumerate(fallbacks):
            path = f"fallback_zones[{i}]"
            if p := zone_problem(zone, path):
                problems.append(p)
            elif zone == spec.get("zone"):
                problems.append(Problem(path, f"'{zone}' is already the primary zone",
                                        "remove it: the primary zone is always tried first"))
            elif isinstance(zone, str) and zone in seen:
                problems.append(Problem(path, f"'{zone}' is listed twice (also fallback_zones[{seen[zone]}])",
                                        "remove one"))
            if isinstance(zone, str):
                seen.setdefault(zone, i)
    cluster_labels = spec.get("labels") if isinstance(spec.get("labels"), dict) else {}
    problems += label_problems(spec.get("labels"), ("labels",))
    if len(cluster_labels) + TOOL_LABELS > MAX_LABELS:
        problems.append(_too_many_labels("labels", len(cluster_labels)))
    groups = spec.get("node_groups")
    if isinstance(groups, dict):
        if not groups:
            problems.append(Problem("node_groups", "has no node groups",
                                    "add one, e.g. `node_groups: {gpu: {count: 1}}`"))
        for name, group in groups.items():
            gpath = format_path(("node_groups", name))
            if isinstance(name, str):
                if p := name_problem(name, gpath, "group name"):
                    problems.append(p)
            else:
                problems.append(Problem(gpath, f"group name {_show(name)} must be a string",
                                        f"quote it and start it with a letter, e.g. \"g{name}\""))
            if isinstance(group, dict):
                glabels = group.get("labels")
                if isinstance(glabels, dict):
                    problems += label_problems(glabels, ("node_groups", name, "labels"))
                    combined = len(set(cluster_labels) | set(glabels))
                    if (combined + TOOL_LABELS > MAX_LABELS
                            and len(cluster_labels) + TOOL_LABELS <= MAX_LABELS):
                        problems.append(_too_many_labels(f"{gpath}.labels", combined, with_cluster=True))
    return problems


def _too_many_labels(path: str, n: int, with_cluster: bool = False) -> Problem:
    where = " (with the cluster's)" if with_cluster else ""
    return Problem(path, f"too many labels: {n}{where} plus gcpgpu's own {TOOL_LABELS}",
                   f"GCE allows {MAX_LABELS} per resource: remove {n + TOOL_LABELS - MAX_LABELS}")


def provider_problems(spec: dict, plugins) -> list[Problem]:
    groups = spec.get("node_groups")
    if not isinstance(groups, dict):
        return []
    available = sorted(plugins.providers)
    problems = []
    for name, group in groups.items():
        provider = group.get("provider") if isinstance(group, dict) else None
        if isinstance(provider, str) and provider not in plugins.providers:
            guess = did_you_mean(provider, available)
            problems.append(Problem(
                format_path(("node_groups", name, "provider")),
                f"unknown provider '{provider}'; available: {', '.join(available) or 'none'}",
                f"did you mean '{guess}'?" if guess else "install the plugin that offers it; `gcpgpu plugins` lists them"))
    return problems


def state_problems(spec: dict, plugins) -> list[Problem]:
    """A ``state.path`` with a scheme (gs://...) needs a plugin that keeps state there."""
    from gcpgpu.state import scheme_of

    path = spec.get("state", {}).get("path") if isinstance(spec.get("state"), dict) else None
    scheme = scheme_of(path)
    known = sorted({s for found in plugins.hook.gcpgpu_state_schemes() for s in found or []})
    if scheme is None or scheme in known:
        return []
    offered = ", ".join(f"{s}://" for s in known) or "none"
    return [Problem("state.path", f"no plugin keeps state at {scheme}:// ('{path}'); "
                                  f"remote state schemes: {offered}",
                    "use a local directory" + (f" or {known[0]}://BUCKET/PREFIX" if known else "")
                    + "; `gcpgpu plugins` lists the loaded plugins")]


# -- entry points ---------------------------------------------------------------------------------

def validate_spec(data: dict, plugins, source: str = "<spec>", lines: _Lines | None = None,
                  base_dir: Path | None = None) -> dict:
    """Validate an already-parsed spec in place (defaults filled) and return it, or raise SpecError.
    Relative paths in it start at ``base_dir`` (default: the current directory)."""
    lines = lines or _Lines()
    schema = build_schema(plugins)
    validator = DefaultFillingValidator(schema)
    errors = list(validator.iter_errors(data))  # iterating fills the defaults
    problems = list(lines.problems)
    problems += _schema_problems(errors, schema)
    problems += core_problems(data)
    problems += provider_problems(data, plugins)
    problems += state_problems(data, plugins)
    problems += orchestrator_problems(data, schema)
    try:
        for result in plugins.hook.gcpgpu_validate(spec=data, base_dir=base_dir or Path.cwd()):
            problems.extend(result or [])
    except Exception:
        if not errors:
            raise  # a plugin bug on a schema-valid spec: let it show
        # plugins may assume a schema-valid spec; the schema problems come first anyway
    if problems:
        raise SpecError(source, _finish(problems, lines))
    for key in [k for k in data if isinstance(k, str) and k.startswith(EXTENSION_PREFIX)]:
        del data[key]  # x-* keys only hold YAML anchors
    return data


def load_spec(path, plugins) -> dict:
    """Read, validate and default-fill a cluster file. Raises SpecError listing every problem."""
    source = str(path)
    data, lines = _read_yaml(Path(path), source)
    return validate_spec(data, plugins, source, lines, Path(path).resolve().parent)


def _finish(problems: list[Problem], lines: _Lines) -> list[Problem]:
    """Dedupe, prefix each message with its YAML line, order by line."""
    seen = set()
    out: list[tuple[int, int, Problem]] = []
    for i, p in enumerate(problems):
        if (p.path, p.message) in seen:
            continue
        seen.add((p.path, p.message))
        line = lines.line(p.path) if len(lines.by_path) > 1 else None
        if re.match(r"^line \d+", p.message):
            line = int(re.match(r"^line (\d+)", p.message).group(1))
        elif line is not None:
            p = Problem(p.path, f"line {line}: {p.message}", p.hint)
        out.append((line if line is not None else 0, i, p))
    return [p for _, _, p in sorted(out, key=lambda t: (t[0], t[1]))]
