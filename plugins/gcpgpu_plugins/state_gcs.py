"""Cluster state in a Cloud Storage bucket: ``state.path: gs://BUCKET[/PREFIX]``.

The records of a cluster are objects ``PREFIX/PROJECT/CLUSTER/state.json`` (resources intended
and achieved), ``spec.json`` (the spec `up` used), ``stopped.json`` (hosts `gcpgpu stop`
stopped) and ``lock``. The bucket must exist; gcpgpu never creates it.

Every write carries ``ifGenerationMatch`` = the generation this command last read or wrote, so a
writer that bypassed the lock is detected (a 412: a clear error, never a silent overwrite). The
lock is an object created with ``ifGenerationMatch=0`` (only if absent) whose content names the
holder; it is deleted (``ifGenerationMatch`` = its own generation) when the command ends, also
on an exception or Ctrl-C. A holder killed with -9 leaves it: `gcpgpu unlock` removes it.
Retries are the library's: writes and deletes use ``DEFAULT_RETRY_IF_GENERATION_SPECIFIED``
(safe to repeat because of the precondition), reads ``DEFAULT_RETRY``.
"""
from __future__ import annotations

import contextlib
import logging
import re

import click

from gcpgpu.cli import spec_argument
from gcpgpu.errors import GcpgpuError, LockedError, Problem
from gcpgpu.plugins import hookimpl
from gcpgpu.state import holder_line, scheme_of

SCHEME = "gs"
LOCK = "lock"
# Cloud Storage bucket names: 3-63 characters (up to 222 with dots), lowercase letters, digits,
# '-', '_' and '.', starting and ending with a letter or digit.
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
log = logging.getLogger("gcpgpu.state")


def split(path: str) -> tuple[str, str]:
    """``gs://bucket/a/b/`` -> ("bucket", "a/b")."""
    bucket, _, prefix = path[len(f"{SCHEME}://"):].partition("/")
    return bucket, prefix.strip("/")


