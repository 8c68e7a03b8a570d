"""The S3 fault matrix: faults injected between streamproxy and moto, per operation.

Each case asserts what the client is told AND what is left in the bucket: a success is a
byte-exact object and nothing else; a failure is a JSON 5xx, no object and no open multipart upload.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog

from streamproxy.sinks.s3 import S3Options, S3Sink
from tests.helpers import PART, form, incomplete_uploads, objects, payload, s3_settings, sha256
from tests.s3_proxy import S3Proxy

SMALL = 1000  # one part: a single PutObject
MULTI = PART + 7  # two parts: create, 2 x part, complete

# How each upload shape reaches S3 (which operations it uses):
#   single: put                    multi: create, part, complete
#   late (file before filename): create/part/complete (or put) to staging, create, copy-part,
#   complete on the final key, delete of the staging object
STAGING = ".streamproxy-staging/"
SHAPES = {
    "single": ("filename_first", SMALL),
    "multi": ("filename_first", MULTI),
    "late_single": ("file_first", SMALL),
    "late_multi": ("file_first", MULTI),
}


@pytest.fixture
async def proxy(moto_endpoint: str) -> AsyncIterator[S3Proxy]:
    async with S3Proxy(moto_endpoint) as fault_proxy:
        yield fault_proxy
    # `pytest -s tests/test_faults_s3.py | grep faults_injected` tallies the matrix for docs/reliability.md
    print(f"faults_injected={sum(fault_proxy.injected.values())} s3_requests={sum(fault_proxy.requests.values())}")


async def _start(client_for, proxy: S3Proxy, bucket: str, **overrides: Any):
    values: dict[str, Any] = dict(s3_timeout=1.0, s3_max_attempts=3)
    values.update(overrides)
    return await client_for(s3_settings(proxy.url, bucket, **values))


async def _upload(client, shape: str, name: str = "call-1", seed: int = 1) -> tuple[int, dict[str, Any], bytes]:
    order, size = SHAPES[shape]
    data = payload(size, seed=seed)
    fields: list[tuple[str, str | bytes]] = [("filename", name), ("recording", data)]
    if order == "file_first":
        fields.reverse()
    resp = await client.post("/recordings", data=form(fields))
    return resp.status, await resp.json(), data


async def _settled(s3: Any, bucket: str) -> None:
    """Wait until aborts that run after the answer are done."""
    for _ in range(100):
        if not incomplete_uploads(s3, bucket):
            return
        await asyncio.sleep(0.05)


async def _assert_stored(s3: Any, bucket: str, body: dict[str, Any], data: bytes, key: str = "rec/call-1.wav") -> None:
    assert body["status"] == "success" and body["key"] == key and body["sha256"] == sha256(data), body
    await _settled(s3, bucket)
    stored = objects(s3, bucket)
    assert list(stored) == [key], "exactly the recording, no staging object, no duplicate"
    assert sha256(stored[key]) == sha256(data)
    assert incomplete_uploads(s3, bucket) == []


async def _assert_nothing(s3: Any, bucket: str) -> None:
    await _settled(s3, bucket)
    assert objects(s3, bucket) == {}
    assert incomplete_uploads(s3, bucket) == []


# --- transient faults: retries hide them ------------------------------------------------------

TRANSIENT = [
    ("single", "put"),
    ("multi", "create"),
    ("multi", "part"),
    ("multi", "complete"),
    ("late_multi", "copy-part"),
    ("late_multi", "complete"),
    ("late_single", "put"),
    ("late_single", "complete"),
]


@pytest.mark.parametrize("action", ["500", "503", "reset"])
@pytest.mark.parametrize(("shape", "operation"), TRANSIENT)
async def test_transient_fault_is_retried_and_the_object_is_byte_exact(
    client_for, proxy, bucket, s3, shape, operation, action
) -> None:
    """A failed attempt of one operation: botocore retries and the upload still succeeds."""
    client = await _start(client_for, proxy, bucket)
    proxy.add(operation, action, times=1)
    status, body, data = await _upload(client, shape)
    assert status == 200, body
    assert proxy.injected[f"{operation}:{action}"] == 1
    await _assert_stored(s3, bucket, body, data)


@pytest.mark.parametrize(("shape", "operation"), TRANSIENT)
async def test_slow_storage_is_waited_for(client_for, proxy, bucket, s3, shape, operation) -> None:
    """A delay below the S3 timeout is just latency."""
    client = await _start(client_for, proxy, bucket)
    proxy.add(operation, "delay", times=None, seconds=0.3)
    status, body, data = await _upload(client, shape)
    assert status == 200, body
    await _assert_stored(s3, bucket, body, data)


# --- persistent faults: a clean failure, nothing left ---------------------------------------

PERSISTENT = [
    ("single", "put"),
    ("multi", "create"),
    ("multi", "part"),
    ("multi", "complete"),
    ("late_multi", "copy-part"),
    ("late_single", "complete"),
]
EXPECTED = {"500": (502, "storage_failed"), "503": (503, "storage_unavailable"), "reset": (503, "storage_unavailable")}


@pytest.mark.parametrize("action", ["500", "503", "reset"])
@pytest.mark.parametrize(("shape", "operation"), PERSISTENT)
async def test_persistent_fault_is_a_clean_failure(client_for, proxy, bucket, s3, shape, operation, action) -> None:
    """Every attempt fails: a JSON 5xx naming the storage error, no object, the multipart upload aborted."""
    client = await _start(client_for, proxy, bucket, s3_max_attempts=2)
    proxy.add(operation, action, times=None)
    status, body, _ = await _upload(client, shape)
    assert (status, body["status"], body["error"]) == (*EXPECTED[action][:1], "failure", EXPECTED[action][1]), body
    assert proxy.injected[f"{operation}:{action}"] >= 2
    await _assert_nothing(s3, bucket)
    proxy.clear()
    ok_status, ok_body, ok_data = await _upload(client, shape, name="after", seed=9)
    assert ok_status == 200, ok_body
    await _assert_stored(s3, bucket, ok_body, ok_data, key="rec/after.wav")


@pytest.mark.parametrize("attempts", [1, 3])
async def test_s3_max_attempts_is_the_number_of_tries(client_for, proxy, bucket, s3, attempts) -> None:
    """--s3-max-attempts N sends a failing call exactly N times, then reports the failure."""
    client = await _start(client_for, proxy, bucket, s3_max_attempts=attempts)
    proxy.add("put", "500", times=None)
    status, body, _ = await _upload(client, "single")
    assert status == 502 and body["error"] == "storage_failed", body
    assert "InternalError" in body["message"]
    assert proxy.requests["put"] == attempts
    await _assert_nothing(s3, bucket)


@pytest.mark.parametrize("shape", ["multi", "late_multi"])
async def test_failed_abort_is_logged_and_swept(client_for, proxy, bucket, s3, moto_endpoint, shape) -> None:
    """Parts fail and so does every abort: the client gets a failure, `abort_failed` is logged, sweep cleans up."""
    client = await _start(client_for, proxy, bucket, s3_max_attempts=1)
    proxy.add("part", "500", times=None)
    proxy.add("abort", "503", times=None)
    with structlog.testing.capture_logs() as logs:
        status, body, _ = await _upload(client, shape)
    assert status == 502 and body["error"] == "storage_failed", body
    failed = [e for e in logs if e["event"] == "abort_failed"]
    assert len(failed) == 1 and failed[0]["hint"] == "run streamproxy sweep"
    assert objects(s3, bucket) == {}
    left = incomplete_uploads(s3, bucket)
    assert len(left) == 1 and failed[0]["key"] == left[0] and failed[0]["upload_id"]
    sink = S3Sink(S3Options.from_settings(s3_settings(moto_endpoint, bucket)))
    await sink.start()
    try:
        swept = await sink.sweep(0, dry_run=False)
    finally:
        await sink.close()
    assert [(item.kind, item.key) for item in swept] == [("multipart_upload", left[0])]
    await _assert_nothing(s3, bucket)


# --- a hung S3 call is bounded by --s3-timeout ------------------------------------------------

HUNG = [
    ("single", "put", "hang"),
    ("single", "put", "stall"),
    ("multi", "create", "hang"),
    ("multi", "part", "hang"),
    ("multi", "part", "stall"),
    ("multi", "complete", "hang"),
    ("late_multi", "copy-part", "hang"),
    ("late_single", "complete", "hang"),
]


@pytest.mark.parametrize(("shape", "operation", "action"), HUNG)
async def test_hung_call_times_out_cleanly(client_for, proxy, bucket, s3, shape, operation, action) -> None:
    """S3 never answers (hang: body read; stall: body not even read): 504 within the timeout budget, nothing left."""
    client = await _start(client_for, proxy, bucket, s3_timeout=1.0, s3_max_attempts=2)
    proxy.add(operation, action, times=None)
    started = time.monotonic()
    status, body, _ = await asyncio.wait_for(_upload(client, shape), 30)
    elapsed = time.monotonic() - started
    assert status == 504 and body["error"] == "storage_timeout", body
    assert elapsed < 12, f"a hung S3 call held the upload for {elapsed:.1f}s"
    await _assert_nothing(s3, bucket)


# --- the store did it, but its answer was lost --------------------------------------------------

LOST = [
    ("single", "put", None),
    ("multi", "part", None),
    ("multi", "complete", None),
    ("late_single", "put", STAGING),
    ("late_single", "complete", "rec/call-1"),
    ("late_multi", "complete", STAGING),
    ("late_multi", "copy-part", None),
    ("late_multi", "complete", "rec/call-1"),
]


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize(("shape", "operation", "key"), LOST)
async def test_lost_answer_is_neither_failure_nor_duplicate(
    client_for, proxy, bucket, s3, shape, operation, key, overwrite
) -> None:
    """The write took effect and only its answer was lost: the retry reports success, one object, byte-exact."""
    client = await _start(client_for, proxy, bucket, overwrite=overwrite)
    proxy.add(operation, "drop", times=1, key_contains=key)
    status, body, data = await _upload(client, shape)
    assert status == 200, body
    assert proxy.injected[f"{operation}:drop"] == 1
    await _assert_stored(s3, bucket, body, data)


RETRY_ANSWERS = [
    ("single", "put", None, "412"),
    ("multi", "complete", None, "404"),
    ("multi", "complete", None, "412"),
    ("late_single", "complete", "rec/call-1", "404"),
    ("late_multi", "complete", "rec/call-1", "412"),
]


@pytest.mark.parametrize(("shape", "operation", "key", "answer"), RETRY_ANSWERS)
async def test_retry_refused_after_a_lost_answer_is_confirmed(
    client_for, proxy, bucket, s3, shape, operation, key, answer
) -> None:
    """The first final write took effect, the retry is refused (412 / NoSuchUpload): HeadObject confirms it is ours."""
    client = await _start(client_for, proxy, bucket)
    proxy.add(operation, "drop", times=1, key_contains=key)
    proxy.add(operation, answer, times=1, key_contains=key)
    status, body, data = await _upload(client, shape)
    assert status == 200, body
    assert proxy.injected[f"{operation}:drop"] == proxy.injected[f"{operation}:{answer}"] == 1
    assert proxy.requests["head"] >= 1
    await _assert_stored(s3, bucket, body, data)


async def test_lost_answer_while_another_upload_owns_the_key(client_for, proxy, bucket, s3) -> None:
    """A lost complete is not mistaken for ours when the key holds someone else's object: 409, theirs intact."""
    client = await _start(client_for, proxy, bucket)
    s3.put_object(Bucket=bucket, Key="rec/call-1.wav", Body=b"theirs")
    proxy.add("complete", "drop", times=1)
    status, body, _ = await _upload(client, "multi")
    assert status == 409 and body["error"] == "exists", body
    await _settled(s3, bucket)
    assert objects(s3, bucket) == {"rec/call-1.wav": b"theirs"}
    assert incomplete_uploads(s3, bucket) == []


