"""Compute Engine state and the handlers of the REST methods the emulator serves.

Request bodies are validated in ``instance_body``; routes live in ``routes``; the HTTP layer
and the public ``Emulator`` object in ``server``.

Everything here runs under one re-entrant lock (``ComputeState.lock``): handlers are short and
the emulator favours obviously-correct concurrency over throughput.  Operation effects (an
instance turning RUNNING, a deleted instance disappearing) are fired lazily by ``advance()``,
which the server calls before every request and a ticker thread calls every few milliseconds.

Modelling choices worth knowing:
* GPUs are consumed by every instance that is not TERMINATED, so stop/preempt/delete free them
  (delete when its operation is DONE) and ``start`` checks capacity and quota again.
* Capacity is physical (per zone and accelerator type, across projects); quota is per project
  (regional GPU metrics, ``PREEMPTIBLE_*`` for spot/preemptible, and GPUS_ALL_REGIONS).
* setLabels / setMetadata take effect at once; their operations still take ``latency``.
* bulkInsert: names in perInstanceProperties that already exist count toward ``count``; the
  rest come from namePattern, using the lowest unused numbers.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from . import catalog
from .compute_groups import InstanceGroupsMixin
from .errors import (
    ApiError,
    OperationError,
    already_exists,
    bad_request,
    fingerprint_mismatch,
    invalid,
    not_found,
    stockout_message,
)
from .filters import compile_filter
from .instance_body import build_instance, check_name, validate_labels
from .operations import Operation
from .records import GLOBAL, ApiRequest, InstanceRecord, int_field
from .resources import (
    Links,
    accelerator_type_json,
    fingerprint,
    image_json,
    machine_type_json,
    new_id,
    parse_reference,
    region_json,
    rfc3339,
    zone_json,
)
from .routes import METHOD_IDS, Route

DEFAULT_CAPACITY = 1024  # free GPUs per zone and offered accelerator type
DEFAULT_QUOTA = 4096.0  # every GPU quota metric, regional and global
MAX_RESULTS = 500


@dataclass
class InjectedFault:
    method: str
    code: str
    zone: str | None
    remaining: int
    http_status: int | None
    message: str | None

    def matches(self, method_id: str, zone: str | None) -> bool:
        return self.remaining > 0 and self.method == method_id and self.zone in (None, zone)

    def api_error(self, default_status: int = 503) -> ApiError:
        status = self.http_status or default_status
        return ApiError(status, self.code, self.message or f"Injected fault: {self.code}")

    def operation_error(self, project: str, zone: str | None) -> OperationError:
        message = self.message
        if message is None and self.code.startswith("ZONE_RESOURCE_POOL_EXHAUSTED"):
            message = stockout_message(project, zone or "unknown")
        return OperationError(self.code, message or f"Injected fault: {self.code}")


class AddressPool:
    """Hands out host addresses of a network, reusing released ones first."""

    def __init__(self, network: str, first_host: int):
        self.network = ipaddress.ip_network(network)
        self.next_offset = first_host
        self.released: set[int] = set()

    def free_count(self) -> int:
        return self.network.num_addresses - 1 - self.next_offset + len(self.released)

    def allocate(self) -> str:
        if self.released:
            offset = min(self.released)
            self.released.discard(offset)
        else:
            offset = self.next_offset
            self.next_offset += 1
        return str(self.network.network_address + offset)

    def release(self, address: str) -> None:
        offset = int(ipaddress.ip_address(address)) - int(self.network.network_address)
        if 0 < offset < self.network.num_addresses:
            self.released.add(offset)


def _copy(value: Any) -> Any:
    return copy.deepcopy(value)


class ComputeState(InstanceGroupsMixin):
    def __init__(self, latency: float = 3.0, project: str | None = None, max_wait: float = 120.0):
        self.lock = threading.RLock()
        self.latency = latency
        self.project = project
        self.max_wait = max_wait
        self.instances: dict[tuple[str, str, str], InstanceRecord] = {}
        self.operations: dict[tuple[str, str, str], Operation] = {}
        self.active_operations: list[Operation] = []
        self.operations_by_request_id: dict[tuple[str, str], Operation] = {}
        self.capacity_total: dict[tuple[str, str], int] = {}
        self.quota_limits: dict[tuple[str, str], float] = {}
        self.faults: list[InjectedFault] = []
        self.binder = None
        self.user_images: list[catalog.ImageSpec] = []  # made with images.insert, newest last
        self.image_labels: dict[tuple[str, str], dict] = {}
        # Other services' resources that hold GPUs (GKE nodes): callables giving InstanceRecords,
        # counted with the instances against capacity and quota.
        self.gpu_holders: list = []
        self.method_ids = set(METHOD_IDS)  # faults may target these; services add their own
        self.internal_ips = AddressPool("10.128.0.0/16", first_host=2)
        self.external_ips = AddressPool("203.0.113.0/24", first_host=1)

    # ================================================================ admin / Python API

    def set_capacity(self, zone: str, accelerator_type: str, gpus: int) -> None:
        """Make ``gpus`` GPUs of that type free in the zone right now."""
        with self.lock:
            self.advance()
            used = self._gpus_in_use(zone, accelerator_type)
            self.capacity_total[(zone, accelerator_type)] = used + int(gpus)

    def set_quota(self, region: str, metric: str, limit: float) -> None:
        with self.lock:
            self.quota_limits[(region, metric)] = float(limit)

    def inject_fault(self, method: str, code: str, zone: str | None = None, times: int = 1,
                     http_status: int | None = None, message: str | None = None) -> None:
        if method not in self.method_ids:
            raise ValueError(f"unknown method {method!r}; expected one of {sorted(self.method_ids)}")
        with self.lock:
            self.faults.append(InjectedFault(method, code, zone, int(times), http_status, message))

    def take_fault(self, method_id: str, zone: str | None) -> InjectedFault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(method_id, zone):
                    fault.remaining -= 1
                    self.faults = [f for f in self.faults if f.remaining > 0]
                    return fault
            return None

    def preempt(self, zone: str, name: str, project: str | None = None) -> dict:
        """Preempt an instance as GCE does: TERMINATED (or deleted, per instanceTerminationAction)."""
        with self.lock:
            self.advance()
            record = self._find_instance_anywhere(zone, name, project)
            base_url = record.resource["selfLink"].split("/compute/v1/")[0]
            links = Links(base_url, record.project)
            op = self._register_operation(
                record.project, f"zones/{zone}", "compute.instances.preempted", base_url,
                target_link=links.instance(zone, name), target_id=record.resource["id"], latency=0.0,
                user="system@google.com",
            )
            if record.resource.get("scheduling", {}).get("instanceTerminationAction") == "DELETE":
                self._remove_instance(record)
            else:
                record.status = "TERMINATED"
                record.resource["lastStopTimestamp"] = rfc3339()
            self.advance()
            return op.to_json()

    def instance_snapshots(self, project: str | None = None) -> list[dict]:
        with self.lock:
            self.advance()
            return [_copy(r.resource) for r in self._sorted_instances() if project in (None, r.project)]

    def advance(self) -> None:
        """Fire the effects of every operation whose phase has changed."""
        with self.lock:
            now = time.monotonic()
            still_active = []
            for op in self.active_operations:
                op.advance(now)
                if not op.fired_done:
                    still_active.append(op)
            self.active_operations = still_active
            self.advance_groups()

    # ====================================================================== dispatch

    def handle(self, route: Route, request: ApiRequest) -> tuple[int, dict]:
        if route.handler == "operations_wait":  # sleeps without holding the lock
            return 200, self.operations_wait(request)
        with self.lock:
            self.advance()
            self._check_project(request)
            if route.mutating and request.request_id:
                replay = self._replay_request_id(request)
                if replay is not None:
                    return 200, replay
            fault = self.take_fault(route.method_id, request.params.get("zone"))
            if fault and (fault.http_status or not route.mutating):
                raise fault.api_error()
            request.fault = fault
            request.user_images = self.user_images
            try:
                return 200, getattr(self, route.handler)(request)
            except Exception:
                # A call that failed outright did nothing: its retry must not replay an operation.
                if request.request_id:
                    self.operations_by_request_id.pop((request.project, request.request_id), None)
                raise

    def _check_project(self, request: ApiRequest) -> None:
        public_image_project = request.method_id.startswith("compute.images.")
        if self.project and request.project != self.project and not public_image_project:
            raise not_found(f"projects/{request.project}")

    def _replay_request_id(self, request: ApiRequest) -> dict | None:
        try:
            uuid.UUID(request.request_id)
        except ValueError:
            raise invalid(
                f"Invalid value for field 'requestId': '{request.request_id}'. Must be a valid UUID."
            ) from None
        op = self.operations_by_request_id.get((request.project, request.request_id))
        return op.to_json() if op else None

    # ===================================================================== catalogue

    def _zone(self, request: ApiRequest) -> str:
        zone = request.params["zone"]
        if zone not in catalog.ZONE_ACCELERATORS:
            raise invalid(f"Invalid value for field 'zone': '{zone}'. Unknown zone.")
        return zone

    def zones_list(self, request: ApiRequest) -> dict:
        items = [zone_json(request.links, z) for z in catalog.ZONE_ACCELERATORS]
        return self._list_response(request, "compute#zoneList", "zones", items)

    def zones_get(self, request: ApiRequest) -> dict:
        zone = request.params["zone"]
        if zone not in catalog.ZONE_ACCELERATORS:
            raise not_found(f"projects/{request.project}/zones/{zone}")
        return zone_json(request.links, zone)

    def regions_list(self, request: ApiRequest) -> dict:
        items = [self._region_json(request, r) for r in catalog.REGION_DESCRIPTIONS]
        return self._list_response(request, "compute#regionList", "regions", items)

    def regions_get(self, request: ApiRequest) -> dict:
        region = request.params["region"]
        if region not in catalog.REGION_DESCRIPTIONS:
            raise not_found(f"projects/{request.project}/regions/{region}")
        return self._region_json(request, region)

    def _region_json(self, request: ApiRequest, region: str) -> dict:
        quotas = [
            {"metric": m, "limit": self._quota_limit(region, m),
             "usage": float(self._quota_usage(request.project, region, m))}
            for m in catalog.GPU_QUOTA_METRICS
        ]
        return region_json(request.links, region, quotas)

    def machine_types_list(self, request: ApiRequest) -> dict:
        zone = self._zone(request)
        items = [machine_type_json(request.links, zone, m) for m in catalog.machine_types_in_zone(zone)]
        return self._list_response(request, "compute#machineTypeList", f"zones/{zone}/machineTypes", items)

    def machine_types_get(self, request: ApiRequest) -> dict:
        zone = self._zone(request)
        name = request.params["machineType"]
        spec = catalog.machine_type_in_zone(zone, name)
        if spec is None:
            raise not_found(f"projects/{request.project}/zones/{zone}/machineTypes/{name}")
        return machine_type_json(request.links, zone, spec)

    def machine_types_aggregated_list(self, request: ApiRequest) -> dict:
        per_zone = {
            z: [machine_type_json(request.links, z, m) for m in catalog.machine_types_in_zone(z)]
            for z in catalog.ZONE_ACCELERATORS
        }
        return self._aggregated_response(request, "compute#machineTypeAggregatedList", "machineTypes", per_zone)

    def accelerator_types_list(self, request: ApiRequest) -> dict:
        zone = self._zone(request)
        items = [accelerator_type_json(request.links, zone, a) for a in catalog.accelerators_in_zone(zone)]
        return self._list_response(
            request, "compute#acceleratorTypeList", f"zones/{zone}/acceleratorTypes", items
        )

    def accelerator_types_get(self, request: ApiRequest) -> dict:
        zone = self._zone(request)
        name = request.params["acceleratorType"]
        if name not in catalog.accelerators_in_zone(zone):
            raise not_found(f"projects/{request.project}/zones/{zone}/acceleratorTypes/{name}")
        return accelerator_type_json(request.links, zone, name)

    def accelerator_types_aggregated_list(self, request: ApiRequest) -> dict:
        per_zone = {
            z: [accelerator_type_json(request.links, z, a) for a in catalog.accelerators_in_zone(z)]
            for z in catalog.ZONE_ACCELERATORS
        }
        return self._aggregated_response(
            request, "compute#acceleratorTypeAggregatedList", "acceleratorTypes", per_zone
        )

    def _user_image(self, project: str, name: str | None = None, family: str | None = None):
        return next((i for i in reversed(self.user_images) if i.project == project
                     and (i.name == name or (family and i.family == family))), None)

    def _user_image_json(self, request: ApiRequest, image) -> dict:
        body = image_json(request.links, image)
        labels = self.image_labels.get((image.project, image.name), {})
        return {**body, "labels": labels, "labelFingerprint": fingerprint(labels)}

    def images_insert(self, request: ApiRequest) -> dict:
        """An image of a stopped VM's boot disk (forceCreate=true allows a running one)."""
        body = request.body
        name = body.get("name") or ""
        check_name(name, "resource.name")
        if self._user_image(request.project, name) or catalog.find_image(request.project, name):
            raise ApiError(409, "alreadyExists", f"The resource 'projects/{request.project}/global/images/"
                                                 f"{name}' already exists")
        disk = parse_reference(body.get("sourceDisk") or "")
        record = next((r for r in self.instances.values() if r.project == request.project
                       and r.zone == disk.get("zones") and r.resource["disks"][0]["source"].endswith(
                           f"/disks/{disk.get('disks', disk.get('name'))}")), None)
        if record is None:
            raise invalid(f"Invalid value for field 'resource.sourceDisk': '{body.get('sourceDisk')}'. "
                          "The referenced disk resource cannot be found.")
        force = str(request.query.get("forceCreate", body.get("forceCreate", ""))).lower() == "true"
        if record.status != "TERMINATED" and not force:
            raise ApiError(400, "resourceInUseByAnotherResource",
                           f"The disk resource '{record.resource['disks'][0]['source']}' is already being "
                           f"used by '{record.resource['selfLink']}'")
        image = catalog.ImageSpec(request.project, name, body.get("family", ""), body.get("description", ""),
                                  int(record.resource["disks"][0]["diskSizeGb"]))
        op = self._register_operation(request.project, GLOBAL, "insert", request.base_url,
                                      target_link=request.links.image(request.project, name), target_id=new_id())

        def done():
            self.user_images.append(image)
            self.image_labels[(image.project, name)] = validate_labels(body.get("labels") or {}, "resource")
            if self.binder is not None and hasattr(self.binder, "snapshot"):
                self.binder.snapshot(record.name, f"{image.project}/{name}")

        op.on_done.append(done)
        return op.to_json()

    def images_delete(self, request: ApiRequest) -> dict:
        image = self._user_image(request.project, request.params["image"])
        if image is None:
            raise not_found(f"projects/{request.project}/global/images/{request.params['image']}")
        op = self._register_operation(request.project, GLOBAL, "delete", request.base_url,
                                      target_link=request.links.image(image.project, image.name), target_id=None)
        op.on_done.append(lambda: self.user_images.remove(image))
        return op.to_json()

    def images_get(self, request: ApiRequest) -> dict:
        mine = self._user_image(request.project, request.params["image"])
        if mine:
            return self._user_image_json(request, mine)
        image = catalog.find_image(request.project, request.params["image"])
        if image is None:
            raise not_found(f"projects/{request.project}/global/images/{request.params['image']}")
        return image_json(request.links, image)

    def images_get_from_family(self, request: ApiRequest) -> dict:
        mine = self._user_image(request.project, family=request.params["family"])
        if mine:
            return self._user_image_json(request, mine)
        image = catalog.find_image_family(request.project, request.params["family"])
        if image is None:
            raise not_found(f"projects/{request.project}/global/images/family/{request.params['family']}")
        return image_json(request.links, image)

    # ======================================================================== listing

    def _page(self, request: ApiRequest, items: list) -> tuple[list, str | None]:
        max_results = int_field(request.query.get("maxResults"), "maxResults", MAX_RESULTS)
        if not 0 <= max_results <= MAX_RESULTS:
            raise invalid(
                f"Invalid value for field 'maxResults': '{max_results}'. Must be less than or equal to 500"
            )
        max_results = max_results or MAX_RESULTS
        offset = _decode_page_token(request.query.get("pageToken"))
        page = items[offset: offset + max_results]
        more = offset + max_results < len(items)
        return page, _encode_page_token(offset + max_results) if more else None

    def _list_response(self, request: ApiRequest, kind: str, path: str, items: list[dict]) -> dict:
        matches = compile_filter(request.query.get("filter"))
        page, next_token = self._page(request, [i for i in items if matches(i)])
        self_link = f"{request.links.project_path()}/{path}"
        body: dict = {"kind": kind, "id": self_link.split("/compute/v1/")[1], "selfLink": self_link}
        if page:
            body["items"] = page
        if next_token:
            body["nextPageToken"] = next_token
        return body

    def _aggregated_response(self, request: ApiRequest, kind: str, key: str,
                             per_zone: dict[str, list[dict]]) -> dict:
        matches = compile_filter(request.query.get("filter"))
        flat = [(zone, item) for zone, items in per_zone.items() for item in items if matches(item)]
        page, next_token = self._page(request, flat)
        items: dict[str, dict] = {}
        for zone in catalog.ZONE_ACCELERATORS:
            on_page = [item for z, item in page if z == zone]
            scope = f"zones/{zone}"
            items[scope] = {key: on_page} if on_page else {"warning": _no_results_warning(scope)}
        self_link = f"{request.links.project_path()}/aggregated/{key}"
        body: dict = {"kind": kind, "id": f"projects/{request.project}/aggregated/{key}",
                      "items": items, "selfLink": self_link}
        if next_token:
            body["nextPageToken"] = next_token
        if request.query.get("returnPartialSuccess", "").lower() == "true":
            body["unreachables"] = []
        return body

    # ================================================================ instances: read

    def _sorted_instances(self) -> list[InstanceRecord]:
        return sorted(self.instances.values(), key=lambda r: (r.project, r.zone, r.name))

    def _find_instance_anywhere(self, zone: str, name: str, project: str | None) -> InstanceRecord:
        found = [r for r in self.instances.values()
                 if r.zone == zone and r.name == name and project in (None, r.project)]
        if not found:
            raise KeyError(f"no instance {name!r} in zone {zone!r}")
        return found[0]

    def _existing_instance(self, request: ApiRequest) -> InstanceRecord:
        zone = self._zone(request)
        name = request.params["instance"]
        record = self.instances.get((request.project, zone, name))
        if record is None:
            raise not_found(f"projects/{request.project}/zones/{zone}/instances/{name}")
        return record

    def instances_get(self, request: ApiRequest) -> dict:
        return _copy(self._existing_instance(request).resource)

    def instances_list(self, request: ApiRequest) -> dict:
        zone = self._zone(request)
        items = [_copy(r.resource) for r in self._sorted_instances()
                 if r.project == request.project and r.zone == zone]
        return self._list_response(request, "compute#instanceList", f"zones/{zone}/instances", items)

    def instances_aggregated_list(self, request: ApiRequest) -> dict:
        per_zone: dict[str, list[dict]] = {z: [] for z in catalog.ZONE_ACCELERATORS}
        for record in self._sorted_instances():
            if record.project == request.project:
                per_zone[record.zone].append(_copy(record.resource))
        return self._aggregated_response(request, "compute#instanceAggregatedList", "instances", per_zone)

    def instances_get_guest_attributes(self, request: ApiRequest) -> dict:
        record = self._existing_instance(request)
        link = record.resource["selfLink"] + "/getGuestAttributes"
        query_path = request.query.get("queryPath", "")
        return {"kind": "compute#guestAttributes", "queryPath": query_path,
                "queryValue": {"items": []}, "selfLink": link}

    # ============================================================== instances: create

    def instances_insert(self, request: ApiRequest) -> dict:
        zone = self._zone(request)
        name = request.body.get("name", "")
        check_name(name, "resource.name")
        if (request.project, zone, name) in self.instances:
            raise already_exists(f"projects/{request.project}/zones/{zone}/instances/{name}")
        record = build_instance(request, zone, name, request.body, "resource")
        op = self._new_operation(request, "insert", request.links.instance(zone, name), record.resource["id"])
        if op.error is None:
            self._admit_and_create(request, zone, op, [record], min_count=1)
        return op.to_json()

    def instances_bulk_insert(self, request: ApiRequest) -> dict:
        zone = self._zone(request)
        body = request.body
        if body.get("sourceInstanceTemplate"):
            raise bad_request("The emulator does not support sourceInstanceTemplate; send instanceProperties.")
        count = int_field(body.get("count"), "resource.count")
        min_count = int_field(body.get("minCount"), "resource.minCount", count)
        if count < 1:
            raise invalid(f"Invalid value for field 'resource.count': '{count}'. Count must be greater than 0.")
        if not 1 <= min_count <= count:
            raise invalid(
                f"Invalid value for field 'resource.minCount': '{min_count}'. "
                "Min count must be between 1 and count."
            )
        per_instance = body.get("perInstanceProperties") or {}
        names = self._bulk_names(request.project, zone, count, per_instance, body.get("namePattern", ""))
        existing = [n for n in names if (request.project, zone, n) in self.instances]
        properties = body.get("instanceProperties") or {}
        records = []
        for name in names:
            if name in existing:
                continue
            props = dict(properties, name=name)
            if per_instance.get(name, {}).get("hostname"):
                props["hostname"] = per_instance[name]["hostname"]
            records.append(build_instance(request, zone, name, props, "resource.instanceProperties"))
        first = records[0].name if records else names[0]
        op = self._new_operation(request, "bulkInsert", request.links.instance(zone, first), None)
        op.bulk_target_count = count
        op.bulk_created_count = len(existing)
        if op.error is None and records:
            created = self._admit_and_create(request, zone, op, records, max(0, min_count - len(existing)))
            op.bulk_created_count += created
        return op.to_json()

    def _bulk_names(self, project: str, zone: str, count: int, per_instance: dict, pattern: str) -> list[str]:
        names = list(per_instance)[:count]
        for name in names:
            check_name(name, "resource.perInstanceProperties")
        missing = count - len(names)
        if missing <= 0:
            return names
        runs = re.findall(r"#+", pattern)
        if len(runs) != 1:
            raise invalid(
                f"Invalid value for field 'resource.namePattern': '{pattern}'. Name pattern must contain "
                "exactly one sequence of '#' characters, or perInstanceProperties must name every instance."
            )
        hashes = runs[0]
        number = 1
        while missing:
            if number >= 10 ** len(hashes):
                raise invalid(f"Invalid value for field 'resource.namePattern': '{pattern}'. "
                              "The pattern cannot produce enough names.")
            candidate = pattern.replace(hashes, str(number).zfill(len(hashes)))
            number += 1
            if candidate in names or (project, zone, candidate) in self.instances:
                continue
            check_name(candidate, "resource.namePattern")
            names.append(candidate)
            missing -= 1
        return names

    # ------------------------------------------------------ admission: quota, capacity

    def _admit_and_create(self, request: ApiRequest, zone: str, op: Operation, records: list[InstanceRecord],
                          min_count: int) -> int:
        """Create as many records as resources allow (at least min_count) or fail the operation."""
        admitted = self._admissible_count(request.project, zone, records, min_count)
        if isinstance(admitted, OperationError):
            op.error = admitted
            return 0
        created = records[:admitted]
        self._store_instances(created)
        op.on_running.append(lambda: self._set_status(created, {"PROVISIONING"}, "STAGING"))
        op.on_done.append(lambda: self._mark_running(created))
        return len(created)

    def _admissible_count(self, project: str, zone: str, records: list[InstanceRecord],
                          min_count: int) -> int | OperationError:
        first_failure = self._resource_failure(project, zone, records)
        if first_failure is None:
            return len(records)
        for count in range(len(records) - 1, max(min_count, 1) - 1, -1):
            if self._resource_failure(project, zone, records[:count]) is None:
                return count
        return first_failure

    def _resource_failure(self, project: str, zone: str, records: list[InstanceRecord]) -> OperationError | None:
        demand: Counter = Counter()
        for record in records:
            for key, amount in record.quota_demand():
                demand[key] += amount
        for (scope, metric), amount in sorted(demand.items()):
            limit = self._quota_limit(scope, metric)
            if self._quota_usage(project, scope, metric) + amount > limit:
                return _quota_error(metric, scope, limit)
        gpu_demand: Counter = Counter()
        for record in records:
            if record.gpu_count:
                gpu_demand[record.gpu_type] += record.gpu_count
        for gpu_type, amount in gpu_demand.items():
            if amount > self._free_gpus(zone, gpu_type):
                return OperationError("ZONE_RESOURCE_POOL_EXHAUSTED", stockout_message(project, zone))
        if sum(r.wants_nat_ips for r in records) > self.external_ips.free_count():
            limit = float(self.external_ips.network.num_addresses - 2)
            return _quota_error("IN_USE_ADDRESSES", catalog.region_of(zone), limit)
        return None

    def _quota_limit(self, scope: str, metric: str) -> float:
        return self.quota_limits.get((scope, metric), DEFAULT_QUOTA)

    def _gpu_records(self):
        yield from self.instances.values()
        for holder in self.gpu_holders:
            yield from holder()

    def _quota_usage(self, project: str, scope: str, metric: str) -> int:
        return sum(
            amount
            for record in self._gpu_records()
            if record.project == project and record.holds_gpus
            for key, amount in record.quota_demand()
            if key == (scope, metric)
        )

    def _gpus_in_use(self, zone: str, gpu_type: str) -> int:
        return sum(r.gpu_count for r in self._gpu_records()
                   if r.zone == zone and r.gpu_type == gpu_type and r.holds_gpus)

    def _free_gpus(self, zone: str, gpu_type: str) -> int:
        offered = gpu_type in catalog.accelerators_in_zone(zone)
        total = self.capacity_total.get((zone, gpu_type), DEFAULT_CAPACITY if offered else 0)
        return total - self._gpus_in_use(zone, gpu_type)

    # ------------------------------------------------------------- storing, removing

    def _store_instances(self, records: list[InstanceRecord]) -> None:
        done: list[InstanceRecord] = []
        try:
            for record in records:
                self._assign_addresses(record)
                self.instances[(record.project, record.zone, record.name)] = record
                done.append(record)
        except Exception as exc:  # a failing binder must not leave half-created instances
            for record in done:
                self._remove_instance(record)
            raise ApiError(500, "backendError", f"Internal error: node binder failed: {exc}") from exc

    def _assign_addresses(self, record: InstanceRecord) -> None:
        nics = record.resource["networkInterfaces"]
        for index, nic in enumerate(nics):
            if index == 0 and self.binder is not None:
                # The boot image tells a test node which root to start from.
                nic["networkIP"] = str(self.binder.acquire(
                    record.name, {**_copy(record.resource), "_sourceImage": record.source_image}))
            else:
                nic["networkIP"] = self.internal_ips.allocate()
                record.allocated_ips.append(nic["networkIP"])
            for config in nic.get("accessConfigs", []):
                if not config["natIP"] and index == 0 and self.binder is not None:
                    # The test node is the VM: reachable at its "external" address too.
                    config["natIP"] = nic["networkIP"]
                elif not config["natIP"]:
                    config["natIP"] = self.external_ips.allocate()
                    record.allocated_nat_ips.append(config["natIP"])

    def _remove_instance(self, record: InstanceRecord) -> None:
        key = (record.project, record.zone, record.name)
        if self.instances.get(key) is not record:
            return
        del self.instances[key]
        for address in record.allocated_ips:
            self.internal_ips.release(address)
        for address in record.allocated_nat_ips:
            self.external_ips.release(address)
        if self.binder is not None:
            self.binder.release(record.name)

    @staticmethod
    def _set_status(records: list[InstanceRecord], from_statuses: set[str], to_status: str) -> None:
        for record in records:
            if record.status in from_statuses:
                record.status = to_status

    def _mark_running(self, records: list[InstanceRecord]) -> None:
        for record in records:
            if record.status in ("PROVISIONING", "STAGING"):
                record.status = "RUNNING"
                record.resource["lastStartTimestamp"] = rfc3339()

    # ============================================================ instances: mutate

    def instances_delete(self, request: ApiRequest) -> dict:
        record = self._existing_instance(request)
        op = self._new_operation(request, "delete", record.resource["selfLink"], record.resource["id"])
        if op.error is None:
            record.status = "STOPPING"
            op.on_done.append(lambda: self._remove_instance(record))
        return op.to_json()

    def instances_stop(self, request: ApiRequest) -> dict:
        record = self._existing_instance(request)
        op = self._new_operation(request, "stop", record.resource["selfLink"], record.resource["id"])
        if op.error is None and record.status != "TERMINATED":
            record.status = "STOPPING"
            op.on_done.append(lambda: self._mark_stopped(record))
        return op.to_json()

    def _mark_stopped(self, record: InstanceRecord) -> None:
        if record.status == "STOPPING":
            record.status = "TERMINATED"
            record.resource["lastStopTimestamp"] = rfc3339()

    def instances_start(self, request: ApiRequest) -> dict:
        record = self._existing_instance(request)
        op = self._new_operation(request, "start", record.resource["selfLink"], record.resource["id"])
        if op.error is None and record.status == "TERMINATED":
            op.error = self._resource_failure(record.project, record.zone, [record])
            if op.error is None:
                record.status = "STAGING"
                op.on_done.append(lambda: self._mark_running([record]))
        return op.to_json()

    def instances_set_labels(self, request: ApiRequest) -> dict:
        record = self._existing_instance(request)
        if request.body.get("labelFingerprint") != record.resource["labelFingerprint"]:
            raise fingerprint_mismatch()
        labels = validate_labels(request.body.get("labels") or {}, "labels")
        op = self._new_operation(request, "setLabels", record.resource["selfLink"], record.resource["id"])
        if op.error is None:
            record.resource["labels"] = labels
            record.resource["labelFingerprint"] = fingerprint(labels)
        return op.to_json()

    def instances_set_metadata(self, request: ApiRequest) -> dict:
        record = self._existing_instance(request)
        metadata = record.resource["metadata"]
        if request.body.get("fingerprint") != metadata["fingerprint"]:
            raise fingerprint_mismatch()
        items = request.body.get("items") or []
        op = self._new_operation(request, "setMetadata", record.resource["selfLink"], record.resource["id"])
        if op.error is None:
            record.resource["metadata"] = {"kind": "compute#metadata", "fingerprint": fingerprint(items)}
            if items:
                record.resource["metadata"]["items"] = items
        return op.to_json()

    # =================================================================== operations

    def _new_operation(self, request: ApiRequest, operation_type: str, target_link: str,
                       target_id: str | None) -> Operation:
        """Register a zonal operation; an injected in-operation fault makes it fail."""
        zone = request.params["zone"]
        op = self._register_operation(request.project, f"zones/{zone}", operation_type, request.base_url,
                                      target_link=target_link, target_id=target_id)
        if request.fault is not None:
            op.error = request.fault.operation_error(request.project, zone)
        if request.request_id:
            self.operations_by_request_id[(request.project, request.request_id)] = op
        return op

    def _register_operation(self, project: str, scope: str, operation_type: str, base_url: str, *,
                            target_link: str, target_id: str | None, latency: float | None = None,
                            user: str | None = None) -> Operation:
        millis = int(time.time() * 1000)
        name = f"operation-{millis}-{uuid.uuid4().hex[:13]}-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:8]}"
        op = Operation(project, scope, name, operation_type, target_link, target_id, base_url,
                       self.latency if latency is None else latency)
        if user:
            op.user = user
        self.operations[(project, scope, name)] = op
        self.active_operations.append(op)
        return op

    @staticmethod
    def _operation_scope(request: ApiRequest) -> str:
        if "zone" in request.params:
            return f"zones/{request.params['zone']}"
        if "region" in request.params:
            return f"regions/{request.params['region']}"
        return GLOBAL

    def _find_operation(self, request: ApiRequest) -> Operation:
        scope = self._operation_scope(request)
        name = request.params["operation"]
        op = self.operations.get((request.project, scope, name))
        if op is None:
            raise not_found(f"projects/{request.project}/{scope}/operations/{name}")
        return op

    def operations_get(self, request: ApiRequest) -> dict:
        return self._find_operation(request).to_json()

    def operations_list(self, request: ApiRequest) -> dict:
        scope = self._operation_scope(request)
        ops = [op.to_json() for (project, op_scope, _), op in self.operations.items()
               if project == request.project and op_scope == scope]
        return self._list_response(request, "compute#operationList", f"{scope}/operations", ops)

    def operations_delete(self, request: ApiRequest) -> dict:
        op = self._find_operation(request)
        del self.operations[(op.project, op.scope, op.name)]
        return {}

    def operations_wait(self, request: ApiRequest) -> dict:
        """Block until the operation is DONE, or at most max_wait seconds, like GCE's wait."""
        with self.lock:
            self.advance()
            self._check_project(request)
            op = self._find_operation(request)
            remaining = op.done_at - time.monotonic()
        if remaining > 0:
            time.sleep(min(remaining, self.max_wait))
        with self.lock:
            self.advance()
            return op.to_json()


def _quota_error(metric: str, scope: str, limit: float) -> OperationError:
    if scope == GLOBAL:
        message = f"Quota '{metric}' exceeded.  Limit: {float(limit)} globally."
        info = {"metricName": f"compute.googleapis.com/{metric.lower()}",
                "limitName": f"{metric.replace('_', '-')}-per-project", "limit": float(limit)}
    else:
        message = f"Quota '{metric}' exceeded.  Limit: {float(limit)} in region {scope}."
        info = {"metricName": f"compute.googleapis.com/{metric.lower()}",
                "limitName": f"{metric.replace('_', '-')}-per-project-region",
                "dimensions": {"region": scope}, "limit": float(limit)}
    return OperationError("QUOTA_EXCEEDED", message, details=[{"quotaInfo": info}])


def _no_results_warning(scope: str) -> dict:
    return {
        "code": "NO_RESULTS_ON_PAGE",
        "message": f"There are no results for scope '{scope}' on this page.",
        "data": [{"key": "scope", "value": scope}],
    }


def _encode_page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode_page_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        return int(base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)[1])
    except (ValueError, IndexError):
        raise invalid(f"Invalid value for field 'pageToken': '{token}'. Invalid page token.") from None
