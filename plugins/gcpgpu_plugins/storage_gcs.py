"""The `gcs` provider: buckets gcpgpu creates for `storage.gcs` entries with `create: true`.

A created bucket is versioned, has uniform bucket-level access and enforced public access
prevention, carries the cluster's labels plus ``gcpgpu-cluster`` / ``gcpgpu-digest``, and the
cluster's service account gets ``roles/storage.objectUser`` on it (stage 30: after the service
account exists). Bucket names are global, so an existing bucket is adopted only when it is
labelled for this cluster.

Deleting (``down``, or an entry removed from the spec) never touches a bucket gcpgpu did not
create (only labelled buckets are ever observed), and deletes a created one only when it holds
no object version, unless ``force_destroy_all_objects`` was set (recorded on the bucket as the
label ``gcpgpu-force-destroy=true``, so ``down`` honours it even without the spec entry).
"""
from __future__ import annotations

from gcpgpu.errors import GcpgpuError
from gcpgpu.provider import Context, Resource
from gcpgpu_plugins.gcp import CLUSTER_LABEL, DIGEST_LABEL, digest, each, service_account_email
from gcpgpu_plugins.storage_spec import gcs_mounts

KIND = "bucket"
STAGE = 30
FORCE_LABEL = "gcpgpu-force-destroy"
OBJECT_ROLE = "roles/storage.objectUser"


def update_settings(labels: dict, force: bool) -> str:
    return digest({"labels": labels, "force": bool(force)})


def created_buckets(spec: dict) -> list[dict]:
    """The mounts whose bucket gcpgpu creates (validation allows one such entry per bucket)."""
    return [m for m in gcs_mounts(spec) if m["create"]]


def bucket_name(r: Resource) -> str:
    return f"bucket {r.name}"


