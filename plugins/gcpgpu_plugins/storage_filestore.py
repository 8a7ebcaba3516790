"""The `filestore` provider: one Filestore instance per `storage.nfs` share.

Instances are cluster resources (stage 20: after the network, before the VMs), named
``{cluster}-{mount path}``, labelled ``gcpgpu-cluster`` and ``gcpgpu-digest``. Tier, location,
network and share name need a new instance when they change (``digest``); capacity and labels
are changed in place (``update_digest``). Their addresses reach the nodes as the inventory
variable ``gcpgpu_nfs_mounts``.
"""
from __future__ import annotations

import time

from gcpgpu.errors import GcpgpuError
from gcpgpu.provider import Context, Resource
from gcpgpu_plugins.gcp import CLUSTER_LABEL, DIGEST_LABEL, digest, each, retry_policy
from gcpgpu_plugins.storage_spec import nfs_shares

KIND = "filestore-instance"
STAGE = 20
OPERATION_TIMEOUT_S = 3600  # Filestore creates take minutes; ENTERPRISE ones up to an hour
ADOPT_POLL_S = 5


def replace_settings(share: dict) -> dict:
    return {k: share[k] for k in ("tier", "location", "network", "share_name")}


def update_settings(size_gb: int, labels: dict) -> str:
    return digest({"size_gb": int(size_gb), "labels": labels})


def user_labels(labels: dict) -> dict:
    return {k: v for k, v in labels.items() if not k.startswith("gcpgpu-")}


def api_disabled(error: Exception) -> bool:
    """403 for a project that never enabled the API: then nothing of ours can exist in it."""
    text = str(error)
    return "SERVICE_DISABLED" in text or "has not been used in project" in text or "is disabled" in text


def both_phases(resources: list[Resource], start, finish, progress, verb: str) -> None:
    """start(r) for every resource, then finish(r, started) for those that started; every
    failure is reported at once, after the others were handled."""
    from google.api_core import exceptions

    def named(r: Resource) -> str:
        return f"{verb} Filestore instance {r.name}"

    failures, started = [], []
    for r in resources:
        try:
            started.append((r, start(r)))
        except exceptions.GoogleAPICallError as error:
            failures.append(f"{named(r)}: {error}")
            progress(1)
    try:
        each(started, lambda pair: finish(*pair), progress, lambda pair: named(pair[0]))
    except GcpgpuError as error:
        failures.append(str(error))
    if failures:
        raise GcpgpuError("\n    ".join(failures))


