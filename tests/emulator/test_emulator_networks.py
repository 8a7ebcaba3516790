"""The emulator's networks, subnetworks, firewalls (Compute v1) and IAM / Resource Manager, through
the real google-cloud clients where they speak REST and plain HTTP where they do not."""

from __future__ import annotations

import uuid

import pytest
from emulator_helpers import PROJECT, ZONE, DLVM_FAMILY
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1, resourcemanager_v3
from test_emulator_admin import http
from test_emulator_discovery import METHODS, get_problems, schema_problems

from gcpgpu.emulator import compute_networks

REGION = "us-central1"


@pytest.fixture
def net(emu):
    options = dict(credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=emu.url))

    class Clients:
        networks = compute_v1.NetworksClient(**options)
        subnetworks = compute_v1.SubnetworksClient(**options)
        firewalls = compute_v1.FirewallsClient(**options)
        instances = compute_v1.InstancesClient(**options)
        global_ops = compute_v1.GlobalOperationsClient(**options)
        region_ops = compute_v1.RegionOperationsClient(**options)
        projects = resourcemanager_v3.ProjectsClient(transport="rest", **options)

        def wait(self, operation):
            if operation.region:
                return self.region_ops.wait(project=PROJECT, region=REGION, operation=operation.name)
            return self.global_ops.wait(project=PROJECT, operation=operation.name)

    return Clients()


def make_network(net, name="vpc", **fields):
    fields.setdefault("auto_create_subnetworks", False)
    return net.wait(net.networks.insert(project=PROJECT, network_resource=compute_v1.Network(name=name, **fields)))


def make_subnet(net, name="sub", network="vpc", cidr="10.10.0.0/20"):
    return net.wait(net.subnetworks.insert(project=PROJECT, region=REGION, subnetwork_resource=compute_v1.Subnetwork(
        name=name, network=f"global/networks/{network}", ip_cidr_range=cidr)))


def make_firewall(net, name="fw", **fields):
    fields.setdefault("network", "global/networks/vpc")
    fields.setdefault("allowed", [compute_v1.Allowed(I_p_protocol="tcp", ports=["22"])])
    return net.wait(net.firewalls.insert(project=PROJECT, firewall_resource=compute_v1.Firewall(name=name, **fields)))


def test_network_subnet_firewall_round_trip_through_the_clients(net):
    done = make_network(net, mtu=8896)
    assert done.status == compute_v1.Operation.Status.DONE and not done.error.errors
    assert done.target_link.endswith(f"/projects/{PROJECT}/global/networks/vpc")
    assert net.networks.get(project=PROJECT, network="vpc").mtu == 8896
    assert make_subnet(net).region.endswith(f"/regions/{REGION}")  # a regional operation
    subnet = net.subnetworks.get(project=PROJECT, region=REGION, subnetwork="sub")
    assert subnet.gateway_address == "10.10.0.1" and subnet.network.endswith("/global/networks/vpc")
    assert [s.name for s in net.subnetworks.list(project=PROJECT, region=REGION)] == ["sub"]
    assert list(net.networks.get(project=PROJECT, network="vpc").subnetworks) == [subnet.self_link]
    make_firewall(net, source_ranges=["35.235.240.0/20"])
    assert [f.name for f in net.firewalls.list(project=PROJECT)] == ["fw"]
    filtered = net.networks.list(request=compute_v1.ListNetworksRequest(project=PROJECT, filter="name eq 'v.*'"))
    assert [n.name for n in filtered] == ["vpc"]

    for deleting in (lambda: net.firewalls.delete(project=PROJECT, firewall="fw"),
                     lambda: net.subnetworks.delete(project=PROJECT, region=REGION, subnetwork="sub"),
                     lambda: net.networks.delete(project=PROJECT, network="vpc")):
        net.wait(deleting())
    with pytest.raises(exceptions.NotFound):
        net.networks.get(project=PROJECT, network="vpc")


def test_a_network_in_use_cannot_be_deleted(net):
    make_network(net)
    make_subnet(net)
    with pytest.raises(exceptions.BadRequest, match="already being used by 'projects/test-project/regions"):
        net.networks.delete(project=PROJECT, network="vpc")
    instance = compute_v1.Instance(
        name="vm", machine_type=f"zones/{ZONE}/machineTypes/n1-standard-4",
        disks=[compute_v1.AttachedDisk(boot=True, initialize_params=compute_v1.AttachedDiskInitializeParams(
            source_image=DLVM_FAMILY))],
        network_interfaces=[compute_v1.NetworkInterface(network="global/networks/vpc",
                                                        subnetwork=f"regions/{REGION}/subnetworks/sub")])
    net.instances.insert(project=PROJECT, zone=ZONE, instance_resource=instance)
    with pytest.raises(exceptions.BadRequest, match="already being used by 'projects/test-project/zones"):
        net.subnetworks.delete(project=PROJECT, region=REGION, subnetwork="sub")


def test_subnet_ranges_are_checked(net):
    make_network(net)
    make_subnet(net)
    with pytest.raises(exceptions.BadRequest, match="conflicts with existing subnetwork 'sub'"):
        make_subnet(net, name="sub2", cidr="10.10.8.0/24")
    with pytest.raises(exceptions.BadRequest, match="private IPv4"):
        make_subnet(net, name="sub3", cidr="8.8.8.0/24")
    with pytest.raises(exceptions.NotFound):
        make_subnet(net, name="sub4", network="nope", cidr="10.20.0.0/24")
    with pytest.raises(exceptions.Conflict):
        make_subnet(net)


