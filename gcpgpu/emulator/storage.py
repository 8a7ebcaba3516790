"""Cloud Storage JSON API (``/storage/v1/b...``) as the emulator serves it: buckets (insert, get,
list by project, patch, delete), their IAM policy (get/set with etags) and objects: list (with
``versions``), get (metadata, or the data with ``alt=media``, also at ``/download/storage/v1/...``),
insert by upload (``POST /upload/storage/v1/b/{bucket}/o`` with ``uploadType=multipart`` or
``media``) and delete, with the ``ifGenerationMatch`` / ``ifGenerationNotMatch`` preconditions
(412 ``conditionNotMet``). Generations are strings on the wire, increasing per object.

Tests may also add objects with ``put_object``. Bucket names are one global namespace, as in
Cloud Storage: a name taken in any project is a 409.

Differences from the real service, on purpose: a bucket delete answers 200 with ``{}`` instead of
204; no ACLs, no resumable uploads, no ranges, no compose/rewrite.
"""
from __future__ import annotations

import base64
import copy
import email.parser
import email.policy
import hashlib
import json
import re
import time
import uuid
from urllib.parse import quote, unquote

from .errors import ApiError, invalid
from .resources import rfc3339

PREFIX = "/storage/v1/b"
UPLOAD_PREFIX = "/upload/storage/v1/b"
DOWNLOAD_PREFIX = "/download/storage/v1/b"
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
METHOD_IDS = {f"storage.{m}" for m in (
    "buckets.insert", "buckets.list", "buckets.get", "buckets.patch", "buckets.delete",
    "buckets.getIamPolicy", "buckets.setIamPolicy", "objects.insert", "objects.list", "objects.get",
    "objects.delete")}
MUTABLE_FIELDS = ("labels", "versioning", "iamConfiguration", "lifecycle", "storageClass",
                  "defaultEventBasedHold", "retentionPolicy", "softDeletePolicy")


