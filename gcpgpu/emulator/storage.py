"""Cloud Storage JSON API (``/storage/v1/b...``) as the emulator serves it: buckets (insert, get,
list by project, patch, delete), their IAM policy (get/set with etags) and enough of objects
(list, with ``versions``; delete by generation) to tell whether a bucket is empty and empty it.

Objects are put in by tests with ``put_object`` (uploads are not served). Bucket names are one
global namespace, as in Cloud Storage: a name taken in any project is a 409.

Differences from the real service, on purpose: a delete answers 200 with ``{}`` instead of 204
(the emulator's HTTP layer always sends a JSON body); no ACLs, no object data.
"""
from __future__ import annotations

import copy
import re
import time
import uuid
from urllib.parse import unquote

from .errors import ApiError, invalid, not_found
from .resources import rfc3339

PREFIX = "/storage/v1/b"
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
MUTABLE_FIELDS = ("labels", "versioning", "iamConfiguration", "lifecycle", "storageClass",
                  "defaultEventBasedHold", "retentionPolicy", "softDeletePolicy")


class StorageService:
    def __init__(self, emulator):
        self.lock = emulator.state.lock
        self.buckets: dict[str, dict] = {}
        self.projects: dict[str, str] = {}  # bucket -> project
        self.policies: dict[str, dict] = {}
        self.objects: dict[str, list[dict]] = {}  # bucket -> every generation, live or noncurrent
        self.faults: dict[str, list[ApiError]] = {}

    # ------------------------------------------------------------------ test controls

    def inject_fault(self, method_id: str, http_status: int = 503, message: str = "injected") -> None:
        """The next call of ``method_id`` (e.g. "storage.buckets.list") fails with that status."""
        with self.lock:
            self.faults.setdefault(method_id, []).append(ApiError(http_status, "injected", message))

    def put_object(self, bucket: str, name: str) -> dict:
        """Add an object (a new generation; the previous one turns noncurrent when versioned)."""
        with self.lock:
            self._bucket(bucket)
            versioned = self.buckets[bucket].get("versioning", {}).get("enabled", False)
            items = self.objects.setdefault(bucket, [])
            for old in [o for o in items if o["name"] == name and "timeDeleted" not in o]:
                if versioned:
                    old["timeDeleted"] = rfc3339()
                else:
                    items.remove(old)
            item = {"kind": "storage#object", "bucket": bucket, "name": name,
                    "generation": str(time.time_ns()), "metageneration": "1", "size": "0",
                    "timeCreated": rfc3339()}
            items.append(item)
            return copy.deepcopy(item)

    def snapshot(self) -> list[dict]:
        with self.lock:
            return [copy.deepcopy(b) for b in self.buckets.values()]

    def policy(self, bucket: str) -> dict:
        with self.lock:
            return copy.deepcopy(self.policies[bucket])

    # ------------------------------------------------------------------ service interface

    def advance(self) -> None:
        """Bucket changes take effect at once: nothing to finish."""

    def serve(self, http_method, path, query, body, base_url):
        from .server import Call

        route = self._route(http_method, path)
        if route is None:
            return None
        method_id, handler, params = route
        try:
            with self.lock:
                pending = self.faults.get(method_id)
                if pending:
                    raise pending.pop(0)
                status, payload = 200, handler(params, query, body)
        except ApiError as error:
            status, payload = error.http_status, error.body()
        return status, payload, Call(method_id, http_method, path, None, http_method != "GET", status)

    def _route(self, http_method: str, path: str):
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            return None
        parts = [unquote(p) for p in path[len(PREFIX):].split("/")[1:]]
        table = {
            (0, "POST"): ("buckets.insert", self._insert),
            (0, "GET"): ("buckets.list", self._list),
            (1, "GET"): ("buckets.get", self._get),
            (1, "PATCH"): ("buckets.patch", self._patch),
            (1, "DELETE"): ("buckets.delete", self._delete),
            ("iam", "GET"): ("buckets.getIamPolicy", self._get_policy),
            ("iam", "PUT"): ("buckets.setIamPolicy", self._set_policy),
            ("o", "GET"): ("objects.list", self._list_objects),
            ("object", "DELETE"): ("objects.delete", self._delete_object),
        }
        if len(parts) <= 1:
            shape = len(parts)
        elif len(parts) == 2 and parts[1] in ("iam", "o"):
            shape = parts[1]
        elif len(parts) >= 3 and parts[1] == "o":
            shape = "object"
        else:
            return None
        if (shape, http_method) not in table:
            return None
        method_id, handler = table[(shape, http_method)]
        params = {"bucket": parts[0] if parts else "", "object": "/".join(parts[2:])}
        return f"storage.{method_id}", handler, params

    # ------------------------------------------------------------------ buckets

    def _insert(self, params, query, body) -> dict:
        name = body.get("name", "")
        project = query.get("project")
        if not project:
            raise invalid("Required parameter: project")
        if not BUCKET_NAME.match(name) or ".." in name or name.startswith("goog"):
            raise invalid(f"Invalid bucket name: '{name}'")
        if name in self.buckets:
            raise ApiError(409, "conflict", "Your previous request to create the named bucket "
                                            "succeeded and you already own it." if self.projects[name] == project
                           else "The requested bucket name is not available.")
        now = rfc3339()
        bucket = {
            "kind": "storage#bucket", "id": name, "name": name, "projectNumber": _project_number(project),
            "metageneration": "1", "location": (body.get("location") or "US").upper(),
            "locationType": "region" if "-" in (body.get("location") or "") else "multi-region",
            "storageClass": body.get("storageClass", "STANDARD"), "timeCreated": now, "updated": now,
            "etag": "CAE=",
            "iamConfiguration": {"uniformBucketLevelAccess": {"enabled": False},
                                 "publicAccessPrevention": "inherited"},
        }
        for key in MUTABLE_FIELDS:
            if key in body:
                bucket[key] = _merge(bucket.get(key), body[key]) if key == "iamConfiguration" else body[key]
        self.buckets[name] = bucket
        self.projects[name] = project
        self.policies[name] = _default_policy(name, project)
        self.objects[name] = []
        return copy.deepcopy(bucket)

    def _list(self, params, query, body) -> dict:
        project = query.get("project")
        if not project:
            raise invalid("Required parameter: project")
        prefix = query.get("prefix", "")
        items = [copy.deepcopy(b) for name, b in sorted(self.buckets.items())
                 if self.projects[name] == project and name.startswith(prefix)]
        return {"kind": "storage#buckets", **({"items": items} if items else {})}

    def _get(self, params, query, body) -> dict:
        return copy.deepcopy(self._bucket(params["bucket"]))

    def _patch(self, params, query, body) -> dict:
        bucket = self._bucket(params["bucket"])
        self._check_metageneration(bucket, query)
        for key, value in body.items():
            if key == "labels":  # a patch merges labels; a null value removes one
                merged = {**bucket.get("labels", {}), **(value or {})}
                bucket["labels"] = {k: v for k, v in merged.items() if v is not None}
            elif key in ("versioning", "iamConfiguration"):
                bucket[key] = _merge(bucket.get(key), value)
            elif key in MUTABLE_FIELDS:
                bucket[key] = value
        bucket["metageneration"] = str(int(bucket["metageneration"]) + 1)
        bucket["updated"] = rfc3339()
        return copy.deepcopy(bucket)

    def _delete(self, params, query, body) -> dict:
        bucket = self._bucket(params["bucket"])
        self._check_metageneration(bucket, query)
        if self.objects.get(bucket["name"]):
            raise ApiError(409, "conflict", "The bucket you tried to delete is not empty.")
        name = bucket["name"]
        for table in (self.buckets, self.projects, self.policies, self.objects):
            table.pop(name, None)
        return {}

    # ------------------------------------------------------------------ IAM

    def _get_policy(self, params, query, body) -> dict:
        self._bucket(params["bucket"])
        return copy.deepcopy(self.policies[params["bucket"]])

    def _set_policy(self, params, query, body) -> dict:
        self._bucket(params["bucket"])
        current = self.policies[params["bucket"]]
        if body.get("etag") and body["etag"] != current["etag"]:
            raise ApiError(412, "conditionNotMet", "Precondition Failed: the policy changed (etag)")
        for binding in body.get("bindings", []):
            if not str(binding.get("role", "")).startswith("roles/") or not binding.get("members"):
                raise invalid(f"Invalid binding: {binding}")
        self.policies[params["bucket"]] = {
            "kind": "storage#policy", "resourceId": current["resourceId"],
            "version": body.get("version", 1), "bindings": copy.deepcopy(body.get("bindings", [])),
            "etag": uuid.uuid4().hex[:8]}
        return copy.deepcopy(self.policies[params["bucket"]])

    # ------------------------------------------------------------------ objects

    def _list_objects(self, params, query, body) -> dict:
        self._bucket(params["bucket"])
        every = str(query.get("versions", "")).lower() == "true"
        items = [o for o in self.objects.get(params["bucket"], []) if every or "timeDeleted" not in o]
        start = int(query.get("pageToken") or 0)
        size = int(query.get("maxResults") or 1000)
        page = [copy.deepcopy(o) for o in items[start:start + size]]
        found = {"kind": "storage#objects", **({"items": page} if page else {})}
        if start + size < len(items):
            found["nextPageToken"] = str(start + size)
        return found

    def _delete_object(self, params, query, body) -> dict:
        items = self.objects.get(self._bucket(params["bucket"])["name"], [])
        generation = query.get("generation")
        for item in items:
            if item["name"] == params["object"] and (
                    item["generation"] == generation if generation else "timeDeleted" not in item):
                items.remove(item)
                return {}
        raise not_found(f"{params['bucket']}/{params['object']}")

    # ------------------------------------------------------------------ helpers

    def _bucket(self, name: str) -> dict:
        if name not in self.buckets:
            raise ApiError(404, "notFound", "The specified bucket does not exist.")
        return self.buckets[name]

    @staticmethod
    def _check_metageneration(bucket: dict, query: dict) -> None:
        wanted = query.get("ifMetagenerationMatch")
        if wanted is not None and wanted != bucket["metageneration"]:
            raise ApiError(412, "conditionNotMet", "Precondition Failed")


def _merge(base, change):
    if isinstance(base, dict) and isinstance(change, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in change.items()}}
    return change


def _project_number(project: str) -> str:
    return str(int.from_bytes(project.encode()[:6].ljust(6, b"\0"), "big") % 10**12)


def _default_policy(bucket: str, project: str) -> dict:
    return {"kind": "storage#policy", "resourceId": f"projects/_/buckets/{bucket}", "version": 1,
            "etag": "CAE=", "bindings": [
                {"role": "roles/storage.legacyBucketOwner",
                 "members": [f"projectEditor:{project}", f"projectOwner:{project}"]},
                {"role": "roles/storage.legacyBucketReader", "members": [f"projectViewer:{project}"]},
            ]}