class FilestoreProvider:
    name = "filestore"

    def desired(self, spec: dict, group_name: str, group: dict) -> list[Resource]:
        return []  # no node group is made of file shares

    def cluster_resources(self, spec: dict) -> list[Resource]:
        return [Resource(provider=self.name, kind=KIND, name=share["instance"], group="",
                         location=share["location"], digest=digest(replace_settings(share)),
                         update_digest=update_settings(share["size_gb"], spec.get("labels", {})),
                         body=share, stage=STAGE)
                for share in nfs_shares(spec)]

    def _client(self, ctx: Context):
        from google.cloud import filestore_v1

        # REST: the emulator (and any api_endpoint with a scheme) speaks HTTP/JSON, not gRPC.
        return ctx.clients.get(filestore_v1.CloudFilestoreManagerClient, transport="rest")

    def observe(self, ctx: Context) -> list[Resource]:
        from google.api_core import exceptions
        from google.cloud import filestore_v1

        # Every location at once ("-"); the label test is done here, which does not depend on
        # how the list filter treats '-' in label keys (a project has few instances).
        request = filestore_v1.ListInstancesRequest(parent=f"projects/{ctx.project}/locations/-")
        try:
            instances = [i for i in self._client(ctx).list_instances(request=request, retry=retry_policy())
                         if i.labels.get(CLUSTER_LABEL) == ctx.cluster]
        except exceptions.Forbidden as error:  # PermissionDenied is one too
            if api_disabled(error):
                return []
            if not nfs_shares(ctx.spec):  # e.g. `down` of a cluster without shares
                ctx.log(f"Filestore instances not listed ({error}); this cluster declares none")
                return []
            raise GcpgpuError(f"cannot list the Filestore instances of {ctx.project}: {error}") from None
        return [self._resource(instance) for instance in instances]

    def _resource(self, instance) -> Resource:
        from google.cloud import filestore_v1

        labels = dict(instance.labels)
        body = filestore_v1.Instance.to_dict(instance)
        capacity = instance.file_shares[0].capacity_gb if instance.file_shares else 0
        return Resource(provider=self.name, kind=KIND, name=instance.name.rsplit("/", 1)[-1], group="",
                        location=instance.name.split("/")[3], digest=labels.get(DIGEST_LABEL, ""),
                        update_digest=update_settings(capacity, user_labels(labels)),
                        status=instance.state.name, body=body, stage=STAGE)

    # -- create / update / delete ----------------------------------------------------------------

    def create(self, ctx: Context, resources: list[Resource]) -> None:
        """Start every create, then wait for each (Filestore takes minutes per instance)."""
        from google.api_core import exceptions

        def start(r):
            try:
                return self._client(ctx).create_instance(
                    parent=f"projects/{ctx.project}/locations/{r.location}", instance_id=r.name,
                    instance=self._instance(ctx, r), retry=retry_policy())
            except exceptions.Conflict:
                return None  # a killed run may have made it: adopt it only if it is ours

        def finish(r, operation):
            if operation is None:
                self._adopt(ctx, r)
            else:
                self._wait(operation, f"create Filestore instance {r.name}")
        both_phases(resources, start, finish, ctx.progress, "create")

    def _instance(self, ctx: Context, r: Resource):
        from google.cloud import filestore_v1

        share = r.body
        return filestore_v1.Instance(
            tier=share["tier"], description=f"gcpgpu cluster {ctx.cluster}: {share['path']}",
            labels={**ctx.spec.get("labels", {}), CLUSTER_LABEL: ctx.cluster, DIGEST_LABEL: r.digest},
            file_shares=[filestore_v1.FileShareConfig(name=share["share_name"],
                                                      capacity_gb=share["size_gb"])],
            networks=[filestore_v1.NetworkConfig(network=share["network"], modes=["MODE_IPV4"])])

    def _adopt(self, ctx: Context, r: Resource) -> None:
        """Take over an instance of ours that a killed run started, once it is no longer CREATING."""
        deadline = time.monotonic() + OPERATION_TIMEOUT_S
        while True:
            instance = self._client(ctx).get_instance(name=self._name(ctx, r), retry=retry_policy())
            owner = instance.labels.get(CLUSTER_LABEL)
            if owner != ctx.cluster:
                raise GcpgpuError(
                    f"Filestore instance {r.name} in {r.location} exists but is "
                    + (f"labelled for cluster '{owner}'" if owner else f"not labelled {CLUSTER_LABEL}")
                    + "; delete or rename it, or change the mount path")
            if instance.state.name != "CREATING":
                return
            if time.monotonic() > deadline:
                raise GcpgpuError(f"Filestore instance {r.name} still CREATING; re-run to keep waiting")
            time.sleep(ADOPT_POLL_S)

    def update(self, ctx: Context, resources: list[Resource]) -> None:
        """Grow the share and set the labels in place."""
        from google.protobuf import field_mask_pb2

        client = self._client(ctx)

        def start(r):
            instance = client.get_instance(name=self._name(ctx, r), retry=retry_policy())
            instance.file_shares[0].capacity_gb = r.body["size_gb"]
            instance.labels = {**ctx.spec.get("labels", {}),
                               **{k: v for k, v in instance.labels.items() if k.startswith("gcpgpu-")}}
            return client.update_instance(
                instance=instance, update_mask=field_mask_pb2.FieldMask(paths=["file_shares", "labels"]),
                retry=retry_policy())

        both_phases(resources, start,
                    lambda r, operation: self._wait(operation, f"update Filestore instance {r.name}"),
                    ctx.progress, "update")

    def delete(self, ctx: Context, resources: list[Resource]) -> None:
        from google.api_core import exceptions

        def start(r):
            try:
                return self._client(ctx).delete_instance(name=self._name(ctx, r), retry=retry_policy())
            except exceptions.NotFound:
                return None  # already gone: the goal of a delete

        def finish(r, operation):
            if operation is not None:
                self._wait(operation, f"delete Filestore instance {r.name}", missing_ok=True)
        both_phases(resources, start, finish, ctx.progress, "delete")

    @staticmethod
    def _wait(operation, what: str, missing_ok: bool = False) -> None:
        from google.api_core import exceptions

        try:
            operation.result(timeout=OPERATION_TIMEOUT_S)
        except exceptions.NotFound:
            if not missing_ok:
                raise GcpgpuError(f"{what}: not found") from None
        except exceptions.GoogleAPICallError as error:
            raise GcpgpuError(f"{what}: {error}") from None
        except TimeoutError:
            raise GcpgpuError(f"{what}: not done after {OPERATION_TIMEOUT_S}s; re-run to "
                              "continue waiting") from None

    @staticmethod
    def _name(ctx: Context, r: Resource) -> str:
        return f"projects/{ctx.project}/locations/{r.location}/instances/{r.name}"

    # -- what the nodes see -------------------------------------------------------------------

    def variables(self, ctx: Context, live: list[Resource]) -> dict:
        """``gcpgpu_nfs_mounts``: the spec's shares whose instance is READY, with its address."""
        ready = {r.name: r.body for r in live if r.kind == KIND and r.status == "READY"}
        mounts = []
        for share in nfs_shares(ctx.spec):
            instance = ready.get(share["instance"])
            addresses = ((instance or {}).get("networks") or [{}])[0].get("ip_addresses") or []
            if addresses:
                mounts.append({"server": addresses[0], "export": f"/{share['share_name']}",
                               "path": share["path"], "options": share["options"]})
        return {"gcpgpu_nfs_mounts": mounts}
