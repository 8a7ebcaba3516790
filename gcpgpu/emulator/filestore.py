"""Cloud Filestore v1 (file.googleapis.com) as the emulator serves it.

Paths and JSON follow the REST transport of google-cloud-filestore:
``/v1/projects/{p}/locations/{l}/instances[/{id}]`` (create takes ``?instanceId=``, list accepts
location ``-`` and a ``filter``, patch an ``updateMask``) and long-running operations at
``/v1/projects/{p}/locations/{l}/operations/{id}``. GKE uses the same operation path shape, so
only operation ids issued here are answered.

Modelling: an instance is CREATING until its operation is done (the emulator's latency), then
READY with ``networks[0].ipAddresses``; a delete makes it DELETING and removes it when done.
Zonal tiers (BASIC_HDD, BASIC_SSD, HIGH_SCALE_SSD) need a zone as location, ENTERPRISE a region;
capacities must lie in the tier's range, and BASIC tiers only grow.
"""
from __future__ import annotations

import copy
import ipaddress
import re
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import unquote

from .errors import ApiError, invalid, not_found
from .filters import compile_filter
from .resources import rfc3339

PREFIX = "/v1/projects/"
METHOD_IDS = {"file.projects.locations.operations.get",
              *(f"file.projects.locations.instances.{verb}" for verb in ("create", "list", "get", "patch", "delete"))}
INSTANCE_ID = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
SHARE_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]{0,31}$")
ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
# GiB ranges per tier (Filestore service tiers documentation).
TIER_CAPACITY_GB = {"BASIC_HDD": (1024, 65434), "BASIC_SSD": (2560, 65434),
                    "HIGH_SCALE_SSD": (10240, 102400), "ENTERPRISE": (1024, 10240)}
REGIONAL_TIERS = {"ENTERPRISE"}
GROW_ONLY_TIERS = {"BASIC_HDD", "BASIC_SSD"}
INSTANCE_TYPE = "type.googleapis.com/google.cloud.filestore.v1.Instance"
EMPTY_TYPE = "type.googleapis.com/google.protobuf.Empty"
METADATA_TYPE = "type.googleapis.com/google.cloud.common.OperationMetadata"
# GAPIC REST clients send enums as numbers ($alt=json;enum-encoding=int); answers use names,
# which every client parses.
TIERS = ["TIER_UNSPECIFIED", "STANDARD", "PREMIUM", "BASIC_HDD", "BASIC_SSD", "HIGH_SCALE_SSD",
         "ENTERPRISE", "ZONAL", "REGIONAL"]
ADDRESS_MODES = ["ADDRESS_MODE_UNSPECIFIED", "MODE_IPV4"]
CONNECT_MODES = ["CONNECT_MODE_UNSPECIFIED", "DIRECT_PEERING", "PRIVATE_SERVICE_ACCESS"]
ADDRESSES = ipaddress.ip_network("10.64.0.0/16")  # one /29 per instance, first host address


@dataclass
class LongRunning:
    name: str  # projects/{p}/locations/{l}/operations/{id}
    verb: str
    target: str
    done_at: float
    on_done: list = field(default_factory=list)
    response: dict | None = None
    created: str = field(default_factory=rfc3339)
    finished: bool = False

    def to_json(self) -> dict:
        op = {"name": self.name, "done": self.finished,
              "metadata": {"@type": METADATA_TYPE, "createTime": self.created, "target": self.target,
                           "verb": self.verb, "apiVersion": "v1"}}
        if self.finished:
            op["response"] = self.response or {"@type": EMPTY_TYPE}
        return op


