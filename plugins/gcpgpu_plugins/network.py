"""The `network` plugin: the cluster's own VPCs, subnets and firewall rules (the env-var tool's
NETWORK_CONFIG default | new | multi_nic).

* ``default``: nothing is created; every VM gets one NIC on the project's ``default`` network
  (whose own firewall rules apply), as before.
* ``new``: one VPC ``{cluster}-net-0`` with a subnet per region the cluster may use (its zone and
  fallback zones), a rule letting the cluster's nodes reach each other on every port, and a rule
  letting SSH in from the IAP range (or the addresses listed in ``ssh_source_ranges``).
* ``multi_nic``: ``nics`` VPCs (default 5) ``{cluster}-net-0..N-1``, each with its subnets and
  internal rule; every VM gets one NIC per VPC (the first one carries the external address and
  SSH), as GPUDirect-style multi-NIC machines want.

Rules target the cluster's service account (``gcp.service_account_email``): only VMs running as
it are reached, and only they count as sources. Compute networks, subnets and firewalls carry no
labels; they are found by name and marked ``gcpgpu-cluster=<name>`` in their description.
"""
from __future__ import annotations

import ipaddress
import zlib

from gcpgpu.errors import GcpgpuError, Problem
from gcpgpu.plugins import hookimpl
from gcpgpu.provider import Context, Resource
from gcpgpu_plugins.gcp import (
    CLUSTER_LABEL, digest, region_of, retry_policy, service_account_email, short_name,
    wait_global_operation, wait_region_operation,
)

MODES = ("default", "new", "multi_nic")
IAP_RANGE = "35.235.240.0/20"  # Identity-Aware Proxy's TCP forwarding addresses
DEFAULT_MULTI_NICS = 5
MAX_NICS = 10  # A3 Mega machines have 9 NICs; GCE checks the per-machine-type limit itself
SLOTS = 256  # /20 subnets in a network's /12
MTU = 8896  # the largest GCE allows: GPU-to-GPU traffic across nodes wants jumbo frames
OPERATION_DEADLINE_S = 900
UNSAFE_OVERRIDE = "unsafe_ssh_from_anywhere"
STAGES = {"network": 10, "subnetwork": 11, "firewall": 25}  # firewalls target the account (stage 20)

SCHEMA = {
    "network": {
        "title": "Network",
        "description": "Where the VMs' NICs go: `default` (the project's default network), `new` "
                       "(a VPC of the cluster's own with an internal-only rule and SSH from IAP) or "
                       "`multi_nic` (several such VPCs, one NIC on each). The string is short for "
                       "`{mode: ...}`; the object form takes the other settings.",
        "default": "default",
        "anyOf": [
            {"type": "string", "enum": list(MODES)},
            {"type": "object", "additionalProperties": False, "properties": {
                "mode": {"type": "string", "enum": list(MODES), "default": "new",
                         "description": "default | new | multi_nic (the env-var tool's NETWORK_CONFIG)."},
                "nics": {"type": "integer", "minimum": 1, "maximum": MAX_NICS,
                         "description": f"multi_nic: VPCs to create and NICs per VM "
                                        f"(default {DEFAULT_MULTI_NICS}; `new` has 1)."},
                "ssh_source_ranges": {
                    "type": "array", "items": {"type": "string"}, "minItems": 1, "default": [IAP_RANGE],
                    "description": "Addresses (CIDR) SSH is allowed from. The default is Google's IAP "
                                   "range: reach the nodes with ssh.proxy_command set to an IAP tunnel, "
                                   "or add your own address, e.g. 203.0.113.7/32."},
                UNSAFE_OVERRIDE: {
                    "type": "boolean", "default": False,
                    "description": "Open SSH to the whole internet (0.0.0.0/0). Never needed with IAP; "
                                   "exists so that doing it takes a deliberate, visible line."},
            }},
        ],
    },
}


def settings(spec: dict) -> dict:
    """The network settings with every default filled, whichever form the spec used."""
    raw = spec.get("network", "default")
    raw = {"mode": raw} if isinstance(raw, str) else dict(raw)
    mode = raw.get("mode", "new")
    nics = raw.get("nics") or (DEFAULT_MULTI_NICS if mode == "multi_nic" else 1)
    ranges = ["0.0.0.0/0"] if raw.get(UNSAFE_OVERRIDE) else list(raw.get("ssh_source_ranges") or [IAP_RANGE])
    return {"mode": mode, "nics": nics if mode == "multi_nic" else 1, "ssh_source_ranges": ranges}


def cluster_tag(cluster: str) -> str:
    """The network tag every VM of the cluster carries: your own firewall rules can target it
    (e.g. to open a dashboard port to your address). gcpgpu's own rules target the account."""
    return f"gcpgpu-{cluster}"


def network_name(cluster: str, index: int) -> str:
    return f"{cluster}-net-{index}"


