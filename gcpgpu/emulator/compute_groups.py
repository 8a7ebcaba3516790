"""Instance templates and managed instance groups (zonal and regional) of the Compute emulator.

``InstanceGroupsMixin`` is mixed into ``ComputeState``: its handlers run under the same lock, and
a group's instances are made exactly as ``instances.insert`` makes them (``build_instance``, the
same quota, capacity and injected ``compute.instances.insert`` faults, node binding, operations
with the emulator's latency).

Modelling choices worth knowing:
* A group converges in ``advance_groups`` (called on every emulator tick): it creates instances up
  to ``targetSize``, deletes the newest ones above it, recreates instances deleted or preempted
  behind its back, and, when ``updatePolicy.type`` is PROACTIVE, replaces instances of an old
  template (``maxUnavailable`` at a time; ``maxSurge`` is accepted but surge instances are not
  modelled). ``replacementMethod`` RECREATE keeps instance names, SUBSTITUTE picks new ones.
* A creation refused for capacity or quota is retried every ``latency`` seconds forever, as GCE
  does: the group stays unstable (``currentActions.creating`` > 0) and every attempt adds a
  ``listErrors`` entry (e.g. ZONE_RESOURCE_POOL_EXHAUSTED with the zone in the message).
* Instances get the metadata items ``created-by`` (the group's partial URL, with a project
  number as GCE writes it) and ``instance-template``; their labels come from the template.
* A regional group spreads instances evenly over ``distributionPolicy.zones`` (targetShape EVEN).
* Deleting a template a group still uses fails with 400 resourceInUseByAnotherResource.
"""

from __future__ import annotations

import copy
import hashlib
import random
import string
import time
from dataclasses import dataclass, field
from functools import cached_property

from . import catalog
from .errors import ApiError, OperationError, already_exists, fingerprint_mismatch, invalid, not_found
from .filters import compile_filter
from .instance_body import build_instance, check_name, validate_labels
from .records import GLOBAL, ApiRequest, InstanceRecord, int_field
from .resources import fingerprint, new_id, parse_reference, rfc3339

MIG_USER = "cloudservices@gcpgpu-emulator.invalid"  # GCE shows the Google APIs service agent
MAX_ERRORS = 200  # listErrors keeps the most recent attempts
ACTIONS = ("abandoning", "creating", "creatingWithoutRetries", "deleting", "none", "recreating",
           "refreshing", "restarting", "resuming", "starting", "stopping", "suspending", "verifying")
PATCHABLE = ("description", "targetSize", "updatePolicy", "versions", "instanceTemplate", "autoHealingPolicies",
             "namedPorts")


@dataclass
class ManagedVm:
    """One slot of a group: the instance it has (or is trying to create)."""

    name: str
    zone: str
    template: str  # URL of the template the instance is (to be) made from
    record: InstanceRecord | None = None
    action: str = "CREATING"  # CREATING, NONE, DELETING, RECREATING
    next_attempt: float = 0.0
    last_error: OperationError | None = None


@dataclass
class GroupRecord:
    project: str
    scope: str  # "zones/{zone}" or "regions/{region}"
    resource: dict
    base_url: str
    zones: list[str]
    vms: list[ManagedVm] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    deleting: bool = False

    @property
    def name(self) -> str:
        return self.resource["name"]

    @property
    def partial_url(self) -> str:
        return f"projects/{self.project}/{self.scope}/instanceGroupManagers/{self.name}"