async def _sweep(moto_endpoint: str, bucket: str) -> list[tuple[str, str]]:
    sink = S3Sink(S3Options.from_settings(s3_settings(moto_endpoint, bucket)))
    await sink.start()
    try:
        return [(item.kind, item.key) for item in await sink.sweep(0, dry_run=False)]
    finally:
        await sink.close()


async def test_lost_create_answer_leaves_an_upload_for_sweep(client_for, proxy, bucket, s3, moto_endpoint) -> None:
    """A CreateMultipartUpload whose answer is lost opens an upload nobody knows: stored anyway, sweep removes it."""
    client = await _start(client_for, proxy, bucket)
    proxy.add("create", "drop", times=1)
    status, body, data = await _upload(client, "multi")
    assert status == 200, body
    assert sha256(objects(s3, bucket)["rec/call-1.wav"]) == sha256(data)
    assert incomplete_uploads(s3, bucket) == ["rec/call-1.wav"]
    assert await _sweep(moto_endpoint, bucket) == [("multipart_upload", "rec/call-1.wav")]
    assert incomplete_uploads(s3, bucket) == []
    assert sha256(objects(s3, bucket)["rec/call-1.wav"]) == sha256(data)


@pytest.mark.parametrize("action", ["500", "drop"])
async def test_failed_tagging_keeps_the_stored_recording(client_for, proxy, bucket, s3, action) -> None:
    """Tags are written after the object: losing them is a warning, the recording is reported stored."""
    client = await _start(client_for, proxy, bucket, s3_max_attempts=1)
    proxy.add("tagging", action, times=None)
    with structlog.testing.capture_logs() as logs:
        status, body, data = await _upload(client, "multi")
    assert status == 200, body
    assert proxy.injected[f"tagging:{action}"] >= 1
    assert action == "drop" or any(e["event"] == "tagging_failed" for e in logs)
    await _assert_stored(s3, bucket, body, data)


