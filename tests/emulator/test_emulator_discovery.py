"""The emulator checked against Google's own Compute v1 discovery document.

The document ships with google-api-python-client; without it these tests skip (CI installs it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from emulator_helpers import PROJECT, ZONE, bulk_insert, gpu_instance
from google.cloud import compute_v1
from test_emulator_admin import http

from gcpgpu.emulator.compute_networks import ROUTES as NETWORK_ROUTES
from gcpgpu.emulator.routes import ROUTES

googleapiclient = pytest.importorskip("googleapiclient", reason="google-api-python-client not installed")
DISCOVERY_PATH = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "compute.v1.json"
if not DISCOVERY_PATH.exists():
    pytest.skip("compute.v1 discovery document not shipped", allow_module_level=True)
DISCOVERY = json.loads(DISCOVERY_PATH.read_text())
SCHEMAS = DISCOVERY["schemas"]


def _discovery_methods(resources: dict) -> dict[str, dict]:
    methods = {}
    for resource in resources.values():
        for method in resource.get("methods", {}).values():
            methods[method["id"]] = method
        methods.update(_discovery_methods(resource.get("resources", {})))
    return methods


METHODS = _discovery_methods(DISCOVERY["resources"])


@pytest.mark.parametrize("route", ROUTES + NETWORK_ROUTES, ids=lambda r: r.method_id)
def test_every_route_is_a_discovery_method(route):
    method = METHODS.get(route.method_id)
    assert method is not None, f"{route.method_id} is not in the discovery document"
    assert method["httpMethod"] == route.http_method
    assert route.template in (method["path"], method.get("flatPath")), method["path"]
    assert DISCOVERY["servicePath"] == "compute/v1/"


def schema_problems(value, schema: dict, path: str = "$") -> list[str]:
    """Keys not in the schema and values of the wrong JSON type (int64 must be a string)."""
    if "$ref" in schema:
        schema = SCHEMAS[schema["$ref"]]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        if not isinstance(value, dict):
            return [f"{path}: expected object, got {value!r}"]
        problems = []
        for key, item in value.items():
            if key in schema.get("properties", {}):
                problems += schema_problems(item, schema["properties"][key], f"{path}.{key}")
            elif "additionalProperties" in schema:
                problems += schema_problems(item, schema["additionalProperties"], f"{path}[{key!r}]")
            else:
                problems.append(f"{path}.{key} is not a property of the schema")
        return problems
    if kind == "array":
        if not isinstance(value, list):
            return [f"{path}: expected array"]
        return [p for i, item in enumerate(value) for p in schema_problems(item, schema["items"], f"{path}[{i}]")]
    expected = {"string": str, "boolean": bool, "integer": int, "number": (int, float)}[kind]
    if not isinstance(value, expected) or (kind in ("integer", "number") and isinstance(value, bool)):
        return [f"{path}: expected {kind} ({schema.get('format', '')}), got {value!r}"]
    return []


def _response_schema(method_id: str) -> dict:
    return METHODS[method_id]["response"]


@pytest.fixture
def populated(emu, gce):
    """A project with a finished bulkInsert, a failed one, a stopped instance and a preemption."""
    emu.set_quota("us-central1", "NVIDIA_L4_GPUS", 1)
    ok = bulk_insert(gce, 2, external_ip=True)
    failed = bulk_insert(gce, 2, machine_type="g2-standard-8", pattern="l4-#")
    gce.wait(ok)
    gce.wait(failed)
    body = gpu_instance("meta")
    body.metadata = compute_v1.Metadata(items=[compute_v1.Items(key="k", value="v")])
    gce.wait(gce.instances.insert(project=PROJECT, zone=ZONE, instance_resource=body))
    gce.wait(gce.instances.stop(project=PROJECT, zone=ZONE, instance="demo-0002"))
    emu.preempt(ZONE, "meta")
    return {"ok": ok.name, "failed": failed.name}


def test_responses_match_discovery_schemas(emu, populated):
    base = f"{emu.url}/compute/v1/projects/{PROJECT}"
    zone = f"{base}/zones/{ZONE}"
    dlvm = f"{emu.url}/compute/v1/projects/deeplearning-platform-release/global/images"
    image_name = http("GET", f"{dlvm}/family/pytorch-latest-gpu")[1]["name"]
    gets = {
        "compute.zones.list": f"{base}/zones",
        "compute.zones.get": zone,
        "compute.regions.list": f"{base}/regions",
        "compute.regions.get": f"{base}/regions/us-central1",
        "compute.machineTypes.list": f"{zone}/machineTypes",
        "compute.machineTypes.get": f"{zone}/machineTypes/a3-highgpu-8g",
        "compute.machineTypes.aggregatedList": f"{base}/aggregated/machineTypes?maxResults=20",
        "compute.acceleratorTypes.list": f"{zone}/acceleratorTypes",
        "compute.acceleratorTypes.get": f"{zone}/acceleratorTypes/nvidia-l4",
        "compute.acceleratorTypes.aggregatedList": f"{base}/aggregated/acceleratorTypes",
        "compute.images.get": f"{dlvm}/{image_name}",
        "compute.images.getFromFamily": f"{dlvm}/family/pytorch-latest-gpu",
        "compute.instances.list": f"{zone}/instances",
        "compute.instances.aggregatedList": f"{base}/aggregated/instances?maxResults=1",
        "compute.instances.get": f"{zone}/instances/demo-0001",
        "compute.instances.getGuestAttributes": f"{zone}/instances/demo-0001/getGuestAttributes?queryPath=a/",
        "compute.zoneOperations.list": f"{zone}/operations",
        "compute.zoneOperations.get": f"{zone}/operations/{populated['failed']}",
        "compute.regionOperations.list": f"{base}/regions/us-central1/operations",
        "compute.globalOperations.list": f"{base}/global/operations",
    }
    problems = []
    for method_id, url in gets.items():
        status, body = http("GET", url)
        assert status == 200, (method_id, body)
        problems += [f"{method_id}: {p}" for p in schema_problems(body, _response_schema(method_id))]
    status, waited = http("POST", f"{zone}/operations/{populated['ok']}/wait")
    problems += schema_problems(waited, _response_schema("compute.zoneOperations.wait"))
    assert problems == []


def test_served_json_is_rich_enough(emu, populated):
    """The fields callers depend on are present (absent keys would pass the schema check)."""
    zone = f"{emu.url}/compute/v1/projects/{PROJECT}/zones/{ZONE}"
    instance = http("GET", f"{zone}/instances/demo-0001")[1]
    for key in ("kind", "id", "name", "status", "zone", "machineType", "selfLink", "labels", "labelFingerprint",
                "networkInterfaces", "disks", "scheduling", "guestAccelerators", "creationTimestamp", "metadata"):
        assert key in instance, key
    failed = http("GET", f"{zone}/operations/{populated['failed']}")[1]
    for key in ("kind", "id", "name", "operationType", "targetLink", "status", "progress", "insertTime",
                "startTime", "endTime", "zone", "selfLink", "user", "error", "httpErrorStatusCode",
                "httpErrorMessage"):
        assert key in failed, key
    assert failed["error"]["errors"][0]["errorDetails"][0]["quotaInfo"]["metricName"].endswith("nvidia_l4_gpus")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", failed["insertTime"])


def test_mutation_responses_match_the_operation_schema(emu, gce, populated):
    zone = f"{emu.url}/compute/v1/projects/{PROJECT}/zones/{ZONE}"
    instance = http("GET", f"{zone}/instances/demo-0001")[1]
    calls = [
        ("compute.instances.setLabels", "POST", f"{zone}/instances/demo-0001/setLabels",
         {"labels": {"x": "y"}, "labelFingerprint": instance["labelFingerprint"]}),
        ("compute.instances.setMetadata", "POST", f"{zone}/instances/demo-0001/setMetadata",
         {"fingerprint": instance["metadata"]["fingerprint"], "items": [{"key": "a", "value": "b"}]}),
        ("compute.instances.start", "POST", f"{zone}/instances/demo-0002/start", None),
        ("compute.instances.stop", "POST", f"{zone}/instances/demo-0001/stop", None),
        ("compute.instances.delete", "DELETE", f"{zone}/instances/meta", None),
        ("compute.instances.insert", "POST", f"{zone}/instances",
         json.loads(compute_v1.Instance.to_json(gpu_instance("fresh")))),
    ]
    for method_id, verb, url, body in calls:
        status, op = http(verb, url, body)
        assert status == 200, (method_id, op)
        assert schema_problems(op, _response_schema(method_id)) == [], method_id
    status, deleted = http("DELETE", f"{zone}/operations/{populated['ok']}")
    assert status == 200 and deleted == {}
