"""Admin endpoints over HTTP, the standalone server, raw wire format and the pytest fixture."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from importlib.metadata import entry_points

from emulator_helpers import PROJECT, ZONE, bulk_insert


def http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_admin_endpoints_drive_the_emulator(emu, gce):
    admin = f"{emu.url}/_emulator"
    assert http("POST", f"{admin}/capacity", {"zone": ZONE, "accelerator_type": "nvidia-tesla-a100", "gpus": 2})[0] == 200
    assert gce.wait(bulk_insert(gce, 2)).error.errors[0].code == "ZONE_RESOURCE_POOL_EXHAUSTED"
    assert http("POST", f"{admin}/capacity", {"zone": ZONE, "accelerator_type": "nvidia-tesla-a100", "gpus": 64})[0] == 200
    assert http("POST", f"{admin}/quota", {"region": "us-central1", "metric": "NVIDIA_A100_GPUS", "limit": 2})[0] == 200
    assert gce.wait(bulk_insert(gce, 2)).error.errors[0].code == "QUOTA_EXCEEDED"
    http("POST", f"{admin}/quota", {"region": "us-central1", "metric": "NVIDIA_A100_GPUS", "limit": 100})
    assert not gce.wait(bulk_insert(gce, 2)).error.errors

    fault = {"method": "compute.instances.get", "code": "backendError", "http_status": 500, "times": 1}
    assert http("POST", f"{admin}/faults", fault)[0] == 200
    status, body = http("GET", f"{emu.url}/compute/v1/projects/{PROJECT}/zones/{ZONE}/instances/demo-0001")
    assert status == 500 and body["error"]["errors"][0]["reason"] == "backendError"
    assert body["error"]["status"] == "INTERNAL"

    status, op = http("POST", f"{admin}/preempt", {"zone": ZONE, "name": "demo-0001"})
    assert status == 200 and op["operationType"] == "compute.instances.preempted"
    assert http("POST", f"{admin}/preempt", {"zone": ZONE, "name": "missing"})[0] == 404
    assert http("POST", f"{admin}/faults", {"method": "compute.nope", "code": "x"})[0] == 400

    status, calls = http("GET", f"{admin}/calls")
    methods = [c["methodId"] for c in calls["calls"]]
    assert methods.count("compute.instances.bulkInsert") == 3 and "compute.instances.get" in methods
    assert not any("_emulator" in c["path"] for c in calls["calls"])
    assert http("POST", f"{admin}/reset_calls")[0] == 200
    assert http("GET", f"{admin}/calls")[1] == {"calls": []}
    instances = http("GET", f"{admin}/instances")[1]["instances"]
    assert {i["name"]: i["status"] for i in instances}["demo-0001"] == "TERMINATED"


def test_wire_format_is_camel_case_with_int64_strings(emu, gce):
    op = bulk_insert(gce, 1, external_ip=True)
    base = f"{emu.url}/compute/v1/projects/{PROJECT}/zones/{ZONE}"
    status, raw_op = http("GET", f"{base}/operations/{op.name}")
    assert status == 200 and raw_op["kind"] == "compute#operation" and isinstance(raw_op["id"], str)
    assert raw_op["zone"] == base and raw_op["selfLink"] == f"{base}/operations/{op.name}"
    gce.wait(op)
    status, instance = http("GET", f"{base}/instances/demo-0001")
    assert instance["kind"] == "compute#instance" and isinstance(instance["id"], str)
    assert instance["disks"][0]["diskSizeGb"] == "200"
    assert instance["guestAccelerators"][0]["acceleratorCount"] == 2
    assert instance["networkInterfaces"][0]["accessConfigs"][0]["natIP"].startswith("203.0.113.")
    assert instance["scheduling"]["onHostMaintenance"] == "TERMINATE"
    status, error = http("GET", f"{base}/instances/ghost")
    assert status == 404 and error["error"]["code"] == 404 and error["error"]["status"] == "NOT_FOUND"
    assert http("GET", f"{emu.url}/compute/v1/projects/{PROJECT}/nonsense")[0] == 404
    assert emu.calls[-1].method_id == "unknown"


def test_bulk_insert_accepts_full_urls(emu):
    base = f"{emu.url}/compute/v1/projects/{PROJECT}/zones/{ZONE}"
    google = "https://www.googleapis.com/compute/v1/projects"
    body = {"count": "2", "namePattern": "url-#", "instanceProperties": {
        "machineType": "g2-standard-8",
        "guestAccelerators": [{"acceleratorType": "nvidia-l4", "acceleratorCount": 1}],
        "scheduling": {"onHostMaintenance": "TERMINATE"},
        "disks": [{"boot": True, "initializeParams": {
            "sourceImage": f"{google}/debian-cloud/global/images/family/debian-12"}}],
        "networkInterfaces": [{"network": f"{google}/{PROJECT}/global/networks/default"}]}}
    status, op = http("POST", f"{base}/instances/bulkInsert", body)
    assert status == 200, op
    status, done = http("POST", f"{base}/operations/{op['name']}/wait")
    assert done["status"] == "DONE" and "error" not in done
    assert [i["name"] for i in emu.instances()] == ["url-1", "url-2"]


def test_standalone_server_until_interrupted():
    code = "from gcpgpu.emulator.server import serve; serve(port=0, latency=0.05)"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        url = line.split("listening on ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        assert http("GET", f"{url}/compute/v1/projects/p/zones/{ZONE}")[1]["name"] == ZONE
        assert http("GET", f"{url}/_emulator/calls")[1]["calls"][0]["methodId"] == "compute.zones.get"
    finally:
        process.send_signal(2)  # SIGINT, as Ctrl-C
        assert process.wait(timeout=10) == 0


def test_pytest_fixture_from_the_plugin_module(tmp_path):
    test_file = tmp_path / "test_uses_fixture.py"
    test_file.write_text(textwrap.dedent("""
        import urllib.request, json

        def test_fixture(gcp_emulator):
            assert gcp_emulator.state.latency == 0.05
            url = gcp_emulator.url + "/compute/v1/projects/p/zones/us-central1-a"
            assert json.load(urllib.request.urlopen(url))["name"] == "us-central1-a"
            assert gcp_emulator.count("compute.zones.get") == 1
    """))
    installed = any(e.value == "gcpgpu.emulator.pytest_plugin" for e in entry_points(group="pytest11"))
    load_plugin = [] if installed else ["-p", "gcpgpu.emulator.pytest_plugin"]  # -p twice would clash
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *load_plugin, "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(test_file)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