class InstanceGroupsMixin:
    """Handlers for instanceTemplates, regionInstanceTemplates, instanceGroupManagers and
    regionInstanceGroupManagers, for ``ComputeState``: they use its lock-held helpers for
    listing, operations, admission (quota, capacity, faults) and storing/removing instances."""

    @cached_property
    def templates(self) -> dict[tuple[str, str, str], dict]:
        return {}

    @cached_property
    def groups(self) -> dict[tuple[str, str, str], GroupRecord]:
        return {}

    # ============================================================== instance templates

    def _template_scope(self, request: ApiRequest) -> str:
        if "region" in request.params:
            return f"regions/{request.region}"
        return GLOBAL

    def instance_templates_insert(self, request: ApiRequest) -> dict:
        scope = self._template_scope(request)
        body = request.body
        name = body.get("name", "")
        check_name(name, "resource.name")
        key = (request.project, scope, name)
        if key in self.templates:
            raise already_exists(f"projects/{request.project}/{scope}/instanceTemplates/{name}")
        properties = _validated_properties(body.get("properties"))
        link = f"{request.links.project_path()}/{scope}/instanceTemplates/{name}"
        resource = {"kind": "compute#instanceTemplate", "id": new_id(), "creationTimestamp": rfc3339(),
                    "name": name, "description": body.get("description", ""),
                    "properties": properties, "selfLink": link}
        if scope != GLOBAL:
            resource["region"] = request.links.region(scope.split("/")[1])
        op = self._group_operation(request, "insert", link, resource["id"])
        if op.error is None:
            self.templates[key] = resource
        return op.to_json()

    def _existing_template(self, request: ApiRequest) -> dict:
        scope = self._template_scope(request)
        name = request.params["instanceTemplate"]
        template = self.templates.get((request.project, scope, name))
        if template is None:
            raise not_found(f"projects/{request.project}/{scope}/instanceTemplates/{name}")
        return template

    def instance_templates_get(self, request: ApiRequest) -> dict:
        return _copy(self._existing_template(request))

    def instance_templates_list(self, request: ApiRequest) -> dict:
        scope = self._template_scope(request)
        items = [_copy(t) for (project, s, _), t in sorted(self.templates.items())
                 if project == request.project and s == scope]
        return self._list_response(request, "compute#instanceTemplateList", f"{scope}/instanceTemplates", items)

    def instance_templates_delete(self, request: ApiRequest) -> dict:
        template = self._existing_template(request)
        users = [g.partial_url for g in self.groups.values() if _uses(g, template["selfLink"])]
        if users:
            path = template["selfLink"].split("/compute/v1/")[1]
            raise ApiError(400, "resourceInUseByAnotherResource",
                           f"The instance_template resource '{path}' is already being used by '{users[0]}'")
        op = self._group_operation(request, "delete", template["selfLink"], template["id"])
        if op.error is None:
            key = (request.project, self._template_scope(request), template["name"])
            op.on_done.append(lambda: self.templates.pop(key, None))
        return op.to_json()

    def _template_by_url(self, project: str, url: str, field_name: str) -> dict:
        parts = parse_reference(url or "")
        scope = f"regions/{parts['regions']}" if "regions" in parts else GLOBAL
        template = self.templates.get((parts.get("projects", project), scope, parts["name"]))
        if template is None:
            raise invalid(f"Invalid value for field '{field_name}': '{url}'. "
                          "The referenced instance template resource cannot be found.")
        return template

    # ========================================================= instance group managers

    def _group_scope(self, request: ApiRequest) -> str:
        if "region" in request.params:
            return f"regions/{request.region}"
        return f"zones/{self._zone(request)}"

    def instance_group_managers_insert(self, request: ApiRequest) -> dict:
        scope = self._group_scope(request)
        body = request.body
        name = body.get("name", "")
        check_name(name, "resource.name")
        key = (request.project, scope, name)
        if key in self.groups:
            raise already_exists(f"projects/{request.project}/{scope}/instanceGroupManagers/{name}")
        target_size = int_field(body.get("targetSize"), "resource.targetSize")
        if target_size < 0:
            raise invalid(f"Invalid value for field 'resource.targetSize': '{target_size}'. Must be >= 0.")
        template_url = _version_template(body) or ""
        template = self._template_by_url(request.project, template_url, "resource.instanceTemplate")
        zones = self._distribution_zones(request, scope, body)
        base_name = body.get("baseInstanceName") or name
        check_name(base_name, "resource.baseInstanceName")
        link = f"{request.links.project_path()}/{scope}/instanceGroupManagers/{name}"
        resource = {
            "kind": "compute#instanceGroupManager", "id": new_id(), "creationTimestamp": rfc3339(),
            "name": name, "description": body.get("description", ""),
            "instanceTemplate": template["selfLink"],
            "versions": [{"instanceTemplate": template["selfLink"], "name": (body.get("versions") or [{}])[0]
                          .get("name", "")}],
            "instanceGroup": f"{request.links.project_path()}/{scope}/instanceGroups/{name}",
            "baseInstanceName": base_name, "fingerprint": fingerprint([name, 0]),
            "targetSize": target_size, "targetStoppedSize": 0, "targetSuspendedSize": 0,
            "updatePolicy": _update_policy(body.get("updatePolicy") or {}, len(zones)),
            "namedPorts": body.get("namedPorts", []), "autoHealingPolicies": body.get("autoHealingPolicies", []),
            "listManagedInstancesResults": "PAGELESS", "selfLink": link, "satisfiesPzi": False,
            "satisfiesPzs": False,
        }
        if scope.startswith("zones/"):
            resource["zone"] = request.links.zone(zones[0])
        else:
            resource["region"] = request.links.region(scope.split("/")[1])
            resource["distributionPolicy"] = {"zones": [{"zone": request.links.zone(z)} for z in zones],
                                              "targetShape": "EVEN"}
        op = self._group_operation(request, "compute.instanceGroupManagers.insert", link, resource["id"])
        if op.error is None:
            self.groups[key] = GroupRecord(request.project, scope, resource, request.base_url, zones)
        return op.to_json()

    def _distribution_zones(self, request: ApiRequest, scope: str, body: dict) -> list[str]:
        if scope.startswith("zones/"):
            return [scope.split("/")[1]]
        region = scope.split("/")[1]
        wanted = [parse_reference(z.get("zone", ""))["name"]
                  for z in (body.get("distributionPolicy") or {}).get("zones", [])]
        for zone in wanted:
            if zone not in catalog.zones_in_region(region):
                raise invalid(f"Invalid value for field 'resource.distributionPolicy.zones': '{zone}'. "
                              f"Zone must be in region '{region}'.")
        return wanted or catalog.zones_in_region(region)

    def _existing_group(self, request: ApiRequest) -> GroupRecord:
        scope = self._group_scope(request)
        name = request.params["instanceGroupManager"]
        group = self.groups.get((request.project, scope, name))
        if group is None:
            raise not_found(f"projects/{request.project}/{scope}/instanceGroupManagers/{name}")
        return group

    def instance_group_managers_get(self, request: ApiRequest) -> dict:
        return self._group_json(self._existing_group(request))

    def instance_group_managers_list(self, request: ApiRequest) -> dict:
        scope = self._group_scope(request)
        items = [self._group_json(g) for (project, s, _), g in sorted(self.groups.items())
                 if project == request.project and s == scope]
        kind = "compute#regionInstanceGroupManagerList" if scope.startswith("regions/") \
            else "compute#instanceGroupManagerList"
        return self._list_response(request, kind, f"{scope}/instanceGroupManagers", items)

    def instance_group_managers_aggregated_list(self, request: ApiRequest) -> dict:
        from .compute import _no_results_warning  # compute imports this module: import late

        scopes = [f"zones/{z}" for z in catalog.ZONE_ACCELERATORS] + \
                 [f"regions/{r}" for r in catalog.REGION_DESCRIPTIONS]
        flat = [(g.scope, self._group_json(g)) for (project, _, _), g in sorted(self.groups.items())
                if project == request.project]
        matches = compile_filter(request.query.get("filter"))
        page, next_token = self._page(request, [(s, item) for s, item in flat if matches(item)])
        items = {}
        for scope in scopes:
            on_page = [item for s, item in page if s == scope]
            items[scope] = ({"instanceGroupManagers": on_page} if on_page
                            else {"warning": _no_results_warning(scope)})
        body = {"kind": "compute#instanceGroupManagerAggregatedList",
                "id": f"projects/{request.project}/aggregated/instanceGroupManagers", "items": items,
                "selfLink": f"{request.links.project_path()}/aggregated/instanceGroupManagers"}
        if next_token:
            body["nextPageToken"] = next_token
        return body

    def instance_group_managers_delete(self, request: ApiRequest) -> dict:
        group = self._existing_group(request)
        op = self._group_operation(request, "compute.instanceGroupManagers.delete", group.resource["selfLink"],
                                   group.resource["id"])
        if op.error is None and not group.deleting:
            group.deleting = True
            for vm in group.vms:
                vm.action = "DELETING"
            op.on_done.append(lambda: self._remove_group(group))
        return op.to_json()

    def _remove_group(self, group: GroupRecord) -> None:
        for vm in group.vms:
            if vm.record is not None:
                self._remove_instance(vm.record)
        self.groups.pop((group.project, group.scope, group.name), None)

    def instance_group_managers_resize(self, request: ApiRequest) -> dict:
        group = self._existing_group(request)
        size = int_field(request.query.get("size"), "size")
        if size < 0:
            raise invalid(f"Invalid value for field 'size': '{size}'. Must be greater than or equal to 0.")
        op = self._group_operation(request, "compute.instanceGroupManagers.resize",
                                   group.resource["selfLink"], group.resource["id"])
        if op.error is None:
            group.resource["targetSize"] = size
        return op.to_json()

    def instance_group_managers_set_instance_template(self, request: ApiRequest) -> dict:
        group = self._existing_group(request)
        template = self._template_by_url(request.project, request.body.get("instanceTemplate", ""),
                                         "instanceTemplate")
        op = self._group_operation(request, "compute.instanceGroupManagers.setInstanceTemplate",
                                   group.resource["selfLink"], group.resource["id"])
        if op.error is None:
            self._point_at(group, template["selfLink"], group.resource["versions"][0].get("name", ""))
        return op.to_json()

    def instance_group_managers_patch(self, request: ApiRequest) -> dict:
        group = self._existing_group(request)
        body = request.body
        if body.get("fingerprint") and body["fingerprint"] != group.resource["fingerprint"]:
            raise fingerprint_mismatch()
        unknown = sorted(set(body) - set(PATCHABLE) - {"fingerprint", "name"})
        if unknown:
            raise invalid(f"Invalid value for field 'resource.{unknown[0]}': the emulator cannot patch it.")
        template_url = _version_template(body)
        template = self._template_by_url(request.project, template_url, "resource.versions[0].instanceTemplate") \
            if template_url else None
        if "targetSize" in body:
            size = int_field(body["targetSize"], "resource.targetSize")
        op = self._group_operation(request, "compute.instanceGroupManagers.patch",
                                   group.resource["selfLink"], group.resource["id"])
        if op.error is None:
            if template:
                self._point_at(group, template["selfLink"], (body.get("versions") or [{}])[0].get("name", ""))
            if "updatePolicy" in body:
                merged = {**group.resource["updatePolicy"], **body["updatePolicy"]}
                group.resource["updatePolicy"] = _update_policy(merged, len(group.zones))
            if "targetSize" in body:
                group.resource["targetSize"] = size
            for key in ("description", "namedPorts", "autoHealingPolicies"):
                if key in body:
                    group.resource[key] = body[key]
        return op.to_json()

    def _point_at(self, group: GroupRecord, template_url: str, version_name: str) -> None:
        group.resource["instanceTemplate"] = template_url
        group.resource["versions"] = [{"instanceTemplate": template_url, "name": version_name}]
        group.resource["fingerprint"] = fingerprint([group.name, template_url, time.monotonic()])

    def instance_group_managers_list_managed_instances(self, request: ApiRequest) -> dict:
        group = self._existing_group(request)
        return {"managedInstances": [self._managed_json(group, vm) for vm in group.vms]}

    def instance_group_managers_list_errors(self, request: ApiRequest) -> dict:
        group = self._existing_group(request)
        page, next_token = self._page(request, [_copy(e) for e in reversed(group.errors)])  # newest first
        body: dict = {"items": page} if page else {}
        if next_token:
            body["nextPageToken"] = next_token
        return body

    # ---------------------------------------------------------------------- JSON

    def _group_json(self, group: GroupRecord) -> dict:
        resource = _copy(group.resource)
        counts = dict.fromkeys(ACTIONS, 0)
        for vm in group.vms:
            counts[vm.action.lower() if vm.action != "NONE" else "none"] += 1
        target = group.resource["instanceTemplate"]
        reached = all(vm.template == target for vm in group.vms)
        stable = not group.deleting and counts["none"] == len(group.vms) == resource["targetSize"]
        resource["currentActions"] = counts
        resource["status"] = {"isStable": stable, "versionTarget": {"isReached": reached},
                              "stateful": {"hasStatefulConfig": False,
                                           "perInstanceConfigs": {"allEffective": True}}}
        return resource

    def _managed_json(self, group: GroupRecord, vm: ManagedVm) -> dict:
        managed = {"instance": f"{group.base_url}/compute/v1/projects/{group.project}/zones/{vm.zone}"
                               f"/instances/{vm.name}",
                   "name": vm.name, "currentAction": vm.action, "version": {"instanceTemplate": vm.template},
                   "targetStatus": "RUNNING"}
        if vm.record is not None and self.instances.get(_key(vm.record)) is vm.record:
            managed["id"] = vm.record.resource["id"]
            managed["instanceStatus"] = vm.record.status
        if vm.last_error is not None:
            managed["lastAttempt"] = {"errors": {"errors": [{"code": vm.last_error.code,
                                                             "message": vm.last_error.message}]}}
        return managed

    # ----------------------------------------------------------------- operations

    def _group_operation(self, request: ApiRequest, operation_type: str, target_link: str, target_id: str):
        """A zonal, regional or global operation for a template/group call, with injected faults
        and request-id replay as for instances."""
        scope = self._operation_scope(request)
        op = self._register_operation(request.project, scope, operation_type, request.base_url,
                                      target_link=target_link, target_id=target_id)
        if request.fault is not None:
            op.error = request.fault.operation_error(request.project, request.params.get("zone"))
        if request.request_id:
            self.operations_by_request_id[(request.project, request.request_id)] = op
        return op

    # ============================================================= reconciliation

    def advance_groups(self) -> None:
        """Move every group one step towards its target (under the state lock)."""
        now = time.monotonic()
        for group in list(self.groups.values()):
            if not group.deleting:
                self._reconcile(group, now)

    def _reconcile(self, group: GroupRecord, now: float) -> None:
        self._notice_lost_instances(group)
        self._resize_towards_target(group)
        self._roll_out(group)
        for vm in group.vms:
            if vm.action in ("CREATING", "RECREATING") and vm.record is None and now >= vm.next_attempt:
                self._try_create(group, vm, now)
            elif vm.action in ("CREATING", "RECREATING") and vm.record is not None \
                    and vm.record.status == "RUNNING":
                vm.action, vm.last_error = "NONE", None

    def _notice_lost_instances(self, group: GroupRecord) -> None:
        """Instances deleted behind the group's back are recreated; preempted ones too."""
        for vm in group.vms:
            if vm.record is None or vm.action == "DELETING":
                continue
            if self.instances.get(_key(vm.record)) is not vm.record:
                vm.record, vm.action = None, "RECREATING"
            elif vm.record.status == "TERMINATED":
                self._remove_instance(vm.record)
                vm.record, vm.action = None, "RECREATING"

    def _resize_towards_target(self, group: GroupRecord) -> None:
        target = group.resource["targetSize"]
        alive = [vm for vm in group.vms if vm.action != "DELETING"]
        if len(alive) < target:
            template = group.resource["instanceTemplate"]
            for _ in range(target - len(alive)):
                group.vms.append(ManagedVm(self._new_vm_name(group), self._next_zone(group), template))
        elif len(alive) > target:
            # Slots still waiting for capacity go first, then the newest instances.
            order = [vm for vm in reversed(alive) if vm.record is None] + \
                    [vm for vm in reversed(alive) if vm.record is not None]
            for vm in order[: len(alive) - target]:
                self._delete_vm(group, vm)

    def _roll_out(self, group: GroupRecord) -> None:
        policy = group.resource["updatePolicy"]
        target = group.resource["instanceTemplate"]
        if policy["type"] != "PROACTIVE":
            return
        outdated = [vm for vm in group.vms if vm.template != target and vm.action == "NONE"]
        busy = sum(1 for vm in group.vms if vm.action != "NONE")
        budget = max(1, _allowed(policy["maxUnavailable"], group.resource["targetSize"])) - busy
        for vm in outdated[:max(0, budget)]:
            self._replace_vm(group, vm, keep_name=policy.get("replacementMethod") == "RECREATE")

    def _replace_vm(self, group: GroupRecord, vm: ManagedVm, keep_name: bool) -> None:
        if vm.record is not None:
            self._delete_instance_of(group, vm.record)
        vm.record, vm.action, vm.template = None, "RECREATING", group.resource["instanceTemplate"]
        vm.next_attempt = time.monotonic() + self.latency  # the old instance goes first
        if not keep_name:
            vm.name = self._new_vm_name(group)

    def _delete_vm(self, group: GroupRecord, vm: ManagedVm) -> None:
        vm.action = "DELETING"
        if vm.record is None:
            group.vms.remove(vm)
            return
        op = self._delete_instance_of(group, vm.record)
        op.on_done.append(lambda: vm in group.vms and group.vms.remove(vm))

    def _delete_instance_of(self, group: GroupRecord, record: InstanceRecord):
        record.status = "STOPPING"
        op = self._register_operation(group.project, f"zones/{record.zone}", "delete", group.base_url,
                                      target_link=record.resource["selfLink"], target_id=record.resource["id"],
                                      user=MIG_USER)
        op.on_done.append(lambda: self._remove_instance(record))
        return op

    def _try_create(self, group: GroupRecord, vm: ManagedVm, now: float) -> None:
        """One attempt to create a slot's instance, through the instances.insert admission path."""
        vm.next_attempt = now + max(self.latency, 0.05)
        key = (group.project, vm.zone, vm.name)
        if key in self.instances:  # the name is taken (e.g. the old instance is still deleting)
            return
        template = self.templates.get(_template_key(group.project, vm.template))
        if template is None:
            return self._record_error(group, vm, OperationError("RESOURCE_NOT_FOUND", f"{vm.template} not found"))
        request = ApiRequest("compute.instances.insert", group.project, {"zone": vm.zone}, {}, {}, group.base_url)
        try:
            record = build_instance(request, vm.zone, vm.name, self._instance_properties(group, template),
                                    "instanceTemplate.properties")
        except ApiError as error:
            return self._record_error(group, vm, OperationError(error.reason, error.message))
        fault = self.take_fault("compute.instances.insert", vm.zone)
        failure = fault.operation_error(group.project, vm.zone) if fault and not fault.http_status \
            else self._resource_failure(group.project, vm.zone, [record])
        if failure is not None:
            return self._record_error(group, vm, failure)
        op = self._register_operation(group.project, f"zones/{vm.zone}", "insert", group.base_url,
                                      target_link=record.resource["selfLink"], target_id=record.resource["id"],
                                      user=MIG_USER)
        self._admit_and_create(request, vm.zone, op, [record], min_count=1)
        vm.record = record

    def _instance_properties(self, group: GroupRecord, template: dict) -> dict:
        properties = _copy(template["properties"])
        metadata = properties.setdefault("metadata", {})
        metadata["items"] = [item for item in metadata.get("items") or []
                             if item.get("key") not in ("created-by", "instance-template")] + [
            {"key": "created-by", "value": f"projects/{project_number(group.project)}/{group.scope}"
                                           f"/instanceGroupManagers/{group.name}"},
            {"key": "instance-template", "value": template["selfLink"].split("/compute/v1/")[1]},
        ]
        return properties

    def _record_error(self, group: GroupRecord, vm: ManagedVm, error: OperationError) -> None:
        vm.last_error = error
        group.errors.append({
            "error": {"code": error.code, "message": error.message},
            "instanceActionDetails": {
                "action": vm.action,
                "instance": f"{group.base_url}/compute/v1/projects/{group.project}/zones/{vm.zone}"
                            f"/instances/{vm.name}",
                "version": {"instanceTemplate": vm.template}},
            "timestamp": rfc3339(),
        })
        del group.errors[:-MAX_ERRORS]

    def _new_vm_name(self, group: GroupRecord) -> str:
        taken = {vm.name for vm in group.vms} | {name for (_, _, name) in self.instances}
        while True:
            suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=4))
            name = f"{group.resource['baseInstanceName']}-{suffix}"
            if name not in taken:
                return name

    @staticmethod
    def _next_zone(group: GroupRecord) -> str:
        """EVEN distribution: the zone with the fewest of the group's instances."""
        alive = [vm.zone for vm in group.vms if vm.action != "DELETING"]
        return min(group.zones, key=lambda z: (alive.count(z), group.zones.index(z)))


