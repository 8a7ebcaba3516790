"""Compute Engine networks, subnetworks and firewalls, as an emulator service.

Paths and JSON follow the Compute v1 discovery document (``compute.networks.*``,
``compute.subnetworks.*``, ``compute.firewalls.*``); mutations return operations registered in
``ComputeState`` (global for networks and firewalls, regional for subnetworks), so the existing
``globalOperations`` / ``regionOperations`` routes wait on them and ``requestId`` replays work.

Modelled because callers depend on it:
* a resource appears when its insert is accepted and disappears when its delete is DONE;
* a network in use (by a subnetwork, a firewall or an instance's NIC) or a subnetwork in use (by
  an instance) cannot be deleted: HTTP 400 ``resourceInUseByAnotherResource``;
* a subnetwork's range must be a valid private CIDR not overlapping another of its network;
* an INGRESS firewall with no source gets ``sourceRanges: [0.0.0.0/0]``, as GCE does; tags and
  service accounts cannot be mixed in one rule;
* ``firewalls.patch`` changes the fields it is sent.
Not modelled: auto-mode subnet creation (auto-mode networks are stored without subnets), peering,
routes, and firewall enforcement (test nodes are reachable regardless).
"""
from __future__ import annotations

import copy
import ipaddress

from . import catalog
from .errors import ApiError, already_exists, bad_request, invalid, not_found
from .instance_body import check_name
from .records import GLOBAL, ApiRequest
from .resources import fingerprint, new_id, parse_reference, rfc3339
from .routes import API_PREFIX, Route

PROTOCOLS = {"tcp", "udp", "icmp", "esp", "ah", "sctp", "ipip", "all"}
PORTED = {"tcp", "udp", "sctp"}


def _routes() -> list[Route]:
    p = "projects/{project}"
    network, firewall = f"{p}/global/networks/{{network}}", f"{p}/global/firewalls/{{firewall}}"
    subnetworks = f"{p}/regions/{{region}}/subnetworks"
    return [
        Route("compute.networks.list", "GET", f"{p}/global/networks", "networks_list"),
        Route("compute.networks.get", "GET", network, "networks_get"),
        Route("compute.networks.insert", "POST", f"{p}/global/networks", "networks_insert", mutating=True),
        Route("compute.networks.delete", "DELETE", network, "networks_delete", mutating=True),
        Route("compute.subnetworks.list", "GET", subnetworks, "subnetworks_list"),
        Route("compute.subnetworks.aggregatedList", "GET", f"{p}/aggregated/subnetworks",
              "subnetworks_aggregated_list"),
        Route("compute.subnetworks.get", "GET", f"{subnetworks}/{{subnetwork}}", "subnetworks_get"),
        Route("compute.subnetworks.insert", "POST", subnetworks, "subnetworks_insert", mutating=True),
        Route("compute.subnetworks.delete", "DELETE", f"{subnetworks}/{{subnetwork}}", "subnetworks_delete",
              mutating=True),
        Route("compute.firewalls.list", "GET", f"{p}/global/firewalls", "firewalls_list"),
        Route("compute.firewalls.get", "GET", firewall, "firewalls_get"),
        Route("compute.firewalls.insert", "POST", f"{p}/global/firewalls", "firewalls_insert", mutating=True),
        Route("compute.firewalls.patch", "PATCH", firewall, "firewalls_patch", mutating=True),
        Route("compute.firewalls.delete", "DELETE", firewall, "firewalls_delete", mutating=True),
    ]


ROUTES: list[Route] = _routes()


