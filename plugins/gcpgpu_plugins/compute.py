"""The `compute` provider: one Compute Engine VM per node of a node group.

Creates with one ``instances.bulkInsert`` per group and zone (all-or-nothing), falling back
through ``fallback_zones`` on stockouts and regional quota; reads live state with one
``aggregatedList`` filtered on the cluster label; deletes one instance per call (the API has no
bulk delete) with the waits in parallel.
"""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from gcpgpu.errors import CapacityError, GcpgpuError
from gcpgpu.plugins import hookimpl
from gcpgpu.provider import Context, Host, Resource
from gcpgpu.report import URLS_VAR
from gcpgpu_plugins import compute_spec, network, service_account
from gcpgpu_plugins.gcp import (
    CLUSTER_LABEL, DIGEST_LABEL, GROUP_LABEL, TTL_LABEL, OperationFailed, created_by, digest, label_filter,
    region_of, retry_policy, short_name, wait_zone_operation,
)

KIND = "instance"
IMPLICIT_GPU_FAMILIES = ("a2-", "a3-", "g2-")  # these machine types carry their GPUs themselves
DELETE_PARALLELISM = 16
PROXY_URL_KEY = "proxy-url"


def instance_name(cluster: str, group: str, index: int) -> str:
    return f"{cluster}-{group}-{index:04d}"


def group_settings(spec: dict, group: dict) -> dict:
    """Everything about a group's VMs that requires a new VM when it changes."""
    keys = ("machine_type", "accelerator", "image", "disk", "spot", "metadata", "tags")
    return ({k: group.get(k) for k in keys} | {"labels": {**spec["labels"], **group["labels"]}}
            | network.instance_settings(spec))


def instance_properties(ctx: Context, group_name: str, group: dict, zone: str | None = None):
    """The ``compute_v1.InstanceProperties`` of a node group's VMs in ``zone`` (default: the
    cluster's zone; it picks the subnets): the body bulkInsert sends, and the one an instance
    template can reuse."""
    settings = group_settings(ctx.spec, group)
    return _properties(ctx, group_name, settings, digest(settings), zone or ctx.spec["zone"])