def test_firewall_rules_behave_like_gce(net):
    make_network(net)
    make_firewall(net, name="open")  # no source at all: GCE opens it to everyone
    assert list(net.firewalls.get(project=PROJECT, firewall="open").source_ranges) == ["0.0.0.0/0"]
    with pytest.raises(exceptions.BadRequest, match="cannot be used together"):
        make_firewall(net, name="mixed", source_tags=["a"], target_service_accounts=["x@p.iam.gserviceaccount.com"])
    with pytest.raises(exceptions.BadRequest, match="ports need tcp"):
        make_firewall(net, name="icmp", allowed=[compute_v1.Allowed(I_p_protocol="icmp", ports=["22"])])
    net.wait(net.firewalls.patch(project=PROJECT, firewall="open",
                                 firewall_resource=compute_v1.Firewall(source_ranges=["35.235.240.0/20"])))
    patched = net.firewalls.get(project=PROJECT, firewall="open")
    assert list(patched.source_ranges) == ["35.235.240.0/20"] and patched.allowed[0].ports == ["22"]


def test_a_repeated_request_id_replays_the_first_operation(net):
    request_id = str(uuid.uuid4())
    request = compute_v1.InsertNetworkRequest(project=PROJECT, request_id=request_id,
                                              network_resource=compute_v1.Network(name="vpc", auto_create_subnetworks=False))
    first = net.networks.insert(request=request)
    second = net.networks.insert(request=request)
    assert first.name == second.name


def test_network_shapes_match_the_discovery_document(emu, net):
    make_network(net)
    make_subnet(net)
    make_firewall(net, target_service_accounts=["a@test-project.iam.gserviceaccount.com"])
    base = f"{emu.url}/compute/v1/projects/{PROJECT}"
    gets = {
        "compute.networks.list": f"{base}/global/networks",
        "compute.networks.get": f"{base}/global/networks/vpc",
        "compute.subnetworks.list": f"{base}/regions/{REGION}/subnetworks",
        "compute.subnetworks.aggregatedList": f"{base}/aggregated/subnetworks",
        "compute.subnetworks.get": f"{base}/regions/{REGION}/subnetworks/sub",
        "compute.firewalls.list": f"{base}/global/firewalls",
        "compute.firewalls.get": f"{base}/global/firewalls/fw",
        "compute.globalOperations.list": f"{base}/global/operations",
        "compute.regionOperations.list": f"{base}/regions/{REGION}/operations",
    }
    problems = get_problems(gets)
    status, op = http("PATCH", f"{base}/global/firewalls/fw", {"sourceRanges": ["10.0.0.0/8"]})
    problems += schema_problems(op, METHODS["compute.firewalls.patch"]["response"])
    status, op = http("DELETE", f"{base}/global/firewalls/fw")
    problems += schema_problems(op, METHODS["compute.firewalls.delete"]["response"])
    assert problems == []
    assert {r.method_id for r in compute_networks.ROUTES} <= set(METHODS)


# -- IAM and Resource Manager ---------------------------------------------------------------------

def test_service_accounts_over_rest(emu):
    accounts = f"{emu.url}/v1/projects/{PROJECT}/serviceAccounts"
    status, made = http("POST", accounts, {"accountId": "gcpgpu-demo", "serviceAccount": {"description": "d"}})
    assert status == 200 and made["email"] == f"gcpgpu-demo@{PROJECT}.iam.gserviceaccount.com"
    assert set(made) >= {"name", "projectId", "uniqueId", "email", "displayName", "etag", "description",
                         "oauth2ClientId"}
    assert http("POST", accounts, {"accountId": "gcpgpu-demo"})[1]["error"]["status"] == "ALREADY_EXISTS"
    assert http("POST", accounts, {"accountId": "abc"})[0] == 400  # 6-30 characters
    assert http("GET", f"{accounts}/{made['email']}")[1] == made
    assert http("GET", accounts)[1] == {"accounts": [made]}
    assert http("DELETE", f"{accounts}/{made['email']}") == (200, {})
    assert http("GET", f"{accounts}/{made['email']}")[0] == 404
    assert http("GET", accounts)[1] == {}


def test_project_policy_read_modify_write_through_the_rest_client(emu, net):
    http("POST", f"{emu.url}/v1/projects/{PROJECT}/serviceAccounts", {"accountId": "gcpgpu-demo"})
    member = f"serviceAccount:gcpgpu-demo@{PROJECT}.iam.gserviceaccount.com"
    policy = net.projects.get_iam_policy(request={"resource": f"projects/{PROJECT}"})
    policy.bindings.add(role="roles/logging.logWriter", members=[member])
    written = net.projects.set_iam_policy(request={"resource": f"projects/{PROJECT}", "policy": policy})
    assert written.etag != policy.etag
    with pytest.raises(exceptions.Conflict, match="concurrent policy changes"):  # stale etag
        net.projects.set_iam_policy(request={"resource": f"projects/{PROJECT}", "policy": policy})
    stranger = net.projects.get_iam_policy(request={"resource": f"projects/{PROJECT}"})
    stranger.bindings.add(role="roles/viewer", members=[f"serviceAccount:nobody@{PROJECT}.iam.gserviceaccount.com"])
    with pytest.raises(exceptions.BadRequest, match="does not exist"):
        net.projects.set_iam_policy(request={"resource": f"projects/{PROJECT}", "policy": stranger})
    http("DELETE", f"{emu.url}/v1/projects/{PROJECT}/serviceAccounts/gcpgpu-demo@{PROJECT}.iam.gserviceaccount.com")
    after = net.projects.get_iam_policy(request={"resource": f"projects/{PROJECT}"})
    [writer] = [b for b in after.bindings if b.role == "roles/logging.logWriter"]
    assert writer.members[0].startswith(f"deleted:{member}?uid=")
    calls = [c.method_id for c in emu.calls if c.method_id.startswith("cloudresourcemanager")]
    assert "cloudresourcemanager.projects.setIamPolicy" in calls