class StorageService:
    def __init__(self, emulator):
        self.emulator = emulator
        self.lock = emulator.state.lock
        self.buckets: dict[str, dict] = {}
        self.projects: dict[str, str] = {}  # bucket -> project
        self.policies: dict[str, dict] = {}
        self.objects: dict[str, list[dict]] = {}  # bucket -> every generation, live or noncurrent
        self.data: dict[tuple[str, str, str], bytes] = {}  # (bucket, name, generation) -> bytes
        self.last_generation = 0
        self.take_fault = emulator.state.take_fault  # Emulator.inject_fault's faults
        emulator.state.method_ids |= METHOD_IDS

    # ------------------------------------------------------------------ test controls

    def put_object(self, bucket: str, name: str, data: bytes = b"") -> dict:
        """Add an object (a new generation; the previous one turns noncurrent when versioned)."""
        with self.lock:
            self._bucket(bucket)
            return copy.deepcopy(self._store(bucket, name, data, "application/octet-stream",
                                             self.emulator.url or ""))

    def object_data(self, bucket: str, name: str) -> bytes | None:
        """The live generation's data, or None when there is no live object of that name."""
        with self.lock:
            item = self._live(bucket, name)
            return self.data[(bucket, name, item["generation"])] if item else None

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
        from .server import Call, Media

        route = self._route(http_method, path)
        if route is None:
            return None
        method_id, handler, params = route
        params["base_url"] = base_url
        try:
            with self.lock:
                fault = self.take_fault(method_id, None)
                if fault:
                    raise fault.api_error()
                payload = handler(params, query, body)
                # An object delete answers 204 with no body; a bucket delete 200 {} (see above).
                status = 204 if http_method == "DELETE" and isinstance(payload, Media) else 200
        except ApiError as error:
            status, payload = error.http_status, error.body()
        return status, payload, Call(method_id, http_method, path, None, http_method != "GET", status)

    def _route(self, http_method: str, path: str):
        for prefix, method, method_id, handler in (
                (UPLOAD_PREFIX, "POST", "objects.insert", self._upload),
                (DOWNLOAD_PREFIX, "GET", "objects.get", self._get_object)):
            if path.startswith(prefix + "/") and http_method == method:
                parts = [unquote(p) for p in path[len(prefix):].split("/")[1:]]
                if (len(parts) == 2 and parts[1] == "o") or (len(parts) >= 3 and parts[1] == "o"):
                    return f"storage.{method_id}", handler, {"bucket": parts[0], "object": "/".join(parts[2:])}
                return None
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
            ("object", "GET"): ("objects.get", self._get_object),
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

    def _get_object(self, params, query, body):
        bucket, name = self._bucket(params["bucket"])["name"], params["object"]
        item = self._generation(bucket, name, query.get("generation"))
        self._check_generation(item, query)
        if query.get("alt") != "media":
            return copy.deepcopy(item)
        from .server import Media

        return Media(self.data[(bucket, name, item["generation"])], item["contentType"], {
            "X-Goog-Generation": item["generation"], "X-Goog-Metageneration": item["metageneration"],
            "X-Goog-Hash": f"crc32c={item['crc32c']},md5={item['md5Hash']}",
            "X-Goog-Stored-Content-Length": item["size"], "X-Goog-Storage-Class": item["storageClass"],
            "ETag": item["etag"]})

    def _delete_object(self, params, query, body):
        bucket, name = self._bucket(params["bucket"])["name"], params["object"]
        item = self._generation(bucket, name, query.get("generation"))
        self._check_generation(item, query)
        self.objects[bucket].remove(item)
        self.data.pop((bucket, name, item["generation"]), None)
        from .server import Media

        return Media(b"")  # 204 No Content (see serve)

    def _upload(self, params, query, body) -> dict:
        """objects.insert by upload: ``multipart`` (a JSON metadata part, then the data part)
        or ``media`` (the body is the data; the name is a query parameter)."""
        bucket = self._bucket(params["bucket"])["name"]
        kind = query.get("uploadType")
        data = body.data  # a Media: the server passes /upload/ bodies undecoded
        if kind == "multipart":
            metadata, data, content_type = _multipart(body)
        elif kind == "media":
            metadata, content_type = {"name": query.get("name")}, body.content_type
        else:
            raise invalid(f"Invalid upload type: {kind!r} (this emulator serves multipart and media)")
        name = metadata.get("name") or query.get("name")
        if not name:
            raise ApiError(400, "required", "Required")
        self._check_generation(self._live(bucket, name), query)
        for field, digest in (("md5Hash", _md5(data)), ("crc32c", _crc32c(data))):
            if metadata.get(field) and metadata[field] != digest:
                raise invalid(f"Provided {field} \"{metadata[field]}\" doesn't match calculated "
                              f"{field} \"{digest}\".")
        item = self._store(bucket, name, data, metadata.get("contentType") or content_type
                           or "application/octet-stream", params.get("base_url", ""))
        item.update({k: v for k, v in metadata.items() if k in ("metadata", "cacheControl")})
        return copy.deepcopy(item)

    def _store(self, bucket: str, name: str, data: bytes, content_type: str, base_url: str) -> dict:
        """A new live generation of ``name``; the old one turns noncurrent when versioned."""
        versioned = self.buckets[bucket].get("versioning", {}).get("enabled", False)
        items = self.objects.setdefault(bucket, [])
        for old in [o for o in items if o["name"] == name and "timeDeleted" not in o]:
            if versioned:
                old["timeDeleted"] = rfc3339()
            else:
                items.remove(old)
                self.data.pop((bucket, name, old["generation"]), None)
        self.last_generation = max(time.time_ns() // 1000, self.last_generation + 1)  # microseconds, like GCS
        generation, now = str(self.last_generation), rfc3339()
        path = f"b/{bucket}/o/{quote(name, safe='')}"
        item = {"kind": "storage#object", "id": f"{bucket}/{name}/{generation}", "bucket": bucket,
                "name": name, "generation": generation, "metageneration": "1",
                "selfLink": f"{base_url}/storage/v1/{path}",
                "mediaLink": f"{base_url}/download/storage/v1/{path}?generation={generation}&alt=media",
                "contentType": content_type, "size": str(len(data)), "md5Hash": _md5(data),
                "crc32c": _crc32c(data), "etag": base64.b64encode(generation.encode()).decode(),
                "storageClass": self.buckets[bucket].get("storageClass", "STANDARD"),
                "timeCreated": now, "updated": now}
        items.append(item)
        self.data[(bucket, name, generation)] = data
        return item

    def _live(self, bucket: str, name: str) -> dict | None:
        return next((o for o in self.objects.get(bucket, [])
                     if o["name"] == name and "timeDeleted" not in o), None)

    def _generation(self, bucket: str, name: str, generation: str | None) -> dict:
        """The given generation (live or noncurrent), or the live one."""
        for item in self.objects.get(bucket, []):
            if item["name"] == name and (
                    item["generation"] == generation if generation else "timeDeleted" not in item):
                return item
        raise ApiError(404, "notFound", f"No such object: {bucket}/{name}")

    @staticmethod
    def _check_generation(item: dict | None, query: dict) -> None:
        """ifGenerationMatch (0: only if there is no live object) / ifGenerationNotMatch."""
        current = item["generation"] if item else "0"
        match, not_match = query.get("ifGenerationMatch"), query.get("ifGenerationNotMatch")
        if (match is not None and match != current) or (not_match is not None and not_match == current):
            raise ApiError(412, "conditionNotMet",
                           "At least one of the pre-conditions you specified did not hold.")

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


def _multipart(body) -> tuple[dict, bytes, str]:
    """(metadata, data, data content type) of a multipart/related upload body (a Media)."""
    if not body.content_type.startswith("multipart/related"):
        raise invalid("Multipart upload needs a multipart/related body")
    header = f"Content-Type: {body.content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + body.data)
    parts = list(message.iter_parts()) if message.is_multipart() else []
    if len(parts) != 2:
        raise invalid("Multipart upload needs two parts: metadata, then media")
    metadata = json.loads(parts[0].get_payload(decode=True) or b"{}")
    return metadata, parts[1].get_payload(decode=True) or b"", parts[1].get_content_type()


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


CRC32C_TABLE = _crc32c_table()


def _crc32c(data: bytes) -> str:
    """CRC32C (Castagnoli), base64 of its big-endian bytes, as GCS reports it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return base64.b64encode((crc ^ 0xFFFFFFFF).to_bytes(4, "big")).decode()