class ComputeProvider:
    name = "compute"

    def desired(self, spec: dict, group_name: str, group: dict) -> list[Resource]:
        settings = group_settings(spec, group)
        return [Resource(provider=self.name, kind=KIND, name=instance_name(spec["name"], group_name, i),
                         group=group_name, location=spec["zone"], digest=digest(settings),
                         body=settings)
                for i in range(group["count"])]

    def observe(self, ctx: Context) -> list[Resource]:
        from google.cloud import compute_v1

        client = ctx.clients.get(compute_v1.InstancesClient)
        request = compute_v1.AggregatedListInstancesRequest(
            project=ctx.project, filter=label_filter(ctx.cluster))
        found = []
        for _, scoped in client.aggregated_list(request=request, retry=retry_policy()):
            for instance in scoped.instances:
                labels = dict(instance.labels)
                body = compute_v1.Instance.to_dict(instance, preserving_proto_field_name=False)
                if created_by(body) or "goog-gke-node" in body.get("labels", {}):
                    continue  # a managed group's or GKE's VM: the mig / gke provider owns it
                found.append(Resource(
                    provider=self.name, kind=KIND, name=instance.name,
                    group=labels.get(GROUP_LABEL, ""), location=short_name(instance.zone),
                    digest=labels.get(DIGEST_LABEL, ""), status=instance.status, body=body))
        return found

    def create(self, ctx: Context, resources: list[Resource]) -> None:
        first = resources[0]  # a batch is one group: same settings for all
        names = [r.name for r in resources]
        batch_id = uuid.uuid5(uuid.NAMESPACE_URL, ",".join(sorted(r.request_id for r in resources)))
        zones = [ctx.spec["zone"], *ctx.spec.get("fallback_zones", [])]
        tried, quota_regions = [], set()
        for zone in zones:
            if region_of(zone) in quota_regions:
                continue
            try:
                # A different request id per zone: the API would replay a failed zone's result.
                self._bulk_insert(ctx, zone, first, names, str(uuid.uuid5(batch_id, zone)))
                ctx.progress(len(names))
                return
            except OperationFailed as failure:
                if failure.all_regions_quota:
                    raise CapacityError(f"{failure} (GPUS_ALL_REGIONS is project-wide: no other "
                                        "zone can help; request a quota increase)") from None
                if not (failure.stockout or failure.quota):
                    raise
                if failure.quota:
                    quota_regions.add(region_of(zone))
                tried.append(f"{zone}: {failure}")
                ctx.log(f"{zone}: {failure}; trying the next zone")
        raise CapacityError(
            f"could not create {len(names)} x {first.body['machine_type']} in any zone tried:\n"
            + "\n".join(f"    {t}" for t in tried)
            + "\n    add zones to fallback_zones, lower count, or retry later")

    def _bulk_insert(self, ctx: Context, zone: str, template: Resource, names: list[str],
                     request_id: str) -> None:
        from google.cloud import compute_v1

        client = ctx.clients.get(compute_v1.InstancesClient)
        resource = compute_v1.BulkInsertInstanceResource(
            count=len(names), min_count=len(names),
            per_instance_properties={n: compute_v1.BulkInsertInstanceResourcePerInstanceProperties()
                                     for n in names},
            instance_properties=_properties(ctx, template.group, template.body, template.digest, zone))
        operation = client.bulk_insert(request=compute_v1.BulkInsertInstanceRequest(
            project=ctx.project, zone=zone, request_id=request_id,
            bulk_insert_instance_resource_resource=resource), retry=retry_policy())
        wait_zone_operation(ctx.clients, ctx.project, zone, operation.name)
        self._check_ours(ctx, zone, names)

    def _check_ours(self, ctx: Context, zone: str, names: list[str]) -> None:
        """bulkInsert counts a same-named existing instance as created: one of ours is adopted
        that way, but anyone else's must be refused, so look at the labels."""
        from google.api_core import exceptions
        from google.cloud import compute_v1

        client = ctx.clients.get(compute_v1.InstancesClient)
        listed = client.list(request=compute_v1.ListInstancesRequest(
            project=ctx.project, zone=zone, filter=label_filter(ctx.cluster)), retry=retry_policy())
        unlabelled = sorted(set(names) - {instance.name for instance in listed})
        foreign, missing = [], []
        for name in unlabelled:  # rare: look each one up to say which problem it is
            try:
                client.get(project=ctx.project, zone=zone, instance=name, retry=retry_policy())
                foreign.append(name)
            except exceptions.NotFound:
                missing.append(name)
        if foreign:
            raise GcpgpuError(f"instance(s) {', '.join(foreign)} in {zone} exist but are not "
                              f"labelled {CLUSTER_LABEL}={ctx.cluster}; delete or rename them, "
                              f"or rename the cluster")
        if missing:
            raise GcpgpuError(f"bulkInsert in {zone} reported success but {', '.join(missing)} "
                              f"do not exist; re-run to create them")

    @staticmethod
    def _metadata(ctx: Context, settings: dict) -> dict:
        """The user's metadata plus the cluster's SSH key, which the guest agent installs."""
        metadata = dict(settings["metadata"])
        if ctx.ssh_keys:
            entry = ctx.ssh_keys.metadata_entry()
            metadata["ssh-keys"] = "\n".join(filter(None, [metadata.get("ssh-keys"), entry]))
        return metadata

    def delete(self, ctx: Context, resources: list[Resource]) -> None:
        with ThreadPoolExecutor(max_workers=min(DELETE_PARALLELISM, len(resources))) as pool:
            list(pool.map(lambda r: self._delete_one(ctx, r), resources))

    def _delete_one(self, ctx: Context, resource: Resource) -> None:
        from google.api_core import exceptions
        from google.cloud import compute_v1

        client = ctx.clients.get(compute_v1.InstancesClient)
        try:
            operation = client.delete(project=ctx.project, zone=resource.location,
                                      instance=resource.name, retry=retry_policy())
            wait_zone_operation(ctx.clients, ctx.project, resource.location, operation.name)
        except exceptions.NotFound:
            pass  # already gone: the goal of a delete
        ctx.progress(1)

    def hosts(self, ctx: Context, live: list[Resource]) -> list[Host]:
        hosts = []
        for r in live:
            interface = (r.body.get("networkInterfaces") or [{}])[0]
            nat = [c.get("natIP") for c in interface.get("accessConfigs", []) if c.get("natIP")]
            attached = sum(int(a.get("acceleratorCount", 0)) for a in r.body.get("guestAccelerators", []))
            implied = compute_spec.BUILTIN_GPUS.get(short_name(r.body.get("machineType", "")), ("", 0))[1]
            hosts.append(Host(
                name=r.name, group=r.group, address=(nat or [interface.get("networkIP", "")])[0],
                zone=r.location, instance_id=str(r.body.get("id", "")), status=r.status,
                gpus=attached or implied, labels=r.body.get("labels", {}), hostvars=with_urls(r.body),
                preemptible=_preemptible(r.body)))
        return hosts
    def power(self, ctx: Context, hosts: list[Host], on: bool) -> None:
        """Start or stop VMs (disks are kept), in parallel; raises CapacityError naming the VMs
        a start could not place (a stockout), GcpgpuError for anything else."""
        with ThreadPoolExecutor(max_workers=min(DELETE_PARALLELISM, len(hosts) or 1)) as pool:
            outcomes = list(pool.map(lambda h: self._power_one(ctx, h, on), hosts))
        failures = [outcome for outcome in outcomes if outcome]
        if failures and all(isinstance(f, CapacityError) for f in failures):
            raise CapacityError("; ".join(str(f) for f in failures))
        if failures:
            raise GcpgpuError("; ".join(str(f) for f in failures))

    def _power_one(self, ctx: Context, host: Host, on: bool) -> Exception | None:
        from google.cloud import compute_v1

        client = ctx.clients.get(compute_v1.InstancesClient)
        call = client.start if on else client.stop
        try:
            operation = call(project=ctx.project, zone=host.zone, instance=host.name, retry=retry_policy())
            wait_zone_operation(ctx.clients, ctx.project, host.zone, operation.name)
        except OperationFailed as failure:
            if failure.stockout or failure.quota:
                return CapacityError(f"{host.name} in {host.zone}: {failure}")
            return failure
        ctx.progress(1)
        return None