class GcsProvider:
    name = "gcs"

    def desired(self, spec: dict, group_name: str, group: dict) -> list[Resource]:
        return []  # no node group is made of buckets

    def cluster_resources(self, spec: dict) -> list[Resource]:
        return [Resource(provider=self.name, kind=KIND, name=m["bucket"], group="",
                         location=m["location"], digest=digest({"location": m["location"]}),
                         update_digest=update_settings(spec.get("labels", {}),
                                                       m["force_destroy_all_objects"]),
                         body=m, stage=STAGE)
                for m in created_buckets(spec)]

    def _client(self, ctx: Context):
        from google.cloud import storage

        return ctx.clients.get(storage.Client, project=ctx.project)

    def observe(self, ctx: Context) -> list[Resource]:
        from google.api_core import exceptions

        # The JSON API cannot filter buckets by label: list the project's and keep ours.
        try:
            return [self._resource(b) for b in self._client(ctx).list_buckets(project=ctx.project)
                    if (b.labels or {}).get(CLUSTER_LABEL) == ctx.cluster]
        except exceptions.Forbidden as error:
            if created_buckets(ctx.spec):
                raise GcpgpuError(f"cannot list the buckets of {ctx.project}: {error}") from None
            # `down` looks at every provider: without storage rights, a cluster that declares
            # no bucket to create must still come down.
            ctx.log(f"buckets not listed ({error}); this cluster creates none")
            return []

    def _resource(self, bucket) -> Resource:
        labels = dict(bucket.labels or {})
        user = {k: v for k, v in labels.items() if not k.startswith("gcpgpu-")}
        return Resource(provider=self.name, kind=KIND, name=bucket.name, group="",
                        location=(bucket.location or "").upper(), digest=labels.get(DIGEST_LABEL, ""),
                        update_digest=update_settings(user, labels.get(FORCE_LABEL) == "true"),
                        status="READY", body={"labels": labels, "location": bucket.location},
                        stage=STAGE)

    # -- create / update / delete ----------------------------------------------------------------

    def create(self, ctx: Context, resources: list[Resource]) -> None:
        each(resources, lambda r: self._create_one(ctx, r), ctx.progress, bucket_name)

    def _create_one(self, ctx: Context, r: Resource) -> None:
        from google.api_core import exceptions

        client = self._client(ctx)
        bucket = client.bucket(r.name)
        bucket.labels = self._labels(ctx, r)
        bucket.versioning_enabled = True
        bucket.iam_configuration.uniform_bucket_level_access_enabled = True
        bucket.iam_configuration.public_access_prevention = "enforced"
        try:
            bucket = client.create_bucket(bucket, project=ctx.project, location=r.location)
        except exceptions.Conflict:
            bucket = self._adopt(ctx, r)
        except exceptions.GoogleAPICallError as error:
            raise GcpgpuError(f"create bucket {r.name}: {error}") from None
        self._grant(ctx, bucket)

    @staticmethod
    def _labels(ctx: Context, r: Resource) -> dict:
        labels = {**ctx.spec.get("labels", {}), CLUSTER_LABEL: ctx.cluster, DIGEST_LABEL: r.digest}
        if r.body.get("force_destroy_all_objects"):
            labels[FORCE_LABEL] = "true"
        return labels

    def _adopt(self, ctx: Context, r: Resource):
        from google.api_core import exceptions

        try:
            bucket = self._client(ctx).get_bucket(r.name)
        except (exceptions.Forbidden, exceptions.NotFound):
            raise GcpgpuError(f"bucket name '{r.name}' is taken by a bucket outside this project "
                              "(bucket names are global); choose another name") from None
        owner = (bucket.labels or {}).get(CLUSTER_LABEL)
        if owner == ctx.cluster:
            return bucket  # made by a run that was killed before it recorded it
        if owner:
            raise GcpgpuError(f"bucket '{r.name}' belongs to gcpgpu cluster '{owner}'; choose "
                              "another name, or mount it with create: false")
        raise GcpgpuError(f"bucket '{r.name}' already exists and gcpgpu did not create it; mount it "
                          "with create: false (gcpgpu then never changes or deletes it)")

    def _grant(self, ctx: Context, bucket) -> None:
        """roles/storage.objectUser for the cluster's service account, if it is not there yet."""
        member = f"serviceAccount:{service_account_email(ctx.spec)}"
        policy = bucket.get_iam_policy(requested_policy_version=3)
        if any(b["role"] == OBJECT_ROLE and member in b["members"] for b in policy.bindings):
            return
        policy.bindings.append({"role": OBJECT_ROLE, "members": {member}})
        bucket.set_iam_policy(policy)  # carries the etag: a concurrent change fails, not lost

    def update(self, ctx: Context, resources: list[Resource]) -> None:
        each(resources, lambda r: self._update_one(ctx, r), ctx.progress, bucket_name)

    def _update_one(self, ctx: Context, r: Resource) -> None:
        bucket = self._client(ctx).get_bucket(r.name)
        current = bucket.labels or {}
        bucket.labels = {**self._labels(ctx, r), DIGEST_LABEL: current.get(DIGEST_LABEL, r.digest)}
        bucket.patch()  # labels dropped from the spec are sent as null: removed

    def delete(self, ctx: Context, resources: list[Resource]) -> None:
        each(resources, lambda r: self._delete_one(ctx, r), ctx.progress, bucket_name)

    def _delete_one(self, ctx: Context, r: Resource) -> None:
        from google.api_core import exceptions

        client = self._client(ctx)
        try:
            versions = client.list_blobs(r.name, versions=True)
            if self._forced(ctx, r):
                for blob in versions:
                    blob.delete()  # this generation: noncurrent versions too
            elif next(iter(client.list_blobs(r.name, versions=True, max_results=1)), None):
                raise GcpgpuError(
                    f"bucket '{r.name}' (created by gcpgpu) still holds objects, so it was kept. "
                    f"Empty it (gcloud storage rm --all-versions 'gs://{r.name}/**') or set "
                    "force_destroy_all_objects: true on its storage.gcs entry and run `up`, then "
                    "re-run")
            client.bucket(r.name).delete()
        except exceptions.NotFound:
            pass  # already gone: the goal of a delete
        except exceptions.Conflict as error:  # objects written meanwhile
            raise GcpgpuError(f"delete bucket {r.name}: {error}; re-run") from None

    @staticmethod
    def _forced(ctx: Context, r: Resource) -> bool:
        if r.body.get("labels", {}).get(FORCE_LABEL) == "true":
            return True
        return any(m["bucket"] == r.name and m["force_destroy_all_objects"]
                   for m in created_buckets(ctx.spec))