class GcsStore:
    remote = True

    def __init__(self, client, bucket: str, prefix: str, project: str, cluster: str):
        self.client, self.bucket, self.cluster = client, bucket, cluster
        self.base = "/".join(part for part in (prefix, project, cluster) if part)
        self.generations: dict[str, int] = {}  # name -> generation last read or written (0: absent)
        self.bucket_seen = False

    @property
    def where(self) -> str:
        return f"gs://{self.bucket}/{self.base}"

    def url(self, name: str) -> str:
        return f"gs://{self.bucket}/{self.base}/{name}"

    def _blob(self, name: str):
        return self.client.bucket(self.bucket).blob(f"{self.base}/{name}")

    # ------------------------------------------------------------------ records

    def read(self, name: str) -> str | None:
        from google.api_core import exceptions
        from google.cloud.storage.retry import DEFAULT_RETRY

        blob = self._blob(name)
        with self._errors(name):
            try:
                text = blob.download_as_text(encoding="utf-8", retry=DEFAULT_RETRY)
            except exceptions.NotFound:
                self._check_bucket()  # an absent object, or no bucket at all?
                self.generations[name] = 0
                return None
        self.generations[name] = blob.generation  # from the download's X-Goog-Generation
        self.bucket_seen = True
        return text

    def write(self, name: str, text: str) -> None:
        from google.api_core import exceptions
        from google.cloud.storage.retry import DEFAULT_RETRY_IF_GENERATION_SPECIFIED

        if name not in self.generations:
            self.read(name)
        blob = self._blob(name)
        with self._errors(name):
            try:
                blob.upload_from_string(text, content_type="application/json",
                                        if_generation_match=self.generations[name],
                                        retry=DEFAULT_RETRY_IF_GENERATION_SPECIFIED)
            except exceptions.PreconditionFailed:
                raise self._changed(name) from None
        self.generations[name] = blob.generation

    def delete(self, name: str) -> None:
        from google.api_core import exceptions
        from google.cloud.storage.retry import DEFAULT_RETRY_IF_GENERATION_SPECIFIED

        if name not in self.generations:
            self.read(name)
        if not self.generations[name]:
            return  # nothing there
        with self._errors(name):
            try:
                self._blob(name).delete(if_generation_match=self.generations[name],
                                        retry=DEFAULT_RETRY_IF_GENERATION_SPECIFIED)
            except exceptions.NotFound:
                pass
            except exceptions.PreconditionFailed:
                raise self._changed(name) from None
        self.generations[name] = 0

    # ------------------------------------------------------------------ lock

    @contextlib.contextmanager
    def lock(self, command: str):
        from google.api_core import exceptions
        from google.cloud.storage.retry import DEFAULT_RETRY_IF_GENERATION_SPECIFIED

        blob = self._blob(LOCK)
        with self._errors(LOCK):
            try:
                blob.upload_from_string(holder_line(command), content_type="text/plain",
                                        if_generation_match=0,  # only if nobody holds it
                                        retry=DEFAULT_RETRY_IF_GENERATION_SPECIFIED)
            except exceptions.PreconditionFailed:
                holder = self._holder() or "another gcpgpu command (it has just finished: retry)"
                raise LockedError(
                    f"cluster {self.cluster!r} is locked by {holder}; wait for it to finish (or "
                    f"stop it) and retry. If that command is gone (killed, machine lost), "
                    f"`gcpgpu unlock CLUSTER_YAML` removes the lock object {self.url(LOCK)}"
                ) from None
        try:
            yield
        finally:
            self._release(blob.generation)

    def unlock(self) -> str | None:
        """Delete the lock object (only the generation read, so a new holder's lock stays)."""
        from google.api_core import exceptions

        blob = self._blob(LOCK)
        with self._errors(LOCK):
            try:
                holder = blob.download_as_text(encoding="utf-8")
                self._blob(LOCK).delete(if_generation_match=blob.generation)
            except exceptions.NotFound:
                return None
            except exceptions.PreconditionFailed:
                raise GcpgpuError(f"{self.url(LOCK)} changed while being removed: another "
                                  f"command has just taken the lock; look again") from None
        return holder

    def _holder(self) -> str | None:
        from google.api_core import exceptions

        try:
            return self._blob(LOCK).download_as_text(encoding="utf-8").strip()
        except exceptions.NotFound:
            return None

    def _release(self, generation: int) -> None:
        from google.api_core import exceptions
        from google.cloud.storage.retry import DEFAULT_RETRY_IF_GENERATION_SPECIFIED

        try:
            self._blob(LOCK).delete(if_generation_match=generation,
                                    retry=DEFAULT_RETRY_IF_GENERATION_SPECIFIED)
        except (exceptions.NotFound, exceptions.PreconditionFailed):
            log.warning("%s was removed (gcpgpu unlock?) while this command held it", self.url(LOCK))
        except exceptions.GoogleAPICallError as error:
            log.warning("could not remove %s (`gcpgpu unlock` removes it): %s", self.url(LOCK), error)

    # ------------------------------------------------------------------ errors

    def _check_bucket(self) -> None:
        """Once per command. Listing needs only object permissions (roles/storage.objectUser),
        unlike buckets.get."""
        if not self.bucket_seen:
            list(self.client.list_blobs(self.bucket, prefix=f"{self.base}/", max_results=1))
            self.bucket_seen = True

    def _unusable(self) -> GcpgpuError:
        return GcpgpuError(
            f"state bucket gs://{self.bucket} does not exist or is not readable: create it "
            f"(gcloud storage buckets create gs://{self.bucket} --uniform-bucket-level-access "
            f"--public-access-prevention) or change state.path")

    def _changed(self, name: str) -> GcpgpuError:
        return GcpgpuError(
            f"{self.url(name)} changed since this command read it (generation "
            f"{self.generations.get(name)}): another gcpgpu command wrote it without holding the "
            f"cluster's lock (or the lock was removed with `gcpgpu unlock` while this one ran). "
            f"Nothing was overwritten; re-run the command to continue from the current state")

    @contextlib.contextmanager
    def _errors(self, name: str):
        from google.api_core import exceptions

        try:
            yield
        except (exceptions.NotFound, exceptions.Forbidden):
            raise self._unusable() from None
        except exceptions.GoogleAPICallError as error:
            raise GcpgpuError(f"state {self.url(name)}: {error}") from None


@hookimpl
def gcpgpu_state_schemes():
    return [SCHEME]


@hookimpl
def gcpgpu_state_store(path, project, cluster, clients):
    if scheme_of(path) != SCHEME:
        return None
    from google.cloud import storage

    bucket, prefix = split(path)
    return GcsStore(clients.get(storage.Client, project=project), bucket, prefix, project, cluster)


@hookimpl
def gcpgpu_validate(spec):
    path = spec.get("state", {}).get("path") if isinstance(spec.get("state"), dict) else None
    if scheme_of(path) != SCHEME:
        return []
    bucket, _ = split(path)
    if path.startswith(f"{SCHEME}://") and BUCKET_NAME.match(bucket) and ".." not in bucket:
        return []
    return [Problem("state.path", f"'{bucket}' is not a Cloud Storage bucket name ('{path}')",
                    "use gs://BUCKET[/PREFIX]: 3-63 lowercase letters, digits, '-', '_' or '.'")]


@click.command()
@spec_argument
@click.pass_obj
def unlock(session, spec_file):
    """Remove the cluster's lock left by a command that was killed or lost its machine.

    With state in a bucket (state.path: gs://...) the lock is an object a dead command cannot
    delete; make sure the command it names is really gone first. A local lock (an flock) dies
    with its process: there is nothing to remove.

    Example: gcpgpu unlock cluster.yaml
    """
    cluster = session.cluster(spec_file)
    name, where = cluster.spec["name"], cluster.state.where
    holder = cluster.state.unlock()
    if holder:
        click.echo(f"removed the lock of cluster {name!r} ({where}); it was held by {holder}")
    else:
        click.echo(f"cluster {name!r} is not locked ({where})")


@hookimpl
def gcpgpu_commands():
    return [unlock]
