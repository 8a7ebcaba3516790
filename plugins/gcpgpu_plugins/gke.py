"""The `gke` provider: node groups with ``provider: gke`` become node pools of one GKE cluster.

* The cluster (stage 30) is a cluster-wide resource: private nodes, a public endpoint limited to
  ``gke.master_authorized_networks`` (changed in place), Workload Identity, a release channel,
  Shielded nodes, the ``gcpgpu-cluster`` resource label, and a small CPU ``system`` pool for
  kube-system so GPU pools can scale to zero.
* Each group gives ``gke.pools`` identical node pools (stage 50) named ``<group>-<i>``, with the
  group's machine type, accelerator (GKE installs the driver: ``gke.gpu_driver``), spot, disk and
  autoscaling ``min_nodes..max_nodes``. Autoscaling changes are applied in place
  (``setAutoscaling``); any other change replaces the pool. ``count`` is a pool's initial size:
  the autoscaler owns the size afterwards.
* GKE runs one operation at a time per cluster, so calls on one cluster are serialised (a lock
  per cluster, and a retry when GKE itself is busy, e.g. auto-upgrading).
* Operations are waited for by polling ``get_operation`` through the factory's client.
* A kubectl context is written after the cluster is created (and by ``gcpgpu kubeconfig``).
* ``hosts()`` is empty: GKE nodes are configured by Kubernetes (DaemonSets, the GPU driver
  installer), not over SSH by gcpgpu's roles; their VMs come and go with the autoscaler.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from functools import lru_cache

import click

from gcpgpu.errors import CapacityError, GcpgpuError
from gcpgpu.plugins import hookimpl
from gcpgpu.provider import Context, Host, Resource
from gcpgpu_plugins import gke_kubeconfig, gke_spec
from gcpgpu_plugins.gcp import CLUSTER_LABEL, DIGEST_LABEL, GROUP_LABEL, OPERATION_DEADLINE_S, digest, is_transient

CLUSTER_KIND = "gke-cluster"
POOL_KIND = "gke-node-pool"
CLUSTER_STAGE = 30
POOL_STAGE = 50
SYSTEM_POOL = "system"
FAILED = "failed"  # the digest of a cluster or pool GKE left in ERROR: it gets replaced
POLL_FIRST_S, POLL_MAX_S = 0.05, 5.0
CAPACITY_CODES = ("ZONE_RESOURCE_POOL_EXHAUSTED", "QUOTA_EXCEEDED", "STOCKOUT")
DRIVER_VERSIONS = {"default": "DEFAULT", "latest": "LATEST", "disabled": "INSTALLATION_DISABLED"}
_cluster_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)


def cluster_settings(spec: dict) -> dict:
    """Everything about the cluster that requires a new cluster when it changes."""
    s = spec["gke"]
    keys = ("node_locations", "release_channel", "private_nodes", "private_endpoint", "master_cidr",
            "network", "subnetwork", "service_account", "system_pool")
    return {k: s.get(k) for k in keys} | {"location": gke_spec.location(spec), "labels": spec["labels"]}


def pool_settings(spec: dict, group: dict) -> dict:
    """Everything about a pool that requires a new pool when it changes (the cluster's settings
    too: a new cluster comes without the old one's pools)."""
    keys = ("machine_type", "accelerator", "disk", "spot", "metadata", "tags")
    return ({k: group.get(k) for k in keys}
            | {"labels": {**spec["labels"], **group["labels"]},
               "gpu_driver": group["gke"]["gpu_driver"], "image_type": group["gke"]["image_type"],
               "cluster": digest(cluster_settings(spec))})


def networks_digest(cidrs) -> str:
    return ",".join(sorted(cidrs))


def autoscaling_digest(low: int, high: int) -> str:
    return f"{low}..{high}"


class GkeProvider:
    name = "gke"

    # -------------------------------------------------------------- desired state

    def cluster_resources(self, spec: dict) -> list[Resource]:
        if not gke_spec.gke_groups(spec):
            return []
        settings = cluster_settings(spec)
        return [Resource(provider=self.name, kind=CLUSTER_KIND, name=spec["name"], group="",
                         location=settings["location"], digest=digest(settings), body=settings,
                         update_digest=networks_digest(spec["gke"]["master_authorized_networks"]),
                         stage=CLUSTER_STAGE)]

    def desired(self, spec: dict, group_name: str, group: dict) -> list[Resource]:
        settings = pool_settings(spec, group)
        low, high = group["gke"]["min_nodes"], gke_spec.max_nodes(group)
        body = {"settings": settings, "initial": group["count"], "min": low, "max": high}
        return [Resource(provider=self.name, kind=POOL_KIND, name=gke_spec.pool_name(group_name, i),
                         group=group_name, location=gke_spec.location(spec), digest=digest(settings),
                         body=body, update_digest=autoscaling_digest(low, high), stage=POOL_STAGE)
                for i in range(group["gke"]["pools"])]

    # -------------------------------------------------------------- live state

    def observe(self, ctx: Context) -> list[Resource]:
        """One call: every cluster of the project (all locations) with its node pools."""
        from google.api_core import exceptions
        from google.cloud import container_v1

        try:
            listed = client(ctx).list_clusters(parent=f"projects/{ctx.project}/locations/-", retry=retry_policy())
        except exceptions.Forbidden as error:
            if _api_disabled(error):
                return []  # Kubernetes Engine API off in this project: it has no clusters
            raise
        found = []
        for cluster in listed.clusters:
            labels = dict(cluster.resource_labels)
            if labels.get(CLUSTER_LABEL) != ctx.cluster:
                continue
            failed = cluster.status == container_v1.Cluster.Status.ERROR
            networks = [b.cidr_block for b in cluster.master_authorized_networks_config.cidr_blocks]
            found.append(Resource(
                provider=self.name, kind=CLUSTER_KIND, name=cluster.name, group="", location=cluster.location,
                digest=FAILED if failed else labels.get(DIGEST_LABEL, ""), status=cluster.status.name,
                update_digest=networks_digest(networks), stage=CLUSTER_STAGE,
                body={"endpoint": cluster.endpoint}))
            found += [self._pool(cluster, pool) for pool in cluster.node_pools
                      if dict(pool.config.resource_labels).get(CLUSTER_LABEL) == ctx.cluster
                      and GROUP_LABEL in pool.config.resource_labels]
        return found

    def _pool(self, cluster, pool) -> Resource:
        from google.cloud import container_v1

        labels = dict(pool.config.resource_labels)
        failed = pool.status == container_v1.NodePool.Status.ERROR
        scaling = pool.autoscaling
        return Resource(
            provider=self.name, kind=POOL_KIND, name=pool.name, group=labels[GROUP_LABEL],
            location=cluster.location, digest=FAILED if failed else labels.get(DIGEST_LABEL, ""),
            status=pool.status.name, stage=POOL_STAGE,
            update_digest=autoscaling_digest(scaling.min_node_count, scaling.max_node_count)
            if scaling.enabled else "off")

    # -------------------------------------------------------------- changes

    def create(self, ctx: Context, resources: list[Resource]) -> None:
        for resource in resources:
            with api_errors(f"create {resource.kind} {resource.name}"):
                if resource.kind == CLUSTER_KIND:
                    self._create_cluster(ctx, resource)
                else:
                    self._create_pool(ctx, resource)
            ctx.progress(1)

    def _create_cluster(self, ctx: Context, resource: Resource) -> None:
        from google.api_core import exceptions

        parent = f"projects/{ctx.project}/locations/{resource.location}"
        with _cluster_locks[parent]:
            try:
                operation = client(ctx).create_cluster(parent=parent, cluster=self._cluster_body(ctx, resource),
                                                       retry=retry_policy())
                wait(ctx, resource.location, operation)
            except exceptions.Conflict:  # HTTP 409 (AlreadyExists is its gRPC twin)
                self._adopt_cluster(ctx, resource)
        if ctx.spec["gke"]["kubeconfig"]:
            write_kubeconfig(ctx, resource.location)

    def _adopt_cluster(self, ctx: Context, resource: Resource) -> None:
        """A cluster of this name appeared since the plan looked: adopted if labelled ours and running."""
        existing = client(ctx).get_cluster(name=cluster_path(ctx, resource.location), retry=retry_policy())
        if dict(existing.resource_labels).get(CLUSTER_LABEL) != ctx.cluster:
            raise GcpgpuError(f"GKE cluster {resource.name} in {resource.location} exists but is not labelled "
                              f"{CLUSTER_LABEL}={ctx.cluster}; delete it or rename the cluster")
        if existing.status.name != "RUNNING":  # made by a run that was killed, still going
            raise GcpgpuError(f"GKE cluster {resource.name} in {resource.location} is still being set up "
                              f"(status {existing.status.name}); re-run when it is done")

    def _cluster_body(self, ctx: Context, resource: Resource):
        from google.cloud import container_v1 as gke

        s = resource.body
        system = s["system_pool"]
        networks = ctx.spec["gke"]["master_authorized_networks"]
        return gke.Cluster(
            name=resource.name,
            description=f"gcpgpu cluster {ctx.cluster}",
            resource_labels={**s["labels"], CLUSTER_LABEL: ctx.cluster, DIGEST_LABEL: resource.digest},
            network=s["network"], subnetwork=s["subnetwork"] or "", locations=s["node_locations"],
            release_channel=gke.ReleaseChannel(channel=gke.ReleaseChannel.Channel[s["release_channel"].upper()]),
            workload_identity_config=gke.WorkloadIdentityConfig(workload_pool=f"{ctx.project}.svc.id.goog"),
            private_cluster_config=gke.PrivateClusterConfig(
                enable_private_nodes=s["private_nodes"], enable_private_endpoint=s["private_endpoint"],
                master_ipv4_cidr_block=s["master_cidr"] if s["private_nodes"] else ""),
            master_authorized_networks_config=authorized_networks(networks),
            ip_allocation_policy=gke.IPAllocationPolicy(use_ip_aliases=True),  # private clusters need it
            shielded_nodes=gke.ShieldedNodes(enabled=True),
            node_pools=[gke.NodePool(
                name=SYSTEM_POOL, initial_node_count=system["count"],
                config=node_config(ctx, {"machine_type": system["machine_type"], "labels": s["labels"],
                                         "disk": {"size_gb": 100, "type": "pd-balanced"}}, {}),
                management=gke.NodeManagement(auto_upgrade=True, auto_repair=True))])

    def _create_pool(self, ctx: Context, resource: Resource) -> None:
        from google.api_core import exceptions
        from google.cloud import container_v1 as gke

        body = resource.body
        pool = gke.NodePool(
            name=resource.name, initial_node_count=body["initial"],
            config=node_config(ctx, body["settings"], {GROUP_LABEL: resource.group, DIGEST_LABEL: resource.digest}),
            autoscaling=gke.NodePoolAutoscaling(enabled=True, min_node_count=body["min"], max_node_count=body["max"]),
            management=gke.NodeManagement(auto_upgrade=True, auto_repair=True))
        parent = cluster_path(ctx, resource.location)
        with _cluster_locks[parent.rsplit("/clusters/", 1)[0]]:
            try:
                operation = client(ctx).create_node_pool(parent=parent, node_pool=pool, retry=retry_policy())
            except exceptions.Conflict:  # HTTP 409 (AlreadyExists is its gRPC twin)
                raise GcpgpuError(f"node pool {resource.name} exists in GKE cluster {ctx.cluster} but is not "
                                  f"labelled {GROUP_LABEL}={resource.group}; delete it") from None
            wait(ctx, resource.location, operation)

    def update(self, ctx: Context, resources: list[Resource]) -> None:
        from google.cloud import container_v1 as gke

        for resource in resources:
            parent = f"projects/{ctx.project}/locations/{resource.location}"
            with api_errors(f"update {resource.kind} {resource.name}"), _cluster_locks[parent]:
                if resource.kind == CLUSTER_KIND:
                    request = gke.UpdateClusterRequest(name=cluster_path(ctx, resource.location), update=gke.ClusterUpdate(
                        desired_master_authorized_networks_config=authorized_networks(
                            ctx.spec["gke"]["master_authorized_networks"])))
                    operation = client(ctx).update_cluster(request=request, retry=retry_policy())
                else:
                    request = gke.SetNodePoolAutoscalingRequest(
                        name=f"{cluster_path(ctx, resource.location)}/nodePools/{resource.name}",
                        autoscaling=gke.NodePoolAutoscaling(enabled=True, min_node_count=resource.body["min"],
                                                            max_node_count=resource.body["max"]))
                    operation = client(ctx).set_node_pool_autoscaling(request=request, retry=retry_policy())
                wait(ctx, resource.location, operation)
            ctx.progress(1)

    def delete(self, ctx: Context, resources: list[Resource]) -> None:
        from google.api_core import exceptions

        for resource in resources:
            name = cluster_path(ctx, resource.location, resource.name if resource.kind == CLUSTER_KIND else None)
            with api_errors(f"delete {resource.kind} {resource.name}"), \
                    _cluster_locks[name.rsplit("/clusters/", 1)[0]]:
                try:
                    if resource.kind == CLUSTER_KIND:
                        operation = client(ctx).delete_cluster(name=name, retry=retry_policy())
                    else:
                        operation = client(ctx).delete_node_pool(name=f"{name}/nodePools/{resource.name}",
                                                                 retry=retry_policy())
                    wait(ctx, resource.location, operation)
                except exceptions.NotFound:
                    pass  # already gone: the goal of a delete
            if resource.kind == CLUSTER_KIND:
                gke_kubeconfig.remove_entry(
                    gke_kubeconfig.context_name(ctx.project, resource.location, resource.name))
            ctx.progress(1)

    def hosts(self, ctx: Context, live: list[Resource]) -> list[Host]:
        # GKE nodes are Kubernetes' to configure (DaemonSets, GKE's driver installer) and the
        # autoscaler replaces them at will: gcpgpu's SSH roles do not run on them.
        return []


# -- helpers shared with the kubeconfig command ---------------------------------------------------

def client(ctx: Context):
    from google.cloud import container_v1

    return ctx.clients.get(container_v1.ClusterManagerClient, transport="rest")


def cluster_path(ctx: Context, location: str, name: str | None = None) -> str:
    return f"projects/{ctx.project}/locations/{location}/clusters/{name or ctx.cluster}"


def authorized_networks(cidrs: list[str]):
    from google.cloud import container_v1 as gke

    return gke.MasterAuthorizedNetworksConfig(enabled=True, cidr_blocks=[
        gke.MasterAuthorizedNetworksConfig.CidrBlock(cidr_block=c, display_name=f"gcpgpu-{i}")
        for i, c in enumerate(cidrs)])


def node_config(ctx: Context, s: dict, extra_labels: dict):
    from google.cloud import container_v1 as gke

    accelerator = s.get("accelerator")
    driver = DRIVER_VERSIONS[s.get("gpu_driver", "default")]
    return gke.NodeConfig(
        machine_type=s["machine_type"], disk_size_gb=s["disk"]["size_gb"], disk_type=s["disk"]["type"],
        image_type=s.get("image_type", "COS_CONTAINERD"), spot=bool(s.get("spot")),
        metadata=s.get("metadata") or {}, tags=s.get("tags") or [],
        resource_labels={**s["labels"], CLUSTER_LABEL: ctx.cluster, **extra_labels},
        service_account=ctx.spec["gke"].get("service_account") or "",
        oauth_scopes=["https://www.googleapis.com/auth/cloud-platform"],  # IAM decides, not scopes
        workload_metadata_config=gke.WorkloadMetadataConfig(mode=gke.WorkloadMetadataConfig.Mode.GKE_METADATA),
        shielded_instance_config=gke.ShieldedInstanceConfig(enable_integrity_monitoring=True),
        accelerators=[gke.AcceleratorConfig(
            accelerator_type=accelerator["type"], accelerator_count=accelerator["count"],
            gpu_driver_installation_config=gke.GPUDriverInstallationConfig(
                gpu_driver_version=gke.GPUDriverInstallationConfig.GPUDriverVersion[driver]))]
        if accelerator else [])


@contextlib.contextmanager
def api_errors(what: str):
    """An API refusal (bad request, permission, quota) as a GcpgpuError the engine reports."""
    from google.api_core import exceptions

    try:
        yield
    except exceptions.GoogleAPICallError as error:
        raise GcpgpuError(f"GKE refused to {what}: {error.message or error}") from None


def _busy(error: Exception) -> bool:
    """GKE refuses a second operation on a cluster while one runs (ours or its own upgrades)."""
    from google.api_core import exceptions

    return (isinstance(error, (exceptions.BadRequest, exceptions.FailedPrecondition))
            and "please wait and try again" in str(error).lower())


def _api_disabled(error: Exception) -> bool:
    text = str(error)
    return "SERVICE_DISABLED" in text or "has not been used in project" in text or "is disabled" in text


@lru_cache(maxsize=1)
def retry_policy():
    from google.api_core.retry import Retry

    return Retry(predicate=lambda e: is_transient(e) or _busy(e), initial=1.0, maximum=30.0,
                 multiplier=2.0, timeout=600.0)


def wait(ctx: Context, location: str, operation):
    """Poll get_operation until DONE (GKE has no server-side wait); raise on an operation error."""
    from google.cloud import container_v1

    name = f"projects/{ctx.project}/locations/{location}/operations/{operation.name}"
    deadline, delay = time.monotonic() + OPERATION_DEADLINE_S, POLL_FIRST_S
    while operation.status != container_v1.Operation.Status.DONE:
        if time.monotonic() > deadline:
            raise GcpgpuError(f"GKE operation {operation.name} ({operation.operation_type.name}) not done "
                              f"after {OPERATION_DEADLINE_S}s; re-run to pick it up")
        time.sleep(delay)
        delay = min(delay * 1.5, POLL_MAX_S)
        operation = client(ctx).get_operation(name=name, retry=retry_policy())
    # A failed operation carries google.rpc.Status in `error`; older ones only a statusMessage.
    message = operation.error.message or operation.status_message
    if message:
        what = f"{operation.operation_type.name.lower().replace('_', ' ')} {operation.target_link.rsplit('/', 1)[-1]}"
        error = CapacityError if any(code in message for code in CAPACITY_CODES) else GcpgpuError
        raise error(f"GKE {what} failed: {message}")
    return operation


def write_kubeconfig(ctx: Context, location: str):
    """The kubectl context of the cluster (public endpoint unless the cluster has only a private one)."""
    cluster = client(ctx).get_cluster(name=cluster_path(ctx, location), retry=retry_policy())
    private = cluster.private_cluster_config
    address = private.private_endpoint if private.enable_private_endpoint else cluster.endpoint
    name = gke_kubeconfig.context_name(ctx.project, location, ctx.cluster)
    return name, gke_kubeconfig.write_entry(name, f"https://{address}",
                                            cluster.master_auth.cluster_ca_certificate)


# -- hooks ----------------------------------------------------------------------------------------

@click.command("kubeconfig")
@click.argument("spec_file", metavar="CLUSTER_YAML", type=click.Path(dir_okay=True))
@click.pass_obj
def kubeconfig_command(session, spec_file):
    """Write the kubectl context of the cluster's GKE cluster ($KUBECONFIG, else ~/.kube/config),
    like `gcloud container clusters get-credentials`; other entries are kept.

    Example: gcpgpu kubeconfig examples/gke.yaml && kubectl get nodes
    """
    cluster = session.cluster(spec_file)
    if not gke_spec.gke_groups(cluster.spec):
        raise GcpgpuError("this cluster has no `provider: gke` node group")
    ctx = cluster.context()
    live = [r for r in GkeProvider().observe(ctx) if r.kind == CLUSTER_KIND]
    if not live:
        raise GcpgpuError(f"GKE cluster {cluster.spec['name']} does not exist; run `gcpgpu up {spec_file}`")
    name, path = write_kubeconfig(ctx, live[0].location)
    click.echo(f"context {name} written to {path} (kubectl needs {gke_kubeconfig.AUTH_PLUGIN})")


@hookimpl
def gcpgpu_schema():
    return gke_spec.SCHEMA_FRAGMENT


@hookimpl
def gcpgpu_validate(spec):
    return gke_spec.validate(spec)


@hookimpl
def gcpgpu_register_providers(register):
    register(GkeProvider())


@hookimpl
def gcpgpu_commands():
    return [kubeconfig_command]
