"""The `mig` provider: a node group as an instance template plus a managed instance group.

Resources per node group:
* ``instanceTemplate`` ``{cluster}-{group}-{digest8}`` (stage 40, global). Templates cannot be
  edited, so the name carries the digest of the VM settings: a change makes a new template.
* ``instanceGroupManager`` ``{cluster}-{group}`` (stage 50), zonal in the cluster's zone or
  regional over ``distribution_zones``. Its ``update_digest`` covers the template and the size, so
  a count change is a resize and a settings change moves the group to the new template with a
  proactive rolling replacement, both in place (``update``).

A group out of capacity retries creating instances forever, so every wait for the group to be
stable has a deadline (``stable_timeout_s``); past it gcpgpu reads ``listErrors`` and reports the
zone and the reason, and leaves nothing half-built: a new group is deleted with its template, a
grown group is shrunk back, unless ``keep_partial: true`` keeps the nodes it made.

Managed instance groups carry no labels, so a group is ours when its template is labelled ours;
the VMs carry the template's labels (``gcpgpu-cluster``, ``gcpgpu-group``) and GCE's ``created-by``
metadata, which tells them apart from the compute provider's VMs.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from gcpgpu.errors import CapacityError, GcpgpuError
from gcpgpu.plugins import hookimpl
from gcpgpu.provider import Context, Host, Resource
from gcpgpu_plugins import compute, mig_spec
from gcpgpu_plugins.gcp import (
    CLUSTER_LABEL, DIGEST_LABEL, GROUP_LABEL, created_by, digest, label_filter, region_of, retry_policy,
    short_name, wait_global_operation, wait_region_operation, wait_zone_operation,
)

TEMPLATE = "instanceTemplate"
GROUP = "instanceGroupManager"
POLL_FIRST_S, POLL_MAX_S = 0.1, 5.0


def template_name(cluster: str, group: str, settings_digest: str) -> str:
    return f"{cluster}-{group}-{settings_digest[:8]}"


def group_name(cluster: str, group: str) -> str:
    return f"{cluster}-{group}"


def distribution_zones(spec: dict, group: dict) -> list[str]:
    """A regional group's zones: as given, or the cluster's zone and its same-region fallbacks."""
    if group["distribution_zones"]:
        return sorted(group["distribution_zones"])
    region = region_of(spec["zone"])
    return sorted({spec["zone"], *(z for z in spec.get("fallback_zones", []) if region_of(z) == region)})


def _shape(regional: bool, location: str, zones: list[str]) -> str:
    """What makes a group a different group (replace): zonal/regional, where, over which zones."""
    return digest({"regional": regional, "location": location, "zones": sorted(zones)})


def _in_place(template: str, size: int | str) -> str:
    return f"{template}/{size}"


@dataclass
class GroupRef:
    """Where a group lives, and the zonal/regional client calls for it."""

    ctx: Context
    name: str
    regional: bool
    location: str  # zone, or region when regional

    @property
    def client(self):
        from google.cloud import compute_v1

        kind = compute_v1.RegionInstanceGroupManagersClient if self.regional \
            else compute_v1.InstanceGroupManagersClient
        return self.ctx.clients.get(kind)

    @property
    def where(self) -> dict:
        return {"project": self.ctx.project, ("region" if self.regional else "zone"): self.location}

    def call(self, method: str, **kwargs):
        return getattr(self.client, method)(**self.where, instance_group_manager=self.name, **kwargs,
                                            retry=retry_policy())

    def wait(self, operation) -> None:
        wait_operation(self.ctx, operation.name, **{("region" if self.regional else "zone"): self.location})

    def get(self):
        return self.call("get")

    def errors(self) -> list:
        return list(self.call("list_errors"))


def wait_operation(ctx: Context, name: str, zone: str | None = None, region: str | None = None):
    """Wait for a zonal, regional or global operation through the factory's operations clients
    (never ExtendedOperation.result(), which polls the real Google host)."""
    if zone:
        return wait_zone_operation(ctx.clients, ctx.project, zone, name)
    if region:
        return wait_region_operation(ctx.clients, ctx.project, region, name)
    return wait_global_operation(ctx.clients, ctx.project, name)


class MigProvider:
    name = "mig"

    # ------------------------------------------------------------------ desired / live

    def desired(self, spec: dict, group_name_: str, group: dict) -> list[Resource]:
        settings = compute.group_settings(spec, group)
        settings_digest = digest(settings)
        template = Resource(provider=self.name, kind=TEMPLATE, stage=40, group=group_name_, location="global",
                            name=template_name(spec["name"], group_name_, settings_digest),
                            digest=settings_digest, body=settings)
        regional = group["regional"]
        zones = distribution_zones(spec, group) if regional else [spec["zone"]]
        location = region_of(spec["zone"]) if regional else spec["zone"]
        manager = Resource(
            provider=self.name, kind=GROUP, stage=50, group=group_name_, location=location,
            name=group_name(spec["name"], group_name_), digest=_shape(regional, location, zones),
            update_digest=_in_place(template.name, group["count"]),
            body={"template": template.name, "size": group["count"], "regional": regional, "zones": zones,
                  "stable_timeout_s": group["stable_timeout_s"], "keep_partial": group["keep_partial"],
                  "settings": settings})
        return [template, manager]

    def observe(self, ctx: Context) -> list[Resource]:
        templates = self._live_templates(ctx)
        groups = self._live_groups(ctx, {t.name: t for t in templates})
        by_path = {g.body["scopedPath"]: g for g in groups}
        for instance in self._live_instances(ctx):
            # created-by is projects/{project NUMBER}/zones/...: match on what follows the project
            owner = by_path.get(created_by(instance).split("/", 2)[-1])
            if owner is not None:
                owner.body["instances"].append(instance)
        return templates + groups

    def _live_templates(self, ctx: Context) -> list[Resource]:
        from google.cloud import compute_v1

        client = ctx.clients.get(compute_v1.InstanceTemplatesClient)
        found = []
        for template in client.list(project=ctx.project, retry=retry_policy()):
            labels = dict(template.properties.labels)
            if labels.get(CLUSTER_LABEL) != ctx.cluster:
                continue
            found.append(Resource(provider=self.name, kind=TEMPLATE, stage=40, name=template.name,
                                  group=labels.get(GROUP_LABEL, ""), location="global",
                                  digest=labels.get(DIGEST_LABEL, ""), status="READY"))
        return found

    def _live_groups(self, ctx: Context, templates: dict[str, Resource]) -> list[Resource]:
        from google.cloud import compute_v1

        client = ctx.clients.get(compute_v1.InstanceGroupManagersClient)
        request = compute_v1.AggregatedListInstanceGroupManagersRequest(
            project=ctx.project, filter=f"name eq {ctx.cluster}-.*")
        found = []
        for scope, scoped in client.aggregated_list(request=request, retry=retry_policy()):
            for manager in scoped.instance_group_managers:
                template = templates.get(short_name(manager.instance_template))
                if template is None:
                    continue  # not made from one of our templates: not ours
                regional = scope.startswith("regions/")
                location = scope.split("/", 1)[1]
                zones = ([short_name(z.zone) for z in manager.distribution_policy.zones] if regional
                         else [location])
                size = manager.target_size if manager.status.is_stable else "unstable"
                body = compute_v1.InstanceGroupManager.to_dict(manager, preserving_proto_field_name=False)
                body["scopedPath"] = f"{scope}/instanceGroupManagers/{manager.name}"
                body["instances"] = []
                found.append(Resource(
                    provider=self.name, kind=GROUP, stage=50, name=manager.name, group=template.group,
                    location=location, digest=_shape(regional, location, zones),
                    update_digest=_in_place(template.name, size),
                    status="STABLE" if manager.status.is_stable else "UPDATING", body=body))
        return found

    def _live_instances(self, ctx: Context) -> list[dict]:
        from google.cloud import compute_v1

        client = ctx.clients.get(compute_v1.InstancesClient)
        request = compute_v1.AggregatedListInstancesRequest(project=ctx.project, filter=label_filter(ctx.cluster))
        return [compute_v1.Instance.to_dict(instance, preserving_proto_field_name=False)
                for _, scoped in client.aggregated_list(request=request, retry=retry_policy())
                for instance in scoped.instances]

    def hosts(self, ctx: Context, live: list[Resource]) -> list[Host]:
        vms = [Resource(provider=self.name, kind="instance", name=vm["name"], group=group.group,
                        location=short_name(vm["zone"]), digest="", status=vm.get("status", ""), body=vm)
               for group in live if group.kind == GROUP for vm in group.body.get("instances", [])]
        return compute.ComputeProvider().hosts(ctx, sorted(vms, key=lambda r: r.name))

    # ----------------------------------------------------------------------- create

    def create(self, ctx: Context, resources: list[Resource]) -> None:
        for resource in resources:
            if resource.kind == TEMPLATE:
                self._create_template(ctx, resource)
            else:
                self._create_group(ctx, resource)
            ctx.progress(1)

    def _create_template(self, ctx: Context, resource: Resource) -> None:
        from google.api_core import exceptions
        from google.cloud import compute_v1

        client = ctx.clients.get(compute_v1.InstanceTemplatesClient)
        body = compute_v1.InstanceTemplate(
            name=resource.name, description=f"gcpgpu node group {resource.group} of {ctx.cluster}",
            properties=compute.instance_properties(ctx, resource.group, ctx.spec["node_groups"][resource.group]))
        try:
            operation = client.insert(request=_with_request_id(
                {"project": ctx.project, "instance_template_resource": body}, resource), retry=retry_policy())
            wait_operation(ctx, operation.name)
        except exceptions.Conflict:  # made by an earlier, interrupted run: adopt it if it is ours
            existing = client.get(project=ctx.project, instance_template=resource.name, retry=retry_policy())
            if existing.properties.labels.get(CLUSTER_LABEL) != ctx.cluster:
                raise GcpgpuError(f"instance template {resource.name} exists but is not labelled "
                                  f"{CLUSTER_LABEL}={ctx.cluster}; delete it or rename the cluster") from None

    def _create_group(self, ctx: Context, resource: Resource) -> None:
        from google.api_core import exceptions
        from google.cloud import compute_v1

        s = resource.body
        ref = GroupRef(ctx, resource.name, s["regional"], resource.location)
        manager = compute_v1.InstanceGroupManager(
            name=resource.name, base_instance_name=resource.name, target_size=s["size"],
            instance_template=f"projects/{ctx.project}/global/instanceTemplates/{s['template']}",
            description=f"gcpgpu node group {resource.group} of {ctx.cluster}",
            update_policy=_rolling_policy(s))
        if s["regional"]:
            manager.distribution_policy = compute_v1.DistributionPolicy(
                zones=[compute_v1.DistributionPolicyZoneConfiguration(zone=f"zones/{z}") for z in s["zones"]])
        try:
            operation = ref.client.insert(request=_with_request_id(
                {**ref.where, "instance_group_manager_resource": manager}, resource), retry=retry_policy())
            ref.wait(operation)
        except exceptions.Conflict:  # an interrupted run made it; ours if it uses our template
            template = short_name(ref.get().instance_template)
            if template not in {t.name for t in self._live_templates(ctx)}:
                raise GcpgpuError(f"instance group {resource.name} in {resource.location} exists but does "
                                  f"not use a template of {ctx.cluster}; delete it or rename the cluster") from None
        try:
            self._wait_stable(ctx, ref, s)
        except CapacityError as failure:
            raise CapacityError(f"{failure}\n    {self._clean_up_new(ctx, ref, resource)}") from None

    def _clean_up_new(self, ctx: Context, ref: GroupRef, resource: Resource) -> str:
        if resource.body["keep_partial"]:
            kept = self._shrink_to_running(ref)
            return (f"kept {kept} node(s) (keep_partial: true): the group now has size {kept}; "
                    f"re-run `up` to try to grow it to {resource.body['size']}")
        self._delete_group(ctx, ref)
        self._delete_templates(ctx, resource.group, keep=None)
        return ("deleted the group and its template (nothing left behind); retry later, try another zone "
                "or regional: true, or set keep_partial: true to keep partial capacity")

    # ----------------------------------------------------------------------- update

    def update(self, ctx: Context, resources: list[Resource]) -> None:
        for resource in resources:
            self._update_group(ctx, resource)
            ctx.progress(1)

    def _update_group(self, ctx: Context, resource: Resource) -> None:
        from google.cloud import compute_v1

        s = resource.body
        ref = GroupRef(ctx, resource.name, s["regional"], resource.location)
        live = ref.get()
        before = live.target_size
        if short_name(live.instance_template) != s["template"]:
            # Templates run before groups, but in-place updates run before creates: make it now
            # (the template's own create then finds it and adopts it).
            self._create_template(ctx, self.desired_template(ctx, resource))
            patch = compute_v1.InstanceGroupManager(
                versions=[compute_v1.InstanceGroupManagerVersion(
                    instance_template=f"projects/{ctx.project}/global/instanceTemplates/{s['template']}")],
                update_policy=_rolling_policy(s), target_size=s["size"])
            ref.wait(ref.call("patch", instance_group_manager_resource=patch))
        elif live.target_size != s["size"]:
            ref.wait(ref.call("resize", size=s["size"]))
        try:
            self._wait_stable(ctx, ref, s)
        except CapacityError as failure:
            raise CapacityError(f"{failure}\n    {self._clean_up_growth(ref, s, before)}") from None
        self._delete_templates(ctx, resource.group, keep=s["template"])

    def desired_template(self, ctx: Context, group: Resource) -> Resource:
        return next(r for r in self.desired(ctx.spec, group.group, ctx.spec["node_groups"][group.group])
                    if r.kind == TEMPLATE)

    def _clean_up_growth(self, ref: GroupRef, s: dict, before: int) -> str:
        if s["keep_partial"]:
            kept = self._shrink_to_running(ref)
            return f"kept {kept} node(s) (keep_partial: true); re-run `up` to try to grow the group to {s['size']}"
        if s["size"] > before:
            ref.wait(ref.call("resize", size=before))
            return f"resized the group back to {before} (set keep_partial: true to keep partial capacity)"
        return "the group keeps retrying; re-run `up` to wait for it again"

    def _shrink_to_running(self, ref: GroupRef) -> int:
        running = sum(1 for m in ref.call("list_managed_instances")
                      if m.current_action == "NONE" and m.instance_status == "RUNNING")
        ref.wait(ref.call("resize", size=running))
        return running

    # ------------------------------------------------------------------- stability

    def _wait_stable(self, ctx: Context, ref: GroupRef, s: dict) -> None:
        """Poll ``get`` until the group is stable on its target template, or raise CapacityError
        with what ``listErrors`` says once ``stable_timeout_s`` has passed."""
        deadline = time.monotonic() + s["stable_timeout_s"]
        pause = POLL_FIRST_S
        while True:
            manager = ref.get()
            if manager.status.is_stable and manager.status.version_target.is_reached:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, POLL_MAX_S)
        missing = manager.current_actions.creating + manager.current_actions.recreating
        raise CapacityError(
            f"group {ref.name} ({ref.location}) not stable after {s['stable_timeout_s']}s: "
            f"{missing} of {manager.target_size} x {s['settings']['machine_type']} not created:\n"
            + "\n".join(f"    {line}" for line in _summarise(ref.errors())))

    # ----------------------------------------------------------------------- delete

    def delete(self, ctx: Context, resources: list[Resource]) -> None:
        for resource in resources:
            if resource.kind == GROUP:
                regional = resource.location.count("-") == 1  # us-central1, not us-central1-a
                self._delete_group(ctx, GroupRef(ctx, resource.name, regional, resource.location))
            else:
                self._delete_template(ctx, resource)
            ctx.progress(1)

    def _delete_group(self, ctx: Context, ref: GroupRef) -> None:
        from google.api_core import exceptions

        try:
            ref.wait(ref.call("delete"))
        except exceptions.NotFound:
            pass  # already gone: the goal of a delete

    def _delete_template(self, ctx: Context, resource: Resource) -> None:
        from google.api_core import exceptions
        from google.cloud import compute_v1

        client = ctx.clients.get(compute_v1.InstanceTemplatesClient)
        try:
            wait_operation(ctx, client.delete(project=ctx.project, instance_template=resource.name,
                                              retry=retry_policy()).name)
        except exceptions.NotFound:
            pass
        except exceptions.BadRequest as error:
            group = ctx.spec["node_groups"].get(resource.group, {})
            if "resourceInUseByAnotherResource" not in str(error.errors) or group.get("provider") != self.name:
                raise GcpgpuError(f"cannot delete instance template {resource.name}: {error.message}") from None
            # Still used by its group, which this run moves to the new template (update runs after
            # deletes); the group's update deletes it once no instance uses it.
            ctx.log(f"template {resource.name} still in use by group {resource.group}; deleted after the roll-out")

    def _delete_templates(self, ctx: Context, group: str, keep: str | None) -> None:
        for template in self._live_templates(ctx):
            if template.group == group and template.name != keep:
                self._delete_template(ctx, template)


def _with_request_id(request: dict, resource: Resource) -> dict:
    """An insert request carrying the engine's request id (a retried insert is then a replay)."""
    return {**request, "request_id": resource.request_id} if resource.request_id else request


