"""The emulator's Cloud Storage objects through google-cloud-storage: uploads (multipart, as
upload_from_string sends small data; media), metadata and alt=media downloads, generation
preconditions answered with 412 conditionNotMet, deletes answered 204."""
from __future__ import annotations

import json
import urllib.request

import pytest
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from gcpgpu.emulator.storage import StorageService, _crc32c


@pytest.fixture
def bucket(emu):
    client = storage.Client(project="p", credentials=AnonymousCredentials(),
                            client_options=ClientOptions(api_endpoint=emu.url))
    return client.create_bucket("state-bucket")


def service(emu) -> StorageService:
    return next(s for s in emu.services if isinstance(s, StorageService))


def test_upload_then_download_round_trips_text_and_reports_the_generation(emu, bucket):
    blob = bucket.blob("clusters/p/demo/state.json")
    blob.upload_from_string('{"name": "café"}', content_type="application/json")
    assert blob.generation > 0 and blob.size == len('{"name": "café"}'.encode())
    assert blob.content_type == "application/json"
    [upload] = [c for c in emu.calls if c.method_id == "storage.objects.insert"]
    assert (upload.http_method, upload.path) == ("POST", "/upload/storage/v1/b/state-bucket/o")

    fresh = bucket.blob("clusters/p/demo/state.json")
    assert fresh.download_as_text() == '{"name": "café"}'
    assert fresh.generation == blob.generation  # from the download's X-Goog-Generation header
    meta = bucket.get_blob("clusters/p/demo/state.json")
    assert (meta.generation, meta.crc32c, meta.md5_hash) == (blob.generation, blob.crc32c, blob.md5_hash)
    assert service(emu).object_data("state-bucket", "clusters/p/demo/state.json") == '{"name": "café"}'.encode()


def test_binary_data_survives_the_multipart_body(bucket):
    data = bytes(range(256)) + b"\r\n--==boundary\r\n" + bytes(range(256))
    bucket.blob("bin").upload_from_string(data)
    assert bucket.blob("bin").download_as_bytes() == data  # checksums verified by the library


def test_media_upload_takes_the_name_from_the_query(emu, bucket):
    request = urllib.request.Request(
        f"{emu.url}/upload/storage/v1/b/state-bucket/o?uploadType=media&name=a%2Fb.txt",
        data=b"hello", method="POST", headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request) as response:
        item = json.loads(response.read())
    assert (item["name"], item["size"], item["contentType"]) == ("a/b.txt", "5", "text/plain")
    assert isinstance(item["generation"], str) and item["generation"].isdigit()
    assert bucket.blob("a/b.txt").download_as_bytes() == b"hello"


def test_if_generation_match_zero_creates_only_once(bucket):
    bucket.blob("lock").upload_from_string("first", if_generation_match=0)
    with pytest.raises(exceptions.PreconditionFailed) as info:
        bucket.blob("lock").upload_from_string("second", if_generation_match=0)
    assert info.value.code == 412
    assert bucket.blob("lock").download_as_text() == "first"


def test_a_write_against_a_stale_generation_is_refused_with_conditionNotMet(emu, bucket):
    mine = bucket.blob("state.json")
    mine.upload_from_string("v1", if_generation_match=0)
    theirs = bucket.blob("state.json")
    theirs.download_as_text()
    theirs.upload_from_string("v2", if_generation_match=theirs.generation)
    request = urllib.request.Request(
        f"{emu.url}/upload/storage/v1/b/state-bucket/o?uploadType=media&name=state.json"
        f"&ifGenerationMatch={mine.generation}", data=b"v3", method="POST",
        headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request)
    assert info.value.code == 412
    error = json.loads(info.value.read())["error"]
    assert error["code"] == 412 and error["errors"][0]["reason"] == "conditionNotMet"
    with pytest.raises(exceptions.PreconditionFailed):
        mine.upload_from_string("v3", if_generation_match=mine.generation)
    assert bucket.blob("state.json").download_as_text() == "v2"


def test_delete_with_a_generation_precondition_answers_204(emu, bucket):
    blob = bucket.blob("lock")
    blob.upload_from_string("holder", if_generation_match=0)
    stale = blob.generation
    blob.upload_from_string("holder 2", if_generation_match=stale)
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob("lock").delete(if_generation_match=stale)
    bucket.blob("lock").delete(if_generation_match=blob.generation)
    assert [c.status for c in emu.calls if c.method_id == "storage.objects.delete"] == [412, 204]
    with pytest.raises(exceptions.NotFound):
        bucket.blob("lock").download_as_text()


def test_missing_object_and_missing_bucket_are_404(bucket):
    with pytest.raises(exceptions.NotFound, match="No such object"):
        bucket.blob("absent").download_as_text()
    with pytest.raises(exceptions.NotFound, match="bucket does not exist"):
        bucket.client.bucket("no-such-bucket").blob("x").download_as_text()


def test_versioned_bucket_keeps_the_old_generation_readable(bucket):
    bucket.versioning_enabled = True
    bucket.patch()
    blob = bucket.blob("state.json")
    blob.upload_from_string("old")
    old = blob.generation
    blob.upload_from_string("new")
    assert bucket.blob("state.json", generation=old).download_as_text() == "old"
    assert bucket.blob("state.json").download_as_text() == "new"
    assert len(list(bucket.client.list_blobs("state-bucket", versions=True))) == 2


def test_checksum_is_the_crc32c_the_library_computes(bucket):
    import google_crc32c  # the library's own dependency; the emulator has its own table

    data = b"123456789"
    assert _crc32c(data) == "4waSgw=="  # CRC-32C check value 0xE3069283
    bucket.blob("c").upload_from_string(data)
    checksum = google_crc32c.Checksum(data).digest()
    import base64

    assert bucket.get_blob("c").crc32c == base64.b64encode(checksum).decode()