@pytest.mark.parametrize("shape", ["late_single", "late_multi"])
async def test_failed_staging_delete_keeps_the_stored_recording(
    client_for, proxy, bucket, s3, moto_endpoint, shape
) -> None:
    """The recording reached its key, only the staging copy could not be deleted: success, and sweep removes it."""
    client = await _start(client_for, proxy, bucket, s3_max_attempts=1)
    proxy.add("delete", "500", times=None, key_contains=STAGING)
    with structlog.testing.capture_logs() as logs:
        status, body, data = await _upload(client, shape)
    assert status == 200, body
    assert any(e["event"] == "staging_delete_failed" for e in logs)
    stored = objects(s3, bucket)
    assert sha256(stored.pop("rec/call-1.wav")) == sha256(data)
    assert [k.startswith("rec/" + STAGING) for k in stored] == [True]
    swept = await _sweep(moto_endpoint, bucket)
    assert [kind for kind, _ in swept] == ["staging_object"]
    await _assert_stored(s3, bucket, body, data)


async def test_unconfirmable_lost_answer_is_a_storage_failure(client_for, proxy, bucket, s3) -> None:
    """A lost complete that cannot be confirmed (HeadObject fails too) is a 5xx, never a 409 `exists`."""
    client = await _start(client_for, proxy, bucket, s3_max_attempts=2)
    proxy.add("complete", "drop", times=1)
    proxy.add("complete", "412", times=1)
    proxy.add("head", "500", times=None)
    status, body, _ = await _upload(client, "multi")
    assert status in (502, 503), (body, proxy.requests, proxy.injected)
    assert "HeadObject" in body["message"]
    assert body["status"] == "failure" and body["error"].startswith("storage_"), body
