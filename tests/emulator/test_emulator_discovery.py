"""The emulator checked against Google's own Compute v1 discovery document.

The document ships with google-api-python-client; without it these tests skip (CI installs it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from emulator_helpers import PROJECT, ZONE, bulk_insert, gpu_instance, gpu_properties
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


def get_problems(gets: dict[str, str]) -> list[str]:
    """GET each {method id: url} (each must answer 200) and check the body against that
    method's response schema."""
    problems = []
    for method_id, url in gets.items():
        status, body = http("GET", url)
        assert status == 200, (method_id, body)
        problems += [f"{method_id}: {p}" for p in schema_problems(body, _response_schema(method_id))]
    return problems


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
    problems = get_problems(gets)
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


# -- instance templates and managed instance groups ----------------------------------------------

@pytest.fixture
def populated_groups(emu):
    """A global and a regional template; a stable zonal group and a regional one out of capacity."""
    from test_emulator_mig import REGION, Groups, until

    groups = Groups(emu.url)
    template = groups.template()
    body = compute_v1.InstanceTemplate(name="rt", properties=gpu_properties())
    groups.wait(groups.region_templates.insert(project=PROJECT, region=REGION, instance_template_resource=body))
    groups.zonal_group(1, template)
    emu.set_capacity("us-central1-b", "nvidia-tesla-a100", 0)
    regional = compute_v1.InstanceGroupManager(
        name="reg", target_size=2, instance_template=template,
        distribution_policy=compute_v1.DistributionPolicy(zones=[
            compute_v1.DistributionPolicyZoneConfiguration(zone=f"zones/{z}") for z in ("us-central1-a", "us-central1-b")]))
    groups.wait(groups.regional.insert(project=PROJECT, region=REGION, instance_group_manager_resource=regional))
    until(lambda: groups.get().status.is_stable and list(
        groups.regional.list_errors(project=PROJECT, region=REGION, instance_group_manager="reg")))
    return groups


def test_group_responses_match_discovery_schemas(emu, populated_groups):
    base = f"{emu.url}/compute/v1/projects/{PROJECT}"
    zonal = f"{base}/zones/{ZONE}/instanceGroupManagers"
    regional = f"{base}/regions/us-central1/instanceGroupManagers"
    gets = {
        "compute.instanceTemplates.get": f"{base}/global/instanceTemplates/tpl",
        "compute.instanceTemplates.list": f"{base}/global/instanceTemplates",
        "compute.regionInstanceTemplates.get": f"{base}/regions/us-central1/instanceTemplates/rt",
        "compute.regionInstanceTemplates.list": f"{base}/regions/us-central1/instanceTemplates",
        "compute.instanceGroupManagers.get": f"{zonal}/grp",
        "compute.instanceGroupManagers.list": zonal,
        "compute.instanceGroupManagers.aggregatedList": f"{base}/aggregated/instanceGroupManagers",
        "compute.instanceGroupManagers.listErrors": f"{zonal}/grp/listErrors",
        "compute.regionInstanceGroupManagers.get": f"{regional}/reg",
        "compute.regionInstanceGroupManagers.list": regional,
        "compute.regionInstanceGroupManagers.listErrors": f"{regional}/reg/listErrors",
    }
    problems = get_problems(gets)
    for method_id, url in (("compute.instanceGroupManagers.listManagedInstances", f"{zonal}/grp"),
                           ("compute.regionInstanceGroupManagers.listManagedInstances", f"{regional}/reg")):
        status, body = http("POST", f"{url}/listManagedInstances")
        assert status == 200 and body["managedInstances"], (method_id, body)
        problems += [f"{method_id}: {p}" for p in schema_problems(body, _response_schema(method_id))]
    assert problems == []
    errors = http("GET", f"{regional}/reg/listErrors")[1]["items"]
    assert {e["error"]["code"] for e in errors} == {"ZONE_RESOURCE_POOL_EXHAUSTED"}
    assert all("/zones/us-central1-b/instances/reg-" in e["instanceActionDetails"]["instance"] for e in errors)
    unstable = http("GET", f"{regional}/reg")[1]
    for key in ("kind", "id", "name", "region", "instanceTemplate", "versions", "targetSize", "currentActions",
                "status", "distributionPolicy", "updatePolicy", "baseInstanceName", "selfLink", "fingerprint"):
        assert key in unstable, key
    assert unstable["status"]["isStable"] is False and unstable["currentActions"]["creating"] == 1