def match(http_method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    if not path.startswith(API_PREFIX):
        return None
    relative = path[len(API_PREFIX):]
    for route in ROUTES:
        found = route.http_method == http_method and route.pattern.match(relative)
        if found:
            return route, found.groupdict()
    return None


def in_use(resource_path: str, user: str) -> ApiError:
    return ApiError(400, "resourceInUseByAnotherResource",
                    f"The {resource_path.split('/')[-2][:-1]} resource '{resource_path}' is already "
                    f"being used by '{user}'")


class ComputeNetworks:
    """The service: state keyed by (project, name) or (project, region, name)."""

    def __init__(self, emulator):
        self.state = emulator.state  # shares its lock, operations, latency and instances
        self.networks: dict[tuple[str, str], dict] = {}
        self.subnetworks: dict[tuple[str, str, str], dict] = {}
        self.firewalls: dict[tuple[str, str], dict] = {}

    def advance(self) -> None:
        pass  # the operations live in ComputeState, whose advance fires their effects

    def serve(self, http_method: str, path: str, query: dict, body: dict, base_url: str):
        from .server import Call

        routed = match(http_method, path)
        if routed is None:
            return None
        route, params = routed
        request = ApiRequest(route.method_id, params["project"], params, query, body, base_url)
        try:
            status, payload = 200, self._handle(route, request)
        except ApiError as error:
            status, payload = error.http_status, error.body()
        return status, payload, Call(route.method_id, http_method, path, None, route.mutating, status)

    def _handle(self, route: Route, request: ApiRequest) -> dict:
        with self.state.lock:
            self.state.advance()
            self.state._check_project(request)
            if route.mutating and request.request_id:
                replay = self.state._replay_request_id(request)
                if replay is not None:
                    return replay
            return getattr(self, route.handler)(request)

    # ------------------------------------------------------------------------ helpers

    def _operation(self, request: ApiRequest, scope: str, kind: str, resource: dict, on_done=None) -> dict:
        op = self.state._register_operation(request.project, scope, kind, request.base_url,
                                            target_link=resource["selfLink"], target_id=resource["id"])
        if on_done:
            op.on_done.append(on_done)
        if request.request_id:
            self.state.operations_by_request_id[(request.project, request.request_id)] = op
        return op.to_json()

    def _network(self, request: ApiRequest, reference: str, field: str) -> dict:
        parts = parse_reference(reference)
        project = parts.get("projects", request.project)
        found = self.networks.get((project, parts["name"]))
        if found is None:
            if not reference:
                raise invalid(f"Required field '{field}' not specified")
            raise not_found(f"projects/{project}/global/networks/{parts['name']}")
        return found

    def _get(self, table: dict, key: tuple, path: str) -> dict:
        if key not in table:
            raise not_found(path)
        return copy.deepcopy(table[key])

    def _list(self, request: ApiRequest, kind: str, path: str, table: dict, region: str | None = None) -> dict:
        items = [copy.deepcopy(item) for key, item in sorted(table.items())
                 if key[0] == request.project and region in (None, key[1])]
        return self.state._list_response(request, kind, path, items)

    # ----------------------------------------------------------------------- networks

    def networks_list(self, request: ApiRequest) -> dict:
        return self._list(request, "compute#networkList", "global/networks", self.networks)

    def networks_get(self, request: ApiRequest) -> dict:
        name = request.params["network"]
        return self._get(self.networks, (request.project, name), f"projects/{request.project}/global/networks/{name}")

    def networks_insert(self, request: ApiRequest) -> dict:
        body = request.body
        name = body.get("name", "")
        check_name(name, "resource.name")
        if (request.project, name) in self.networks:
            raise already_exists(f"projects/{request.project}/global/networks/{name}")
        mtu = int(body.get("mtu") or 1460)
        if not 1300 <= mtu <= 8896:
            raise invalid(f"Invalid value for field 'resource.mtu': '{mtu}'. Must be between 1300 and 8896.")
        routing = (body.get("routingConfig") or {}).get("routingMode", "REGIONAL")
        if routing not in ("REGIONAL", "GLOBAL"):
            raise invalid(f"Invalid value for field 'resource.routingConfig.routingMode': '{routing}'.")
        links = request.links
        network = {
            "kind": "compute#network", "id": new_id(), "creationTimestamp": rfc3339(), "name": name,
            "description": body.get("description", ""), "selfLink": links.network(name),
            "autoCreateSubnetworks": bool(body.get("autoCreateSubnetworks", False)), "mtu": mtu,
            "routingConfig": {"routingMode": routing},
            "networkFirewallPolicyEnforcementOrder": "AFTER_CLASSIC_FIREWALL",
        }
        self.networks[(request.project, name)] = network
        return self._operation(request, GLOBAL, "insert", network)

    def networks_delete(self, request: ApiRequest) -> dict:
        name = request.params["network"]
        path = f"projects/{request.project}/global/networks/{name}"
        network = self._get(self.networks, (request.project, name), path)
        link = network["selfLink"]
        users = [s["selfLink"] for s in self.subnetworks.values() if s["network"] == link]
        users += [f["selfLink"] for f in self.firewalls.values() if f["network"] == link]
        users += [i.resource["selfLink"] for i in self.state.instances.values()
                  if any(nic["network"] == link for nic in i.resource["networkInterfaces"])]
        if users:
            raise in_use(path, users[0].split("/compute/v1/")[-1])
        key = (request.project, name)
        return self._operation(request, GLOBAL, "delete", network, lambda: self.networks.pop(key, None))

    # -------------------------------------------------------------------- subnetworks

    def subnetworks_list(self, request: ApiRequest) -> dict:
        region = request.region
        return self._list(request, "compute#subnetworkList", f"regions/{region}/subnetworks",
                          self.subnetworks, region)

    def subnetworks_aggregated_list(self, request: ApiRequest) -> dict:
        from .filters import compile_filter

        matches = compile_filter(request.query.get("filter"))
        items = {}
        for region in catalog.REGION_DESCRIPTIONS:
            found = [copy.deepcopy(s) for (project, r, _), s in sorted(self.subnetworks.items())
                     if project == request.project and r == region and matches(s)]
            scope = f"regions/{region}"
            items[scope] = {"subnetworks": found} if found else {"warning": {
                "code": "NO_RESULTS_ON_PAGE", "message": f"There are no results for scope '{scope}' on this page.",
                "data": [{"key": "scope", "value": scope}]}}
        body = {"kind": "compute#subnetworkAggregatedList",
                "id": f"projects/{request.project}/aggregated/subnetworks", "items": items,
                "selfLink": f"{request.links.project_path()}/aggregated/subnetworks"}
        if request.query.get("returnPartialSuccess", "").lower() == "true":
            body["unreachables"] = []
        return body

    def subnetworks_get(self, request: ApiRequest) -> dict:
        region, name = request.region, request.params["subnetwork"]
        return self._get(self.subnetworks, (request.project, region, name),
                         f"projects/{request.project}/regions/{region}/subnetworks/{name}")

    def subnetworks_insert(self, request: ApiRequest) -> dict:
        region, body = request.region, request.body
        name = body.get("name", "")
        check_name(name, "resource.name")
        if (request.project, region, name) in self.subnetworks:
            raise already_exists(f"projects/{request.project}/regions/{region}/subnetworks/{name}")
        network = self._network(request, body.get("network", ""), "resource.network")
        cidr = self._cidr(body.get("ipCidrRange", ""), network["selfLink"])
        links = request.links
        subnet = {
            "kind": "compute#subnetwork", "id": new_id(), "creationTimestamp": rfc3339(), "name": name,
            "description": body.get("description", ""), "network": network["selfLink"],
            "ipCidrRange": str(cidr), "gatewayAddress": str(cidr.network_address + 1),
            "region": links.region(region), "selfLink": links.subnetwork(region, name),
            "privateIpGoogleAccess": bool(body.get("privateIpGoogleAccess", False)),
            "fingerprint": fingerprint([name, region]), "stackType": body.get("stackType", "IPV4_ONLY"),
            "purpose": body.get("purpose", "PRIVATE"),
        }
        self.subnetworks[(request.project, region, name)] = subnet
        network.setdefault("subnetworks", []).append(subnet["selfLink"])
        return self._operation(request, f"regions/{region}", "insert", subnet)

    def _cidr(self, text: str, network_link: str):
        field = "resource.ipCidrRange"
        try:
            cidr = ipaddress.ip_network(text, strict=True)
        except ValueError:
            raise invalid(f"Invalid value for field '{field}': '{text}'. Invalid IPCidrRange.") from None
        if cidr.version != 4 or not cidr.is_private or cidr.prefixlen > 29:
            raise invalid(f"Invalid value for field '{field}': '{text}'. Must be a private IPv4 range "
                          "of prefix length at most 29.")
        for other in self.subnetworks.values():
            if other["network"] == network_link and cidr.overlaps(ipaddress.ip_network(other["ipCidrRange"])):
                raise invalid(f"Invalid IPCidrRange: {text} conflicts with existing subnetwork "
                              f"'{other['name']}' in region '{other['region'].rsplit('/', 1)[-1]}'.")
        return cidr

    def subnetworks_delete(self, request: ApiRequest) -> dict:
        region, name = request.region, request.params["subnetwork"]
        path = f"projects/{request.project}/regions/{region}/subnetworks/{name}"
        subnet = self._get(self.subnetworks, (request.project, region, name), path)
        users = [i.resource["selfLink"] for i in self.state.instances.values()
                 if any(nic.get("subnetwork") == subnet["selfLink"] for nic in i.resource["networkInterfaces"])]
        if users:
            raise in_use(path, users[0].split("/compute/v1/")[-1])

        def remove():
            self.subnetworks.pop((request.project, region, name), None)
            network = self.networks.get((request.project, parse_reference(subnet["network"])["name"]))
            if network and subnet["selfLink"] in network.get("subnetworks", []):
                network["subnetworks"].remove(subnet["selfLink"])
                if not network["subnetworks"]:
                    del network["subnetworks"]
        return self._operation(request, f"regions/{region}", "delete", subnet, remove)

    # ---------------------------------------------------------------------- firewalls

    def firewalls_list(self, request: ApiRequest) -> dict:
        return self._list(request, "compute#firewallList", "global/firewalls", self.firewalls)

    def firewalls_get(self, request: ApiRequest) -> dict:
        name = request.params["firewall"]
        return self._get(self.firewalls, (request.project, name), f"projects/{request.project}/global/firewalls/{name}")

    def firewalls_insert(self, request: ApiRequest) -> dict:
        body = request.body
        name = body.get("name", "")
        check_name(name, "resource.name")
        if (request.project, name) in self.firewalls:
            raise already_exists(f"projects/{request.project}/global/firewalls/{name}")
        network = self._network(request, body.get("network") or "global/networks/default", "resource.network")
        firewall = {"kind": "compute#firewall", "id": new_id(), "creationTimestamp": rfc3339(), "name": name,
                    "network": network["selfLink"], "selfLink": f"{request.links.project_path()}/global/firewalls/{name}"}
        firewall.update(_firewall_fields(body, {}))
        self.firewalls[(request.project, name)] = firewall
        return self._operation(request, GLOBAL, "insert", firewall)

    def firewalls_patch(self, request: ApiRequest) -> dict:
        name = request.params["firewall"]
        key = (request.project, name)
        current = self._get(self.firewalls, key, f"projects/{request.project}/global/firewalls/{name}")
        if request.body.get("network") and parse_reference(request.body["network"])["name"] != \
                parse_reference(current["network"])["name"]:
            raise bad_request("Invalid value for field 'resource.network': the network of a firewall "
                              "cannot be changed.")
        self.firewalls[key].update(_firewall_fields(request.body, current))
        return self._operation(request, GLOBAL, "patch", self.firewalls[key])

    def firewalls_delete(self, request: ApiRequest) -> dict:
        name = request.params["firewall"]
        key = (request.project, name)
        firewall = self._get(self.firewalls, key, f"projects/{request.project}/global/firewalls/{name}")
        return self._operation(request, GLOBAL, "delete", firewall, lambda: self.firewalls.pop(key, None))


def _firewall_fields(body: dict, current: dict) -> dict:
    """The rule's settings from ``body`` over ``current`` (empty for an insert), checked."""
    merged = {**current, **{k: v for k, v in body.items() if k not in ("name", "network", "id", "selfLink")}}
    direction = merged.get("direction", "INGRESS")
    if direction not in ("INGRESS", "EGRESS"):
        raise invalid(f"Invalid value for field 'resource.direction': '{direction}'.")
    allowed, denied = merged.get("allowed") or [], merged.get("denied") or []
    if bool(allowed) == bool(denied):
        raise invalid("Invalid value for field 'resource': exactly one of 'allowed' or 'denied' must be set.")
    for rule in allowed + denied:
        protocol = str(rule.get("IPProtocol", "")).lower()
        if protocol not in PROTOCOLS and not protocol.isdigit():
            raise invalid(f"Invalid value for field 'resource.allowed[].IPProtocol': '{protocol}'.")
        if rule.get("ports") and protocol not in PORTED:
            raise invalid(f"Invalid value for field 'resource.allowed[].ports': ports need tcp, udp or sctp, "
                          f"not '{protocol}'.")
    tags = merged.get("sourceTags") or merged.get("targetTags")
    accounts = merged.get("sourceServiceAccounts") or merged.get("targetServiceAccounts")
    if tags and accounts:
        raise bad_request("Invalid value for field 'resource': service accounts and tags cannot be "
                          "used together in one firewall rule.")
    for cidr in (merged.get("sourceRanges") or []) + (merged.get("destinationRanges") or []):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise invalid(f"Invalid value for field 'resource.sourceRanges': '{cidr}'. Invalid IPCidrRange.") from None
    fields = {"description": merged.get("description", ""), "priority": int(merged.get("priority", 1000)),
              "direction": direction, "disabled": bool(merged.get("disabled", False)),
              "logConfig": {"enable": bool((merged.get("logConfig") or {}).get("enable", False))}}
    if allowed:
        fields["allowed"] = allowed
    if denied:
        fields["denied"] = denied
    for key in ("sourceRanges", "destinationRanges", "sourceTags", "targetTags",
                "sourceServiceAccounts", "targetServiceAccounts"):
        if merged.get(key):
            fields[key] = list(merged[key])
    has_source = any(fields.get(k) for k in ("sourceRanges", "sourceTags", "sourceServiceAccounts"))
    if direction == "INGRESS" and not has_source:
        fields["sourceRanges"] = ["0.0.0.0/0"]  # GCE's default: worth knowing, and never relying on
    if direction == "EGRESS" and not fields.get("destinationRanges"):
        fields["destinationRanges"] = ["0.0.0.0/0"]
    return fields
