"""Google Kubernetes Engine (container.googleapis.com/v1) for the emulator: clusters, node pools
and their operations, on the paths and with the JSON field names of the REST API that
google-cloud-container's REST transport uses::

    /v1/projects/{p}/locations/{l}/clusters[/{c}]                     list, create, get, update, delete
    /v1/projects/{p}/locations/{l}/clusters/{c}/nodePools[/{np}]      list, create, get, delete
    /v1/projects/{p}/locations/{l}/clusters/{c}/nodePools/{np}:setAutoscaling | :setSize
    /v1/projects/{p}/locations/{l}/operations/{op}                    get (only this service's ids)

Modelled as GKE behaves:
* every mutation returns an Operation that goes PENDING -> RUNNING -> DONE with the emulator's
  latency; clusters and pools are PROVISIONING (RECONCILING, STOPPING) until it is DONE;
* one operation at a time per cluster: a second mutating call while one runs gets 400
  FAILED_PRECONDITION ("Operation ... is currently ..."), which is why clients serialise;
* node-pool nodes hold GPUs in their zones, counted with the Compute instances against the same
  capacity and quota (``ComputeState.gpu_holders``); a shortage fails the operation with the
  ``[ZONE_RESOURCE_POOL_EXHAUSTED]`` / ``[GCE_QUOTA_EXCEEDED]`` text GKE relays, and leaves the
  pool in ERROR with no nodes;
* faults (``Emulator.inject_fault`` with these method ids, ``zone`` = the location) behave as for
  Compute: with ``http_status`` the call fails, otherwise a mutating call's operation fails;
* enums the emulator produces are numbers when the client asks ``$alt=json;enum-encoding=int``
  (google-cloud-container does), names otherwise; enums in requests may be either;
* errors have Google's JSON shape ``{"error": {"code", "message", "status"}}``.
Nodes are not Compute instances here (real GKE nodes are VMs of a managed instance group).
"""
from __future__ import annotations

import base64
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import unquote

from . import catalog
from .errors import CANONICAL_STATUS
from .operations import PENDING_SHARE, Operation
from .records import InstanceRecord
from .resources import new_id, rfc3339

API = "container.projects.locations"
PATH = re.compile(
    r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/"
    r"(?:operations/(?P<operation>[^/:]+)"
    r"|clusters(?:/(?P<cluster>[^/:]+)(?:/nodePools(?:/(?P<pool>[^/:]+))?)?)?(?::(?P<verb>\w+))?)$")
NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,38}[a-z0-9])?$")
CIDR = re.compile(r"^(\d{1,3}\.){3}\d{1,3}/(\d{1,2})$")
VERSION = "1.31.6-gke.1020000"
DEFAULT_INITIAL_NODES = 3
GRPC_CODE = {"INVALID_ARGUMENT": 3, "NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7,
             "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9, "INTERNAL": 13, "UNAVAILABLE": 14}

# Enum values by field (names <-> numbers of google.container.v1).
OPERATION_STATUS = ["STATUS_UNSPECIFIED", "PENDING", "RUNNING", "DONE", "ABORTING"]
CLUSTER_STATUS = ["STATUS_UNSPECIFIED", "PROVISIONING", "RUNNING", "RECONCILING", "STOPPING", "ERROR",
                  "DEGRADED"]
POOL_STATUS = ["STATUS_UNSPECIFIED", "PROVISIONING", "RUNNING", "RUNNING_WITH_ERROR", "RECONCILING",
               "STOPPING", "ERROR"]
ENUMS = {
    "operationType": {"CREATE_CLUSTER": 1, "DELETE_CLUSTER": 2, "UPDATE_CLUSTER": 6, "CREATE_NODE_POOL": 7,
                      "DELETE_NODE_POOL": 8, "SET_NODE_POOL_SIZE": 14},
    "channel": {"UNSPECIFIED": 0, "RAPID": 1, "REGULAR": 2, "STABLE": 3, "EXTENDED": 4},
    "gpuDriverVersion": {"GPU_DRIVER_VERSION_UNSPECIFIED": 0, "INSTALLATION_DISABLED": 1, "DEFAULT": 2,
                         "LATEST": 3},
}
METHODS = {  # (http method, what the path names, verb) -> (method id suffix, handler, mutating)
    ("GET", "clusters", None): ("clusters.list", "clusters_list", False),
    ("POST", "clusters", None): ("clusters.create", "clusters_create", True),
    ("GET", "cluster", None): ("clusters.get", "clusters_get", False),
    ("PUT", "cluster", None): ("clusters.update", "clusters_update", True),
    ("DELETE", "cluster", None): ("clusters.delete", "clusters_delete", True),
    ("GET", "nodePools", None): ("clusters.nodePools.list", "node_pools_list", False),
    ("POST", "nodePools", None): ("clusters.nodePools.create", "node_pools_create", True),
    ("GET", "nodePool", None): ("clusters.nodePools.get", "node_pools_get", False),
    ("DELETE", "nodePool", None): ("clusters.nodePools.delete", "node_pools_delete", True),
    ("POST", "nodePool", "setAutoscaling"): ("clusters.nodePools.setAutoscaling", "node_pools_set_autoscaling", True),
    ("POST", "nodePool", "setSize"): ("clusters.nodePools.setSize", "node_pools_set_size", True),
    ("GET", "operation", None): ("operations.get", "operations_get", False),
}
VERBS = {"CREATE_CLUSTER": "creating cluster", "DELETE_CLUSTER": "deleting cluster",
         "UPDATE_CLUSTER": "updating cluster", "CREATE_NODE_POOL": "creating a node pool in cluster",
         "DELETE_NODE_POOL": "deleting a node pool in cluster", "SET_NODE_POOL_SIZE": "resizing a node pool in cluster"}
METHOD_IDS = frozenset(f"{API}.{method}" for method, _, _ in METHODS.values())


class GkeError(Exception):
    """Answered as the HTTP response, in Google's JSON error shape."""

    def __init__(self, http_status: int, message: str, status: str | None = None):
        super().__init__(message)
        self.http_status = http_status
        self.status = status or CANONICAL_STATUS.get(http_status, "UNKNOWN")
        self.message = message

    def body(self) -> dict:
        return {"error": {"code": self.http_status, "message": self.message, "status": self.status}}


def invalid(message: str) -> GkeError:
    return GkeError(400, message)


def _int(value, field_name: str, default: int | None = None) -> int:
    if value is None or value == "":
        if default is None:
            raise invalid(f"{field_name} is required.")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid(f"Invalid value at '{field_name}' ({value!r}): not an integer.") from None


def _enum_names(value):
    """Request enums (names or numbers) as names, recursively, for the fields we interpret."""
    if isinstance(value, dict):
        return {k: (_name_of(k, v) if k in ENUMS else _enum_names(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_enum_names(v) for v in value]
    return value


def _name_of(field_name: str, value):
    table = ENUMS[field_name]
    if isinstance(value, int):
        names = [name for name, number in table.items() if number == value]
        if not names:
            raise invalid(f"Invalid value at '{field_name}' ({value}).")
        return names[0]
    if value not in table:
        raise invalid(f"Invalid value at '{field_name}' ({value!r}).")
    return value


def _status(name: str, table: list[str], ints: bool):
    return table.index(name) if ints else name


def _render(value, ints: bool):
    """Response JSON with the interpreted enums as numbers (ints) or names."""
    if isinstance(value, dict):
        return {k: (ENUMS[k][v] if ints and k in ENUMS and isinstance(v, str) else _render(v, ints))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, ints) for v in value]
    return value


@dataclass
class Pool:
    cluster: "Cluster"
    json: dict  # the node pool as served (without status, which is rendered)
    zones: list[str]
    gpu_type: str | None
    gpus_per_node: int
    spot: bool
    nodes_per_zone: int = 0
    status: str = "PROVISIONING"
    status_message: str = ""

    @property
    def name(self) -> str:
        return self.json["name"]

    def gpu_records(self, nodes_per_zone: int | None = None) -> list[InstanceRecord]:
        """What the nodes hold, one record per zone, in the form Compute's quota checks count."""
        n = self.nodes_per_zone if nodes_per_zone is None else nodes_per_zone
        if not self.gpu_type or not n or self.status == "ERROR":
            return []
        return [InstanceRecord(self.cluster.project, zone, {"name": f"gke-{self.name}", "status": "RUNNING"},
                               gpu_type=self.gpu_type, gpu_count=n * self.gpus_per_node, preemptible=self.spot)
                for zone in self.zones]


@dataclass
class Cluster:
    project: str
    location: str
    json: dict
    pools: dict[str, Pool] = field(default_factory=dict)
    status: str = "PROVISIONING"
    busy: Operation | None = None  # the operation running on this cluster

    @property
    def name(self) -> str:
        return self.json["name"]


class GkeService:
    """The GKE API of one ``Emulator`` (shares its lock, latency, faults, capacity and quota)."""

    def __init__(self, emulator):
        self.state = emulator.state
        self.clusters: dict[tuple[str, str, str], Cluster] = {}
        self.operations: dict[str, Operation] = {}
        self.active: list[Operation] = []
        self.endpoints = 0
        self.state.method_ids |= METHOD_IDS
        self.state.gpu_holders.append(self._gpu_records)

    # ------------------------------------------------------------------ service protocol

    def advance(self) -> None:
        with self.state.lock:
            now = time.monotonic()
            for op in self.active:
                op.advance(now)
            self.active = [op for op in self.active if not op.fired_done]

    def serve(self, http_method: str, path: str, query: dict, body: dict, base_url: str):
        from .server import Call

        found = PATH.match(path)
        if not found:
            return None
        p = {k: unquote(v) for k, v in found.groupdict().items() if v is not None}
        if "operation" in p and p["operation"] not in self.operations:
            return None  # another service's operation (they share this path)
        collection = ("operation" if "operation" in p else "nodePool" if "pool" in p else
                      "nodePools" if path.split(":")[0].endswith("/nodePools") else
                      "cluster" if "cluster" in p else "clusters")
        method = METHODS.get((http_method, collection, p.get("verb")))
        if method is None:
            return None
        method_id, handler, mutating = f"{API}.{method[0]}", method[1], method[2]
        ints = "enum-encoding=int" in query.get("$alt", "")
        try:
            with self.state.lock:
                self.advance()
                self._check_project(p["project"])
                fault = self.state.take_fault(method_id, p["location"])
                if fault and (fault.http_status or not mutating):
                    raise GkeError(fault.http_status or 503, fault.message or f"Injected fault: {fault.code}")
                request = Request(p, _enum_names(body), base_url, ints, fault)
                status, payload = 200, _render(getattr(self, "_" + handler)(request), ints)
        except GkeError as error:
            status, payload = error.http_status, error.body()
        except Exception as error:  # an emulator bug: answer, do not drop the connection
            status, payload = 500, GkeError(500, f"Internal error: {error!r}").body()
        return status, payload, Call(method_id, http_method, path, p["location"], mutating, status)

    def _check_project(self, project: str) -> None:
        if self.state.project and project != self.state.project:
            raise GkeError(403, f"Permission denied on resource project {project}.")

    def _gpu_records(self):
        for cluster in self.clusters.values():
            for pool in cluster.pools.values():
                yield from pool.gpu_records()

    # ------------------------------------------------------------------ lookups

    def _location(self, request: "Request") -> str:
        location = request.p["location"]
        if location not in catalog.ZONE_ACCELERATORS and location not in catalog.REGION_DESCRIPTIONS:
            raise GkeError(404, f"Location \"{location}\" does not exist.")
        return location

    def _cluster(self, request: "Request") -> Cluster:
        p = request.p
        cluster = self.clusters.get((p["project"], p["location"], p["cluster"]))
        if cluster is None:
            raise GkeError(404, f"Not found: projects/{p['project']}/locations/{p['location']}/"
                                f"clusters/{p['cluster']}.")
        return cluster

    def _pool(self, request: "Request") -> Pool:
        cluster = self._cluster(request)
        pool = cluster.pools.get(request.p["pool"])
        if pool is None:
            raise GkeError(404, f"Not found: projects/{cluster.project}/locations/{cluster.location}/"
                                f"clusters/{cluster.name}/nodePools/{request.p['pool']}.")
        return pool

    @staticmethod
    def _idle(cluster: Cluster) -> None:
        """GKE runs one operation at a time per cluster."""
        op = cluster.busy
        if op is not None and not op.fired_done:
            raise GkeError(400, f"Operation {op.name} is currently {VERBS[op.operation_type]} {cluster.name}. "
                                "Please wait and try again once it is done.",
                           "FAILED_PRECONDITION")

    # ------------------------------------------------------------------ clusters

    def _clusters_list(self, request: "Request") -> dict:
        p = request.p
        if p["location"] != "-":
            self._location(request)
        found = [self._cluster_json(c, request) for (project, location, _), c in sorted(self.clusters.items())
                 if project == p["project"] and p["location"] in ("-", location)]
        return {"clusters": found} if found else {}

    def _clusters_get(self, request: "Request") -> dict:
        return self._cluster_json(self._cluster(request), request)

    def _clusters_create(self, request: "Request") -> dict:
        location = self._location(request)
        project = request.p["project"]
        spec = request.body.get("cluster")
        if not isinstance(spec, dict):
            raise invalid("Cluster is required.")
        name = spec.get("name", "")
        if not NAME.match(name):
            raise invalid(f"Invalid value for field \"cluster.name\": \"{name}\". Must be 1-40 characters of "
                          "lowercase letters, numbers and hyphens, start with a letter and end with a letter "
                          "or number.")
        if (project, location, name) in self.clusters:
            raise GkeError(409, f"Already exists: projects/{project}/locations/{location}/clusters/{name}.")
        self._check_private(spec.get("privateClusterConfig") or {})
        self._check_networks(spec.get("masterAuthorizedNetworksConfig") or {})
        zones = spec.get("locations") or self._default_zones(location)
        region = location if location in catalog.REGION_DESCRIPTIONS else catalog.region_of(location)
        for zone in zones:
            if catalog.region_of(zone) != region or zone not in catalog.ZONE_ACCELERATORS:
                raise invalid(f"Invalid value for field \"cluster.locations\": zone \"{zone}\" is not in {location}.")
        pool_specs = spec.get("nodePools") or []
        if not pool_specs:
            initial = _int(spec.get("initialNodeCount"), "cluster.initial_node_count", 0)
            if initial <= 0:
                raise invalid("Cluster.initial_node_count must be greater than zero when no node pools are given.")
            pool_specs = [{"name": "default-pool", "initialNodeCount": initial,
                           "config": spec.get("nodeConfig") or {}}]
        cluster = Cluster(project, location, self._cluster_body(spec, project, location, zones, request))
        pools = [self._new_pool(cluster, pool_spec, request) for pool_spec in pool_specs]
        op = self._operation(request, cluster, "CREATE_CLUSTER", cluster.json["selfLink"])
        self.clusters[(project, location, name)] = cluster
        for pool in pools:
            cluster.pools[pool.name] = pool
        self._admit(op, pools, {pool.name: pool.json["initialNodeCount"] for pool in pools})
        if op.error is not None:
            cluster.status = "ERROR"
        op.on_done.append(lambda: self._cluster_up(cluster, pools))
        return self._operation_json(op, request)

    def _cluster_body(self, spec: dict, project: str, location: str, zones: list[str], request) -> dict:
        body = {k: v for k, v in spec.items() if k not in ("nodePools", "initialNodeCount", "nodeConfig")}
        self.endpoints += 1
        private = dict(body.get("privateClusterConfig") or {})
        endpoint = f"198.51.100.{self.endpoints % 250 + 1}"  # TEST-NET-2: never routable
        if private.get("enablePrivateNodes"):
            cidr = private["masterIpv4CidrBlock"].split("/")[0].rsplit(".", 1)
            private.update(privateEndpoint=f"{cidr[0]}.{int(cidr[1]) + 2}", publicEndpoint=endpoint)
            body["privateClusterConfig"] = private
        body.update(
            location=location, zone=location, locations=zones, id=uuid.uuid4().hex,
            selfLink=f"{request.base_url}/v1/projects/{project}/locations/{location}/clusters/{spec['name']}",
            endpoint=endpoint, createTime=rfc3339(), initialClusterVersion=VERSION,
            currentMasterVersion=VERSION, currentNodeVersion=VERSION,
            network=body.get("network") or "default", subnetwork=body.get("subnetwork") or "default",
            masterAuth={"clusterCaCertificate": base64.b64encode(
                b"-----BEGIN CERTIFICATE-----\ngcpgpu emulator\n-----END CERTIFICATE-----\n").decode()},
            labelFingerprint=uuid.uuid4().hex[:8])
        body.setdefault("releaseChannel", {"channel": "REGULAR"})
        body.setdefault("resourceLabels", {})
        return body

    @staticmethod
    def _default_zones(location: str) -> list[str]:
        if location in catalog.ZONE_ACCELERATORS:
            return [location]
        return catalog.zones_in_region(location)[:3]

    @staticmethod
    def _check_private(private: dict) -> None:
        if not private.get("enablePrivateNodes"):
            return
        cidr = private.get("masterIpv4CidrBlock", "")
        found = CIDR.match(cidr)
        if not found or found.group(2) != "28":
            raise invalid(f"Invalid master_ipv4_cidr_block \"{cidr}\": private clusters need a /28 range "
                          "for the control plane, e.g. 172.16.0.0/28.")

    @staticmethod
    def _check_networks(config: dict) -> None:
        for block in config.get("cidrBlocks") or []:
            if not CIDR.match(block.get("cidrBlock", "")):
                raise invalid(f"Invalid CIDR block \"{block.get('cidrBlock')}\" in master authorized networks.")

    def _cluster_up(self, cluster: Cluster, pools: list[Pool]) -> None:
        cluster.status = "RUNNING"
        for pool in pools:
            if pool.status == "PROVISIONING":
                pool.status = "RUNNING"

    def _clusters_update(self, request: "Request") -> dict:
        cluster = self._cluster(request)
        self._idle(cluster)
        update = request.body.get("update") or {}
        unsupported = sorted(set(update) - {"desiredMasterAuthorizedNetworksConfig"})
        if unsupported or not update:
            raise invalid(f"The emulator updates only desiredMasterAuthorizedNetworksConfig; got "
                          f"{', '.join(unsupported) or 'nothing'}.")
        config = update["desiredMasterAuthorizedNetworksConfig"]
        self._check_networks(config)
        op = self._operation(request, cluster, "UPDATE_CLUSTER", cluster.json["selfLink"])
        if op.error is None:
            cluster.json["masterAuthorizedNetworksConfig"] = config
            cluster.status = "RECONCILING"
            op.on_done.append(lambda: setattr(cluster, "status", "RUNNING"))
        return self._operation_json(op, request)

    def _clusters_delete(self, request: "Request") -> dict:
        cluster = self._cluster(request)
        self._idle(cluster)
        op = self._operation(request, cluster, "DELETE_CLUSTER", cluster.json["selfLink"])
        if op.error is None:
            cluster.status = "STOPPING"
            op.on_done.append(lambda: self.clusters.pop((cluster.project, cluster.location, cluster.name), None))
        return self._operation_json(op, request)

    def _cluster_json(self, cluster: Cluster, request: "Request") -> dict:
        body = dict(cluster.json, status=_status(cluster.status, CLUSTER_STATUS, request.ints),
                    nodePools=[self._pool_json(p, request) for p in cluster.pools.values()])
        body["currentNodeCount"] = sum(p.nodes_per_zone * len(p.zones) for p in cluster.pools.values())
        if not body["nodePools"]:
            del body["nodePools"]
        return body

    # ------------------------------------------------------------------ node pools

    def _new_pool(self, cluster: Cluster, spec: dict, request: "Request") -> Pool:
        if not isinstance(spec, dict) or not NAME.match(spec.get("name", "")):
            raise invalid(f"Invalid node pool name \"{(spec or {}).get('name', '')}\": 1-40 lowercase letters, "
                          "numbers and hyphens, starting with a letter.")
        config = dict(spec.get("config") or {})
        config.setdefault("machineType", "e2-medium")
        config.setdefault("diskSizeGb", 100)
        config.setdefault("imageType", "COS_CONTAINERD")
        zones = spec.get("locations") or cluster.json["locations"]
        gpu_type, per_node = self._gpus(config, zones)
        initial = _int(spec.get("initialNodeCount"), "node_pool.initial_node_count", 0)
        if initial < 0:
            raise invalid("node_pool.initial_node_count must be >= 0.")
        autoscaling = spec.get("autoscaling") or {}
        self._check_autoscaling(autoscaling)
        body = dict(spec, config=config, initialNodeCount=initial, locations=zones, version=VERSION,
                    selfLink=f"{cluster.json['selfLink']}/nodePools/{spec['name']}",
                    management=spec.get("management") or {"autoUpgrade": True, "autoRepair": True},
                    instanceGroupUrls=[
                        f"{request.base_url}/compute/v1/projects/{cluster.project}/zones/{z}/"
                        f"instanceGroupManagers/gke-{cluster.name[:20]}-{spec['name'][:12]}-grp" for z in zones])
        return Pool(cluster, body, zones, gpu_type, per_node, bool(config.get("spot") or config.get("preemptible")))

    @staticmethod
    def _gpus(config: dict, zones: list[str]) -> tuple[str | None, int]:
        machine = config["machineType"]
        for zone in zones:
            if catalog.machine_type_in_zone(zone, machine) is None:
                raise invalid(f"Machine type \"{machine}\" is not available in zone \"{zone}\".")
        spec = catalog.MACHINE_TYPES[machine]
        accelerators = config.get("accelerators") or []
        if len(accelerators) > 1:
            raise invalid("Only one accelerator type per node pool is supported.")
        if not accelerators:
            return spec.bundled_gpu, spec.bundled_gpu_count
        acc = accelerators[0]
        gpu_type, count = acc.get("acceleratorType", ""), _int(acc.get("acceleratorCount"), "accelerator_count")
        for zone in zones:
            if gpu_type not in catalog.accelerators_in_zone(zone):
                raise invalid(f"Accelerator type \"{gpu_type}\" does not exist in zone {zone}.")
        if spec.bundled_gpu and (gpu_type, count) != (spec.bundled_gpu, spec.bundled_gpu_count):
            raise invalid(f"Machine type {machine} comes with {spec.bundled_gpu_count} x {spec.bundled_gpu}; "
                          f"got {count} x {gpu_type}.")
        if not spec.bundled_gpu and (not machine.startswith("n1-")
                                     or count not in catalog.ACCELERATORS[gpu_type].n1_counts):
            raise invalid(f"{count} x {gpu_type} cannot be attached to machine type {machine}.")
        return gpu_type, count

    @staticmethod
    def _check_autoscaling(autoscaling: dict) -> None:
        if not autoscaling.get("enabled"):
            return
        low = _int(autoscaling.get("minNodeCount"), "autoscaling.min_node_count", 0)
        high = _int(autoscaling.get("maxNodeCount"), "autoscaling.max_node_count", 0)
        if low < 0 or high < 1 or low > high:
            raise invalid(f"Invalid autoscaling: min_node_count {low} and max_node_count {high} need "
                          "0 <= min <= max and max >= 1.")

    def _node_pools_list(self, request: "Request") -> dict:
        return {"nodePools": [self._pool_json(p, request) for p in self._cluster(request).pools.values()]}

    def _node_pools_get(self, request: "Request") -> dict:
        return self._pool_json(self._pool(request), request)

    def _node_pools_create(self, request: "Request") -> dict:
        cluster = self._cluster(request)
        self._idle(cluster)
        pool = self._new_pool(cluster, request.body.get("nodePool"), request)
        if pool.name in cluster.pools:
            raise GkeError(409, f"Already exists: {pool.json['selfLink'].split('/v1/', 1)[1]}.")
        op = self._operation(request, cluster, "CREATE_NODE_POOL", pool.json["selfLink"])
        cluster.pools[pool.name] = pool
        cluster.status = "RECONCILING"
        self._admit(op, [pool], {pool.name: pool.json["initialNodeCount"]})
        op.on_done.append(lambda: self._cluster_up(cluster, [pool]))
        return self._operation_json(op, request)

    def _node_pools_delete(self, request: "Request") -> dict:
        pool = self._pool(request)
        cluster = pool.cluster
        self._idle(cluster)
        op = self._operation(request, cluster, "DELETE_NODE_POOL", pool.json["selfLink"])
        if op.error is None:
            pool.status = "STOPPING"
            cluster.status = "RECONCILING"

            def gone():
                cluster.pools.pop(pool.name, None)
                cluster.status = "RUNNING"
            op.on_done.append(gone)
        return self._operation_json(op, request)

    def _node_pools_set_autoscaling(self, request: "Request") -> dict:
        pool = self._pool(request)
        self._idle(pool.cluster)
        autoscaling = request.body.get("autoscaling") or {}
        self._check_autoscaling(autoscaling)
        op = self._operation(request, pool.cluster, "UPDATE_CLUSTER", pool.json["selfLink"])
        if op.error is None:
            pool.json["autoscaling"] = autoscaling
            target = pool.nodes_per_zone
            if autoscaling.get("enabled"):
                target = min(max(target, _int(autoscaling.get("minNodeCount"), "", 0)),
                             _int(autoscaling.get("maxNodeCount"), "", 0))
            self._resize(op, pool, target)
        return self._operation_json(op, request)

    def _node_pools_set_size(self, request: "Request") -> dict:
        pool = self._pool(request)
        self._idle(pool.cluster)
        size = _int(request.body.get("nodeCount"), "node_count")
        if size < 0:
            raise invalid("node_count must be >= 0.")
        op = self._operation(request, pool.cluster, "SET_NODE_POOL_SIZE", pool.json["selfLink"])
        if op.error is None:
            self._resize(op, pool, size)
        return self._operation_json(op, request)

    def _resize(self, op: Operation, pool: Pool, nodes_per_zone: int) -> None:
        if nodes_per_zone > pool.nodes_per_zone:  # new nodes need capacity and quota
            failure = self._shortage(pool, nodes_per_zone)
            if failure:
                op.error = failure
                return
        pool.status = "RECONCILING"

        def resized():
            pool.nodes_per_zone = nodes_per_zone
            pool.status = "RUNNING"
        # Holding the new GPUs from the start keeps two resizes from both taking the last ones.
        if nodes_per_zone > pool.nodes_per_zone:
            pool.nodes_per_zone = nodes_per_zone
        op.on_done.append(resized)

    def _pool_json(self, pool: Pool, request: "Request") -> dict:
        body = dict(pool.json, status=_status(pool.status, POOL_STATUS, request.ints))
        if pool.status_message:
            body["statusMessage"] = pool.status_message
        return body

    # ------------------------------------------------------------------ capacity, quota

    def _admit(self, op: Operation, pools: list[Pool], sizes: dict[str, int]) -> None:
        """Nodes of new pools take their GPUs now; a shortage fails the operation (pool in ERROR)."""
        if op.error is not None:
            for pool in pools:
                self._fail_pool(pool, op.error["message"])
            return
        for pool in pools:
            failure = self._shortage(pool, sizes[pool.name])
            if failure:
                op.error = failure
                self._fail_pool(pool, failure["message"])
            else:
                pool.nodes_per_zone = sizes[pool.name]

    @staticmethod
    def _fail_pool(pool: Pool, message: str) -> None:
        pool.status, pool.status_message, pool.nodes_per_zone = "ERROR", message, 0

    def _shortage(self, pool: Pool, nodes_per_zone: int) -> dict | None:
        held = pool.gpu_records()
        wanted = pool.gpu_records(nodes_per_zone)
        for record in wanted:
            already = sum(r.gpu_count for r in held if r.zone == record.zone)
            record.gpu_count -= already
            if record.gpu_count <= 0:
                continue
            failure = self.state._resource_failure(pool.cluster.project, record.zone, [record])
            if failure is not None:
                code = "GCE_QUOTA_EXCEEDED" if failure.code == "QUOTA_EXCEEDED" else failure.code
                return _operation_error("RESOURCE_EXHAUSTED", _igm_message(pool, record.zone, code, failure.message))
        return None

    # ------------------------------------------------------------------ operations

    def _operation(self, request: "Request", cluster: Cluster, operation_type: str, target: str) -> Operation:
        name = f"operation-{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}"
        op = Operation(cluster.project, f"locations/{cluster.location}", name, operation_type, target, None,
                       request.base_url, self.state.latency)
        op.error = None
        if request.fault is not None:
            fault = request.fault
            message = fault.message or f"Injected fault: {fault.code}"
            if fault.code.startswith("ZONE_RESOURCE_POOL_EXHAUSTED") or fault.code.endswith("QUOTA_EXCEEDED"):
                message = f"Insufficient resources: [{fault.code}]: {message}"
            op.error = _operation_error("RESOURCE_EXHAUSTED" if "[" in message else "INTERNAL", message)
        self.operations[name] = op
        self.active.append(op)
        cluster.busy = op
        return op

    def _operations_get(self, request: "Request") -> dict:
        op = self.operations[request.p["operation"]]
        if op.project != request.p["project"]:
            raise GkeError(404, f"Not found: operation {op.name}.")
        return self._operation_json(op, request)

    def _operation_json(self, op: Operation, request: "Request") -> dict:
        now = time.monotonic()
        phase = op.phase(now)
        location = op.scope.split("/", 1)[1]
        body = {
            "name": op.name, "zone": location, "location": location,
            "operationType": op.operation_type, "status": _status(phase, OPERATION_STATUS, request.ints),
            "selfLink": f"{op.base_url}/v1/projects/{op.project}/locations/{location}/operations/{op.name}",
            "targetLink": op.target_link, "startTime": rfc3339(op.created_wall),
        }
        if phase == "DONE":
            body["endTime"] = rfc3339(op.created_wall + timedelta(seconds=op.latency))
            if op.error:
                body["error"] = op.error
                body["statusMessage"] = op.error["message"]
        elif phase == "RUNNING":
            body["detail"] = f"{op.operation_type.lower()} ({int(100 * PENDING_SHARE)}%+)"
        return body


@dataclass
class Request:
    p: dict  # project, location, cluster, pool, operation, verb: as in the path
    body: dict
    base_url: str
    ints: bool = False  # answer enums as numbers ($alt=json;enum-encoding=int)
    fault: object = None


def _operation_error(status: str, message: str) -> dict:
    return {"code": GRPC_CODE[status], "message": message}


def _igm_message(pool: Pool, zone: str, code: str, detail: str) -> str:
    """The text GKE relays when the node pool's instance group cannot create its VMs."""
    return (f"Not all instances running in IGM after 30s. Expected {pool.nodes_per_zone or 1}, running 0, "
            f"transitioning 0. Current errors: [{code}]: Instance 'gke-{pool.cluster.name[:20]}-"
            f"{pool.name[:12]}-{new_id()[-4:]}' creation failed in {zone}: {detail}")