def subnet_name(cluster: str, index: int, region: str) -> str:
    return f"{network_name(cluster, index)}-{region}"


def regions(spec: dict) -> list[str]:
    """Every region the cluster may create VMs in: its zone's, then its fallback zones'."""
    found: list[str] = []
    for zone in [spec["zone"], *spec.get("fallback_zones", [])]:
        if region_of(zone) not in found:
            found.append(region_of(zone))
    return found


def region_slots(used: list[str]) -> dict[str, int]:
    """A slot 0-255 per region, from the region's name rather than its place in the spec, so
    reordering or adding fallback zones never moves an existing subnet's range."""
    slots: dict[str, int] = {}
    for region in sorted(used):
        slot = zlib.crc32(region.encode()) % SLOTS
        while slot in slots.values():
            slot = (slot + 1) % SLOTS
        slots[region] = slot
    return slots


def subnet_range(index: int, slot: int) -> str:
    """A /20 (4,094 nodes) per network and region: network i owns 10.(16 i).0.0/12."""
    base = int(ipaddress.ip_address("10.0.0.0")) + (index * SLOTS + slot) * 4096
    return f"{ipaddress.ip_address(base)}/20"


def interfaces(spec: dict, zone: str) -> list[dict]:
    """The NICs of a VM in ``zone``: network and subnetwork paths, the first one with an external
    address. Used by the compute provider (and anything else that builds instance bodies)."""
    net = settings(spec)
    if net["mode"] == "default":
        return [{"network": "global/networks/default", "external": True}]
    cluster, project, region = spec["name"], spec["project"], region_of(zone)
    return [{"network": f"projects/{project}/global/networks/{network_name(cluster, i)}",
             "subnetwork": f"projects/{project}/regions/{region}/subnetworks/{subnet_name(cluster, i, region)}",
             "external": i == 0,
             # gVNIC: required by A3 machines, and what multi-NIC GPU machines are built for.
             **({"nic_type": "GVNIC"} if net["mode"] == "multi_nic" else {})}
            for i in range(net["nics"])]


def instance_settings(spec: dict) -> dict:
    """What about the network forces new VMs when it changes (empty for `default`, so clusters
    made before this plugin keep their VMs)."""
    net = settings(spec)
    return {} if net["mode"] == "default" else {"network": {"mode": net["mode"], "nics": net["nics"]}}


# -- validation -----------------------------------------------------------------------------------

def validate(spec: dict) -> list[Problem]:
    raw = spec.get("network")
    if not isinstance(raw, (str, dict)) or (isinstance(raw, str) and raw not in MODES):
        return []  # the schema reports it
    if isinstance(raw, dict) and not isinstance(raw.get("mode", "new"), str):
        return []
    problems: list[Problem] = []
    mode = raw if isinstance(raw, str) else raw.get("mode", "new")
    if isinstance(raw, dict):
        problems += _ranges(raw)
        if raw.get("nics") is not None and mode != "multi_nic":
            problems.append(Problem("network.nics", f"only multi_nic takes nics (mode is {mode})",
                                    "set `mode: multi_nic`, or remove nics"))
        if mode == "default" and (raw.get("ssh_source_ranges") or raw.get(UNSAFE_OVERRIDE)):
            problems.append(Problem("network", "mode default creates no firewall rule, so SSH "
                                    "settings would do nothing", "use `mode: new`, or remove them"))
    name = spec.get("name")
    if mode != "default" and isinstance(name, str) and isinstance(spec.get("zone"), str):
        try:
            last = settings(spec)["nics"] - 1
            longest = max((subnet_name(name, last, r) for r in regions(spec)), key=len)
        except (TypeError, AttributeError, ValueError):
            return problems  # fallback_zones of the wrong shape: the schema reports it
        if len(longest) > 63:
            problems.append(Problem("name", f"subnet names like '{longest}' exceed 63 characters",
                                    f"shorten the cluster name by {len(longest) - 63} characters"))
    return problems


def _ranges(raw: dict) -> list[Problem]:
    problems: list[Problem] = []
    ranges = raw.get("ssh_source_ranges")
    if not isinstance(ranges, list):
        return problems
    for i, text in enumerate(ranges):
        if not isinstance(text, str):
            continue
        path = f"network.ssh_source_ranges[{i}]"
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            problems.append(Problem(path, f"'{text}' is not an address range",
                                    "write CIDR, e.g. 203.0.113.7/32"))
            continue
        if network.prefixlen == 0:
            problems.append(Problem(path, f"'{text}' opens SSH to the whole internet",
                                    f"use the IAP range {IAP_RANGE} with an IAP ssh.proxy_command, or "
                                    f"your own address; if you really mean it, set "
                                    f"network.{UNSAFE_OVERRIDE}: true instead"))
        elif str(network) != text and text != str(network.network_address):
            problems.append(Problem(path, f"'{text}' has host bits set", f"did you mean '{network}'?"))
    return problems