# ---------------------------------------------------------------------- helpers

def project_number(project: str) -> str:
    """A stable stand-in for the project number GCE puts in ``created-by`` (not the project id)."""
    return str(int(hashlib.sha256(project.encode()).hexdigest()[:10], 16) % 10**12)


def _copy(value):
    return copy.deepcopy(value)


def _key(record: InstanceRecord) -> tuple[str, str, str]:
    return (record.project, record.zone, record.name)


def _template_key(project: str, url: str) -> tuple[str, str, str]:
    parts = parse_reference(url)
    scope = f"regions/{parts['regions']}" if "regions" in parts else GLOBAL
    return (parts.get("projects", project), scope, parts["name"])


def _uses(group: GroupRecord, template_link: str) -> bool:
    return group.resource["instanceTemplate"] == template_link or any(
        vm.template == template_link for vm in group.vms)


def _version_template(body: dict) -> str | None:
    versions = body.get("versions") or []
    if len(versions) > 1:
        raise invalid("Invalid value for field 'resource.versions': the emulator supports one version.")
    return (versions[0].get("instanceTemplate") if versions else None) or body.get("instanceTemplate")


def _validated_properties(properties) -> dict:
    """What GCE checks on a template without a zone; the rest is checked when instances are made
    (machine types are bare names in templates)."""
    if not isinstance(properties, dict) or not properties:
        raise invalid("Invalid value for field 'resource.properties': ''. Properties must be specified.")
    machine_type = properties.get("machineType", "")
    if not machine_type or "/" in machine_type:
        raise invalid(f"Invalid value for field 'resource.properties.machineType': '{machine_type}'. "
                      "Must be the name of a machine type, not a URL.")
    if not properties.get("disks"):
        raise invalid("Invalid value for field 'resource.properties.disks': ''. No disks are specified.")
    validate_labels(properties.get("labels") or {}, "resource.properties")
    return _copy(properties)


def _fixed_or_percent(value: dict | None, default: int) -> dict:
    value = {k: v for k, v in (value or {"fixed": default}).items() if k != "calculated"}
    if "percent" not in value:
        value["fixed"] = int(value.get("fixed", default))
        value["calculated"] = value["fixed"]
    return value


def _allowed(value: dict, target_size: int) -> int:
    if "percent" in value:
        return int(value["percent"]) * target_size // 100
    return int(value["fixed"])


def _update_policy(requested: dict, zone_count: int) -> dict:
    policy_type = requested.get("type", "PROACTIVE")
    if policy_type not in ("PROACTIVE", "OPPORTUNISTIC"):
        raise invalid(f"Invalid value for field 'resource.updatePolicy.type': '{policy_type}'.")
    return {
        "type": policy_type,
        "minimalAction": requested.get("minimalAction", "REPLACE"),
        "maxSurge": _fixed_or_percent(requested.get("maxSurge"), zone_count),
        "maxUnavailable": _fixed_or_percent(requested.get("maxUnavailable"), zone_count),
        "replacementMethod": requested.get("replacementMethod", "SUBSTITUTE"),
        **({"instanceRedistributionType": requested["instanceRedistributionType"]}
           if "instanceRedistributionType" in requested else {}),
    }
