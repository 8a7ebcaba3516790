"""Compute Engine plumbing shared by the built-in providers: retries, operation waits, error
classification and labels. Google libraries are imported lazily (`gcpgpu --help` stays fast)."""
from __future__ import annotations

import hashlib
import json
import time
from functools import lru_cache

from gcpgpu.errors import GcpgpuError

CLUSTER_LABEL = "gcpgpu-cluster"
GROUP_LABEL = "gcpgpu-group"
DIGEST_LABEL = "gcpgpu-digest"
TTL_LABEL = "gcpgpu-ttl-hours"  # a cluster with a time to live: sweep deletes it when it runs out
STOCKOUT_CODES = {"ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"}
RATE_LIMIT_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}
OPERATION_DEADLINE_S = 1800


class OperationFailed(GcpgpuError):
    """A DONE operation carrying errors, classified by ``error.errors[].code``."""

    def __init__(self, operation):
        self.errors = [(e.code, e.message) for e in operation.error.errors]
        self.codes = {code for code, _ in self.errors}
        super().__init__("; ".join(f"{code}: {message}" for code, message in self.errors))

    @property
    def stockout(self) -> bool:
        return bool(self.codes & STOCKOUT_CODES)

    @property
    def quota(self) -> bool:
        return "QUOTA_EXCEEDED" in self.codes

    @property
    def all_regions_quota(self) -> bool:
        """A project-wide GPU quota: no other zone or region can help."""
        return self.quota and "GPUS_ALL_REGIONS" in str(self)


def is_transient(exc: Exception) -> bool:
    from google.api_core import exceptions as e

    if isinstance(exc, (e.TooManyRequests, e.InternalServerError, e.ServiceUnavailable,
                        e.BadGateway, e.GatewayTimeout)):
        return True
    if isinstance(exc, e.Forbidden):  # per-minute rate limits: wait for the next window
        reasons = {err.get("reason") for err in exc.errors or [] if isinstance(err, dict)}
        return bool(reasons & RATE_LIMIT_REASONS) or "rateLimitExceeded" in str(exc)
    return False


@lru_cache(maxsize=1)
def retry_policy():
    """Compute clients retry nothing by default; this backs off on transient errors."""
    from google.api_core.retry import Retry

    return Retry(predicate=is_transient, initial=1.0, maximum=60.0, multiplier=2.0, timeout=600.0)


def wait_zone_operation(clients, project: str, zone: str, name: str, deadline_s: float = OPERATION_DEADLINE_S):
    """Wait with zoneOperations.wait (each call blocks server-side up to ~2 min) and raise
    OperationFailed if the finished operation carries errors."""
    from google.cloud import compute_v1

    operations = clients.get(compute_v1.ZoneOperationsClient)
    return _wait(lambda: operations.wait(project=project, zone=zone, operation=name, retry=retry_policy()),
                 f"operation {name} in {zone}", deadline_s)


def wait_region_operation(clients, project: str, region: str, name: str,
                          deadline_s: float = OPERATION_DEADLINE_S):
    """wait_zone_operation for regional resources (regional groups and templates, subnetworks)."""
    from google.cloud import compute_v1

    operations = clients.get(compute_v1.RegionOperationsClient)
    return _wait(lambda: operations.wait(project=project, region=region, operation=name, retry=retry_policy()),
                 f"operation {name} in {region}", deadline_s)


def wait_global_operation(clients, project: str, name: str, deadline_s: float = OPERATION_DEADLINE_S):
    """wait_zone_operation for global resources (images, networks, firewalls, templates)."""
    from google.cloud import compute_v1

    operations = clients.get(compute_v1.GlobalOperationsClient)
    return _wait(lambda: operations.wait(project=project, operation=name, retry=retry_policy()),
                 f"global operation {name}", deadline_s)


def _wait(wait_once, what: str, deadline_s: float):
    from google.cloud import compute_v1

    deadline = time.monotonic() + deadline_s
    while True:
        operation = wait_once()
        if operation.status == compute_v1.Operation.Status.DONE:
            break
        if time.monotonic() > deadline:
            raise GcpgpuError(f"{what} not done after {deadline_s}s")
    if operation.error and operation.error.errors:
        raise OperationFailed(operation)
    return operation


def each(items: list, action, progress, describe) -> None:
    """``action(item)`` for every item, ``progress(1)`` after each, then every failure at once:
    one bad item must not keep the others from being handled. An API error is reported as
    ``describe(item): error``, a GcpgpuError with its own words."""
    from google.api_core import exceptions

    failures = []
    for item in items:
        try:
            action(item)
        except GcpgpuError as error:
            failures.append(str(error))
        except exceptions.GoogleAPICallError as error:
            failures.append(f"{describe(item)}: {error}")
        progress(1)
    if failures:
        raise GcpgpuError("\n    ".join(failures))


def label_filter(cluster: str) -> str:
    return f'labels.{CLUSTER_LABEL} = "{cluster}"'


def created_by(instance: dict) -> str:
    """The managed instance group that made an instance (GCE's ``created-by`` metadata item:
    ``projects/{project number}/zones/Z/instanceGroupManagers/NAME``), or "" for a standalone VM."""
    items = (instance.get("metadata") or {}).get("items") or []
    return next((item.get("value", "") for item in items if item.get("key") == "created-by"), "")


def digest(settings: dict) -> str:
    """A label-safe summary of the settings that force a replacement when they change."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def short_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def service_account_email(spec: dict) -> str:
    """The cluster's own service account (made by the network plugin; storage grants it access).
    Account ids are 6-30 characters of [a-z0-9-]."""
    account_id = f"gcpgpu-{spec['name']}"[:30].rstrip("-")
    return f"{account_id}@{spec['project']}.iam.gserviceaccount.com"