def _rolling_policy(s: dict):
    """Replace every node at once (maxUnavailable = size, no surge): GPU capacity for surge VMs is
    rarely there, and a cluster whose node settings changed is reconfigured as a whole anyway."""
    from google.cloud import compute_v1

    unavailable = max(s["size"], len(s["zones"]), 1)
    return compute_v1.InstanceGroupManagerUpdatePolicy(
        type_="PROACTIVE", minimal_action="REPLACE", replacement_method="SUBSTITUTE",
        max_surge=compute_v1.FixedOrPercent(fixed=0),
        max_unavailable=compute_v1.FixedOrPercent(fixed=unavailable))


def _summarise(errors: list) -> list[str]:
    """listErrors entries as 'zone: CODE: message (N attempts)', most frequent first."""
    counts: Counter = Counter()
    for entry in errors:
        instance = entry.instance_action_details.instance
        zone = instance.split("/zones/")[1].split("/")[0] if "/zones/" in instance else "?"
        counts[(zone, entry.error.code, entry.error.message)] += 1
    if not counts:
        return ["the group reported no errors (instances still being created: raise stable_timeout_s)"]
    return [f"{zone}: {code}: {message} ({n} attempt{'s' if n > 1 else ''})"
            for (zone, code, message), n in counts.most_common()]


@hookimpl
def gcpgpu_schema():
    return mig_spec.SCHEMA_FRAGMENT


@hookimpl
def gcpgpu_validate(spec):
    return mig_spec.validate(spec)


@hookimpl
def gcpgpu_register_providers(register):
    register(MigProvider())