def test_group_mutation_responses_match_the_operation_schema(emu, populated_groups):
    base = f"{emu.url}/compute/v1/projects/{PROJECT}"
    zonal = f"{base}/zones/{ZONE}/instanceGroupManagers"
    regional = f"{base}/regions/us-central1/instanceGroupManagers"
    template = f"projects/{PROJECT}/global/instanceTemplates/tpl"
    calls = [
        ("compute.instanceTemplates.insert", "POST", f"{base}/global/instanceTemplates",
         {"name": "t2", "properties": json.loads(compute_v1.InstanceProperties.to_json(gpu_properties()))}),
        ("compute.instanceGroupManagers.resize", "POST", f"{zonal}/grp/resize?size=2", None),
        ("compute.instanceGroupManagers.setInstanceTemplate", "POST", f"{zonal}/grp/setInstanceTemplate",
         {"instanceTemplate": template}),
        ("compute.instanceGroupManagers.patch", "PATCH", f"{zonal}/grp",
         {"updatePolicy": {"type": "PROACTIVE", "maxSurge": {"fixed": 0}, "maxUnavailable": {"fixed": 2}}}),
        ("compute.regionInstanceGroupManagers.resize", "POST", f"{regional}/reg/resize?size=1", None),
        ("compute.regionInstanceGroupManagers.patch", "PATCH", f"{regional}/reg", {"targetSize": 1}),
        ("compute.regionInstanceGroupManagers.setInstanceTemplate", "POST", f"{regional}/reg/setInstanceTemplate",
         {"instanceTemplate": template}),
        ("compute.instanceGroupManagers.insert", "POST", zonal,
         {"name": "g2", "targetSize": 0, "instanceTemplate": template}),
        ("compute.regionInstanceGroupManagers.insert", "POST", regional,
         {"name": "r2", "targetSize": 0, "instanceTemplate": template}),
        ("compute.instanceGroupManagers.delete", "DELETE", f"{zonal}/g2", None),
        ("compute.regionInstanceGroupManagers.delete", "DELETE", f"{regional}/r2", None),
        ("compute.regionInstanceTemplates.delete", "DELETE", f"{base}/regions/us-central1/instanceTemplates/rt", None),
        ("compute.instanceTemplates.delete", "DELETE", f"{base}/global/instanceTemplates/t2", None),
    ]
    for method_id, verb, url, body in calls:
        status, op = http(verb, url, body)
        assert status == 200, (method_id, op)
        assert schema_problems(op, _response_schema(method_id)) == [], method_id
    status, body = http("POST", f"{base}/regions/us-central1/instanceTemplates",
                        {"name": "r3", "properties": {"machineType": "a2-highgpu-1g", "disks": [{"boot": True}]}})
    assert status == 200 and schema_problems(body, _response_schema("compute.regionInstanceTemplates.insert")) == []


def test_mig_provider_requests_match_discovery_schemas():
    """The template and group bodies the mig provider sends are shaped as the API documents them."""
    from gcpgpu.engine import Cluster
    from gcpgpu.plugins import Plugins
    from gcpgpu.spec import validate_spec
    from gcpgpu_plugins import compute
    from gcpgpu_plugins.mig import _rolling_policy

    spec = validate_spec({"name": "demo", "project": PROJECT, "node_groups": {"w": {
        "provider": "mig", "count": 2, "spot": True, "regional": True}}}, Plugins())
    cluster = Cluster(spec, Plugins(), clients=None, state=None)
    template, group = [r for r in cluster.desired() if r.provider == "mig"]
    body = compute_v1.InstanceTemplate(name=template.name, properties=compute.instance_properties(
        cluster.context(), template.group, spec["node_groups"][template.group]))
    manager = compute_v1.InstanceGroupManager(name=group.name, target_size=2, update_policy=_rolling_policy(
        group.body), instance_template=f"projects/{PROJECT}/global/instanceTemplates/{template.name}")
    assert schema_problems(json.loads(compute_v1.InstanceTemplate.to_json(body)), SCHEMAS["InstanceTemplate"]) == []
    assert schema_problems(json.loads(compute_v1.InstanceGroupManager.to_json(manager)),
                           SCHEMAS["InstanceGroupManager"]) == []