class FilestoreService:
    def __init__(self, emulator):
        self.emulator = emulator
        self.lock = emulator.state.lock
        self.instances: dict[str, dict] = {}  # full name -> instance JSON
        self.operations: dict[str, LongRunning] = {}
        self.next_block = 0
        self.take_fault = emulator.state.take_fault  # Emulator.inject_fault's faults, by location
        emulator.state.method_ids |= METHOD_IDS

    # ------------------------------------------------------------------ test controls

    def snapshot(self) -> list[dict]:
        with self.lock:
            self.advance()
            return [copy.deepcopy(i) for i in self.instances.values()]

    # ------------------------------------------------------------------ service interface

    def advance(self) -> None:
        with self.lock:
            now = time.monotonic()
            for op in self.operations.values():
                if not op.finished and now >= op.done_at:
                    op.finished = True
                    for effect in op.on_done:
                        effect()

    def serve(self, http_method, path, query, body, base_url):
        from .server import Call

        route = self._route(http_method, path)
        if route is None:
            return None
        method_id, handler, params = route
        try:
            with self.lock:
                self.advance()
                fault = self.take_fault(method_id, params.get("location"))
                if fault:
                    raise fault.api_error()
                status, payload = 200, handler(params, query, body)
        except ApiError as error:
            status, payload = error.http_status, error.body()
        return status, payload, Call(method_id, http_method, path, params.get("location"),
                                     http_method != "GET", status)

    def _route(self, http_method: str, path: str):
        if not path.startswith(PREFIX):
            return None
        parts = [unquote(p) for p in path[len("/v1/"):].split("/")]
        if len(parts) < 5 or parts[0] != "projects" or parts[2] != "locations":
            return None
        params = {"project": parts[1], "location": parts[3]}
        collection, rest = parts[4], parts[5:]
        if collection == "operations" and len(rest) == 1 and http_method == "GET":
            name = "/".join(parts[:6])
            if name not in self.operations:
                return None  # another service's operation (GKE shares this path shape)
            return "file.projects.locations.operations.get", self._get_operation, {**params, "name": name}
        if collection != "instances":
            return None
        if not rest:
            handlers = {"POST": ("create", self._create), "GET": ("list", self._list)}
        elif len(rest) == 1 and ":" not in rest[0]:
            params["name"] = "/".join(parts[:6])
            handlers = {"GET": ("get", self._get), "PATCH": ("patch", self._patch),
                        "DELETE": ("delete", self._delete)}
        else:
            return None
        if http_method not in handlers:
            return None
        verb, handler = handlers[http_method]
        return f"file.projects.locations.instances.{verb}", handler, params

    # ------------------------------------------------------------------ handlers

    def _get_operation(self, params, query, body) -> dict:
        return self.operations[params["name"]].to_json()

    def _create(self, params, query, body) -> dict:
        instance_id = query.get("instanceId", "")
        if not INSTANCE_ID.match(instance_id):
            raise invalid(f"instance_id '{instance_id}' must be 1-63 lowercase letters, digits or "
                          "hyphens, start with a letter and not end with a hyphen")
        location = params["location"]
        name = f"projects/{params['project']}/locations/{location}/instances/{instance_id}"
        if name in self.instances:
            raise ApiError(409, "alreadyExists", f"Resource '{name}' already exists")
        tier = _enum_name(body.get("tier", ""), TIERS)
        self._check_location(tier, location)
        shares = body.get("fileShares") or []
        if len(shares) != 1 or not SHARE_NAME.match(str(shares[0].get("name", ""))):
            raise invalid("exactly one file share with a name of letters, digits and '_' "
                          "(starting with a letter) is required")
        self._check_capacity(tier, shares[0].get("capacityGb"))
        networks = body.get("networks") or []
        if len(networks) != 1 or not networks[0].get("network"):
            raise invalid("exactly one network is required")
        instance = {
            "name": name, "description": body.get("description", ""), "state": "CREATING",
            "createTime": rfc3339(), "tier": tier, "labels": dict(body.get("labels") or {}),
            "fileShares": [{"name": shares[0]["name"], "capacityGb": str(int(shares[0]["capacityGb"])),
                            **({"nfsExportOptions": shares[0]["nfsExportOptions"]}
                               if shares[0].get("nfsExportOptions") else {})}],
            "networks": [{"network": networks[0]["network"],
                          "modes": [_enum_name(m, ADDRESS_MODES)
                                    for m in networks[0].get("modes") or ["MODE_IPV4"]],
                          "reservedIpRange": self._reserve_range(),
                          "connectMode": _enum_name(networks[0].get("connectMode", "DIRECT_PEERING"),
                                                    CONNECT_MODES)}],
            "etag": uuid.uuid4().hex[:12],
        }
        self.instances[name] = instance

        def ready():
            if name in self.instances:
                block = ipaddress.ip_network(instance["networks"][0]["reservedIpRange"])
                instance["networks"][0]["ipAddresses"] = [str(block.network_address + 2)]
                instance["state"] = "READY"
        op = self._operation(params, "create", name, ready)
        op.on_done.append(lambda: setattr(op, "response", {"@type": INSTANCE_TYPE,
                                                           **copy.deepcopy(instance)}))
        return op.to_json()

    def _list(self, params, query, body) -> dict:
        prefix = f"projects/{params['project']}/locations/"
        matches = compile_filter(query.get("filter"))
        found = [copy.deepcopy(i) for name, i in sorted(self.instances.items())
                 if name.startswith(prefix) and params["location"] in ("-", name.split("/")[3])
                 and matches(i)]
        return {"instances": found} if found else {}

    def _get(self, params, query, body) -> dict:
        return copy.deepcopy(self._find(params["name"]))

    def _patch(self, params, query, body) -> dict:
        instance = self._find(params["name"])
        mask = [m.strip() for m in query.get("updateMask", "").split(",") if m.strip()]
        if not mask:
            raise invalid("update_mask is required")
        changes = {}
        for path in mask:
            if path in ("file_shares", "fileShares"):
                shares = body.get("fileShares") or []
                if len(shares) != 1 or shares[0].get("name") != instance["fileShares"][0]["name"]:
                    raise invalid("the file share cannot be renamed, added or removed")
                capacity = int(shares[0].get("capacityGb", 0))
                self._check_capacity(instance["tier"], capacity)
                if (instance["tier"] in GROW_ONLY_TIERS
                        and capacity < int(instance["fileShares"][0]["capacityGb"])):
                    raise invalid(f"{instance['tier']} instances cannot shrink")
                changes["capacity"] = str(capacity)
            elif path in ("labels", "description"):
                changes[path] = body.get(path) or ({} if path == "labels" else "")
            else:
                raise invalid(f"field '{path}' cannot be updated")
        if instance["state"] != "READY":
            raise ApiError(400, "failedPrecondition",
                           f"instance is {instance['state']}; it can be updated only when READY")
        instance["state"] = "REPAIRING"  # what the console shows while a resize runs

        def apply():
            if "capacity" in changes:
                instance["fileShares"][0]["capacityGb"] = changes["capacity"]
            for key in ("labels", "description"):
                if key in changes:
                    instance[key] = changes[key]
            instance["state"] = "READY"
        op = self._operation(params, "update", params["name"], apply)
        op.on_done.append(lambda: setattr(op, "response", {"@type": INSTANCE_TYPE,
                                                           **copy.deepcopy(instance)}))
        return op.to_json()

    def _delete(self, params, query, body) -> dict:
        instance = self._find(params["name"])
        instance["state"] = "DELETING"
        return self._operation(params, "delete", params["name"],
                               lambda: self.instances.pop(params["name"], None)).to_json()

    # ------------------------------------------------------------------ helpers

    def _find(self, name: str) -> dict:
        if name not in self.instances:
            raise not_found(name)
        return self.instances[name]

    def _operation(self, params, verb: str, target: str, effect) -> LongRunning:
        name = (f"projects/{params['project']}/locations/{params['location']}/operations/"
                f"operation-{int(time.time() * 1000)}-{uuid.uuid4().hex[:12]}")
        op = LongRunning(name, verb, target, time.monotonic() + self.emulator.state.latency, [effect])
        self.operations[name] = op
        return op

    @staticmethod
    def _check_location(tier: str, location: str) -> None:
        if tier not in TIER_CAPACITY_GB:
            raise invalid(f"tier '{tier}' is not one of {', '.join(TIER_CAPACITY_GB)}")
        regional = tier in REGIONAL_TIERS
        if not (REGION if regional else ZONE).match(location):
            raise invalid(f"{tier} instances need a {'region' if regional else 'zone'} as location, "
                          f"not '{location}'")

    @staticmethod
    def _check_capacity(tier: str, capacity) -> None:
        low, high = TIER_CAPACITY_GB[tier]
        try:
            value = int(capacity)
        except (TypeError, ValueError):
            raise invalid("fileShares[0].capacityGb is required") from None
        if not low <= value <= high:
            raise invalid(f"{tier} capacity must be between {low} and {high} GiB, not {value}")

    def _reserve_range(self) -> str:
        block = ipaddress.ip_network((int(ADDRESSES.network_address) + 8 * self.next_block, 29))
        self.next_block += 1
        return str(block)


def _enum_name(value, names: list[str]) -> str:
    if isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    return str(value)