# -- the provider ---------------------------------------------------------------------------------

def marker(cluster: str) -> str:
    return f"{CLUSTER_LABEL}={cluster}"


def is_ours(description: str, cluster: str) -> bool:
    return (description or "").split(" ", 1)[0] == marker(cluster)


def _description(cluster: str) -> str:
    return f"{marker(cluster)} (made by gcpgpu for cluster {cluster}; `gcpgpu down` deletes it)"


def _network_fields(body: dict) -> dict:
    return {"autoCreateSubnetworks": bool(body.get("autoCreateSubnetworks")), "mtu": int(body.get("mtu") or 1460),
            "routingMode": (body.get("routingConfig") or {}).get("routingMode", "REGIONAL")}


def _subnet_fields(body: dict) -> dict:
    return {"network": short_name(body.get("network", "")), "ipCidrRange": body.get("ipCidrRange"),
            "region": short_name(body.get("region", "")),
            "privateIpGoogleAccess": bool(body.get("privateIpGoogleAccess"))}


def _firewall_fields(body: dict) -> dict:
    allowed = sorted((a.get("IPProtocol", ""), tuple(a.get("ports", []))) for a in body.get("allowed", []))
    return {"network": short_name(body.get("network", "")), "direction": body.get("direction", "INGRESS"),
            "allowed": [list(a) for a in allowed], "priority": int(body.get("priority", 1000)),
            "sourceServiceAccounts": sorted(body.get("sourceServiceAccounts", [])),
            "targetServiceAccounts": sorted(body.get("targetServiceAccounts", []))}


def _firewall_update(body: dict) -> str:
    return digest(sorted(body.get("sourceRanges", [])))


FIELDS = {"network": _network_fields, "subnetwork": _subnet_fields, "firewall": _firewall_fields}


def desired_bodies(spec: dict) -> list[tuple[str, str, dict]]:
    """(kind, location, REST body) of every network resource the spec asks for."""
    net = settings(spec)
    if net["mode"] == "default":
        return []
    cluster, project = spec["name"], spec["project"]
    account = service_account_email(spec)
    description = _description(cluster)
    found = []
    for i in range(net["nics"]):
        name = network_name(cluster, i)
        link = f"projects/{project}/global/networks/{name}"
        found.append(("network", "global", {
            "name": name, "description": description, "autoCreateSubnetworks": False, "mtu": MTU,
            "routingConfig": {"routingMode": "REGIONAL"}}))
        for region, slot in region_slots(regions(spec)).items():
            found.append(("subnetwork", region, {
                "name": subnet_name(cluster, i, region), "description": description, "network": link,
                "region": region, "ipCidrRange": subnet_range(i, slot), "privateIpGoogleAccess": True}))
        found.append(("firewall", "global", {
            "name": f"{name}-internal", "description": description, "network": link,
            "direction": "INGRESS", "priority": 1000, "allowed": [{"IPProtocol": "all"}],
            "sourceServiceAccounts": [account], "targetServiceAccounts": [account]}))
    found.append(("firewall", "global", {
        "name": f"{network_name(cluster, 0)}-ssh", "description": description,
        "network": f"projects/{project}/global/networks/{network_name(cluster, 0)}",
        "direction": "INGRESS", "priority": 1000, "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}],
        "sourceRanges": net["ssh_source_ranges"], "targetServiceAccounts": [account]}))
    return found


def _resource(provider: str, kind: str, location: str, body: dict, **extra) -> Resource:
    return Resource(provider=provider, kind=kind, name=body["name"], group="", location=location,
                    digest=digest(FIELDS[kind](body)),
                    update_digest=_firewall_update(body) if kind == "firewall" else "",
                    body=body, stage=STAGES[kind], **extra)


def _clients(kind: str):
    from google.cloud import compute_v1

    return {"network": compute_v1.NetworksClient, "subnetwork": compute_v1.SubnetworksClient,
            "firewall": compute_v1.FirewallsClient}[kind]