def _preemptible(instance: dict) -> bool:
    scheduling = instance.get("scheduling") or {}
    return scheduling.get("provisioningModel") == "SPOT" or bool(scheduling.get("preemptible"))


def with_urls(instance: dict) -> dict:
    """The instance's JSON, plus the Jupyter URL a Deep Learning VM image serves through Google's
    inverting proxy (its agent publishes ``proxy-url`` in the instance metadata once running;
    the env-var tool's SHOW_PROXY_URL) as ``gcpgpu_urls`` for status and up to show."""
    items = {i.get("key"): i.get("value") for i in (instance.get("metadata") or {}).get("items", [])}
    proxy = items.get(PROXY_URL_KEY)
    if not proxy:
        return instance
    return {**instance, URLS_VAR: {"jupyter": proxy if "://" in proxy else f"https://{proxy}"}}


def _properties(ctx: Context, group_name: str, s: dict, settings_digest: str, zone: str):
    from google.cloud import compute_v1

    labels = {**s["labels"], CLUSTER_LABEL: ctx.cluster, GROUP_LABEL: group_name,
              DIGEST_LABEL: settings_digest}
    if ctx.spec.get("ttl_hours"):  # expiry = creationTimestamp + this; not in the digest
        labels[TTL_LABEL] = str(ctx.spec["ttl_hours"])
    image = s["image"]
    image_project = image.get("project") or ctx.project  # an image by name may be the project's own
    source = (f"projects/{image_project}/global/images/family/{image['family']}"
              if image.get("family") else f"projects/{image_project}/global/images/{image['name']}")
    accelerator = s.get("accelerator") or {}
    has_gpu = bool(accelerator) or s["machine_type"].startswith(IMPLICIT_GPU_FAMILIES)
    explicit = accelerator and not s["machine_type"].startswith(IMPLICIT_GPU_FAMILIES)
    scheduling = compute_v1.Scheduling(
        # GPU VMs cannot live-migrate: GCE rejects them unless maintenance terminates them.
        on_host_maintenance="TERMINATE" if has_gpu else "MIGRATE",
        automatic_restart=not s["spot"],
        **({"provisioning_model": "SPOT", "instance_termination_action": "STOP"} if s["spot"] else {}))
    return compute_v1.InstanceProperties(
        machine_type=s["machine_type"],
        labels=labels,
        tags=compute_v1.Tags(items=list(dict.fromkeys([*s["tags"], network.cluster_tag(ctx.cluster)]))),
        metadata=compute_v1.Metadata(items=[compute_v1.Items(key=k, value=str(v))
                                            for k, v in sorted(ComputeProvider._metadata(ctx, s).items())]),
        guest_accelerators=[compute_v1.AcceleratorConfig(
            accelerator_type=accelerator["type"], accelerator_count=accelerator["count"])]
        if explicit else [],
        disks=[compute_v1.AttachedDisk(
            boot=True, auto_delete=True,
            initialize_params=compute_v1.AttachedDiskInitializeParams(
                source_image=source, disk_size_gb=s["disk"]["size_gb"],
                disk_type=s["disk"]["type"], labels=labels))],
        network_interfaces=[compute_v1.NetworkInterface(
            network=nic["network"], subnetwork=nic.get("subnetwork"), nic_type=nic.get("nic_type"),
            access_configs=[compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")]
            if nic["external"] else [])
            for nic in network.interfaces(ctx.spec, zone)],
        service_accounts=[compute_v1.ServiceAccount(**account)
                          for account in service_account.instance_service_accounts(ctx.spec)],
        scheduling=scheduling,
        shielded_instance_config=compute_v1.ShieldedInstanceConfig(
            enable_vtpm=True, enable_integrity_monitoring=True))


@hookimpl
def gcpgpu_schema():
    return compute_spec.SCHEMA_FRAGMENT


@hookimpl
def gcpgpu_validate(spec):
    return compute_spec.validate(spec)


@hookimpl
def gcpgpu_register_providers(register):
    register(ComputeProvider())