class NetworkProvider:
    name = "network"

    def desired(self, spec: dict, group_name: str, group: dict) -> list[Resource]:
        return []  # no node group is made of networks

    def cluster_resources(self, spec: dict) -> list[Resource]:
        return [_resource(self.name, kind, location, body) for kind, location, body in desired_bodies(spec)]

    def observe(self, ctx: Context) -> list[Resource]:
        from google.cloud import compute_v1

        names = f"name eq '{ctx.cluster}-net-[0-9]+.*'"  # cluster names are [a-z0-9-]
        found = []
        for kind, client_class, request_class in (
                ("network", compute_v1.NetworksClient, compute_v1.ListNetworksRequest),
                ("firewall", compute_v1.FirewallsClient, compute_v1.ListFirewallsRequest)):
            client = ctx.clients.get(client_class)
            request = request_class(project=ctx.project, filter=names)
            for item in client.list(request=request, retry=retry_policy()):
                found.append(self._live(ctx, kind, "global", item))
        subnets = ctx.clients.get(compute_v1.SubnetworksClient)
        request = compute_v1.AggregatedListSubnetworksRequest(project=ctx.project, filter=names)
        for scope, listed in subnets.aggregated_list(request=request, retry=retry_policy()):
            for item in listed.subnetworks:
                found.append(self._live(ctx, "subnetwork", short_name(scope), item))
        return [r for r in found if r is not None]

    def _live(self, ctx: Context, kind: str, location: str, item) -> Resource | None:
        body = type(item).to_dict(item, preserving_proto_field_name=False)
        if not is_ours(body.get("description", ""), ctx.cluster):
            return None
        return _resource(self.name, kind, location, body, status="READY")

    # -- changes ------------------------------------------------------------------------------

    def create(self, ctx: Context, resources: list[Resource]) -> None:
        for resource in resources:
            self._insert(ctx, resource)
            ctx.progress(1)

    def _insert(self, ctx: Context, resource: Resource) -> None:
        from google.api_core import exceptions

        from google.cloud import compute_v1

        client = ctx.clients.get(_clients(resource.kind))
        request_class = {"network": compute_v1.InsertNetworkRequest,
                         "subnetwork": compute_v1.InsertSubnetworkRequest,
                         "firewall": compute_v1.InsertFirewallRequest}[resource.kind]
        scope = {"region": resource.location} if resource.kind == "subnetwork" else {}
        request = request_class(project=ctx.project, **scope, **{f"{resource.kind}_resource": _message(resource)},
                                **({"request_id": resource.request_id} if resource.request_id else {}))
        try:
            operation = client.insert(request=request, retry=retry_policy())
        except exceptions.Conflict:
            self._adopt(ctx, resource)
            return
        wait_operation(ctx, operation.name, resource.location)

    def _adopt(self, ctx: Context, resource: Resource) -> None:
        """A same-named resource exists: fine if it is ours (made by a run that was killed)."""
        client = ctx.clients.get(_clients(resource.kind))
        scope = {"region": resource.location} if resource.kind == "subnetwork" else {}
        existing = client.get(project=ctx.project, retry=retry_policy(), **scope, **{resource.kind: resource.name})
        if not is_ours(existing.description, ctx.cluster):
            raise GcpgpuError(f"{resource.kind} {resource.name} exists but is not marked "
                              f"{marker(ctx.cluster)} in its description; delete or rename it, or "
                              f"rename the cluster")

    def update(self, ctx: Context, resources: list[Resource]) -> None:
        """Only firewall source ranges change in place: patch sends just them."""
        from google.cloud import compute_v1

        client = ctx.clients.get(_clients("firewall"))
        for resource in resources:
            ranges = compute_v1.Firewall(source_ranges=resource.body["sourceRanges"])
            operation = client.patch(project=ctx.project, firewall=resource.name, retry=retry_policy(),
                                     firewall_resource=ranges)
            wait_operation(ctx, operation.name, "global")
            ctx.progress(1)

    def delete(self, ctx: Context, resources: list[Resource]) -> None:
        from google.api_core import exceptions

        for resource in resources:
            client = ctx.clients.get(_clients(resource.kind))
            scope = {"region": resource.location} if resource.kind == "subnetwork" else {}
            try:
                operation = client.delete(project=ctx.project, retry=retry_policy(), **scope,
                                          **{resource.kind: resource.name})
                wait_operation(ctx, operation.name, resource.location)
            except exceptions.NotFound:
                pass  # already gone: the goal of a delete
            ctx.progress(1)


def _message(resource: Resource):
    from google.cloud import compute_v1

    message = {"network": compute_v1.Network, "subnetwork": compute_v1.Subnetwork,
               "firewall": compute_v1.Firewall}[resource.kind]
    return message.from_json(_json(resource.body), ignore_unknown_fields=True)


def _json(body: dict) -> str:
    import json

    return json.dumps(body)


def wait_operation(ctx: Context, name: str, location: str):
    """Wait on a global or regional operation through the factory's own operations clients
    (never ExtendedOperation.result(), which ignores the endpoint)."""
    if location == "global":
        return wait_global_operation(ctx.clients, ctx.project, name, OPERATION_DEADLINE_S)
    return wait_region_operation(ctx.clients, ctx.project, location, name, OPERATION_DEADLINE_S)


@hookimpl
def gcpgpu_schema():
    return {"cluster": {"properties": SCHEMA}}


@hookimpl
def gcpgpu_validate(spec):
    return validate(spec)


@hookimpl
def gcpgpu_register_providers(register):
    register(NetworkProvider())
