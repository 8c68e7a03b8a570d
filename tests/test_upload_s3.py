"""The HTTP contract end to end against moto: byte-exact round trips, every failure clean."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from tests.helpers import (
    PART,
    chunks,
    form,
    incomplete_uploads,
    md5_checksum,
    multipart_body,
    objects,
    payload,
    s3_settings,
    sha256,
)

SIZES = [1, PART - 1, PART, PART + 1, 3 * PART + 17]


async def _no_leftovers(s3: Any, bucket: str, expected_keys: set[str]) -> None:
    """The bucket holds exactly ``expected_keys`` and no multipart upload is left open."""
    for _ in range(100):  # aborts finish after the response on disconnects; give them a moment
        if not incomplete_uploads(s3, bucket):
            break
        await asyncio.sleep(0.05)
    assert incomplete_uploads(s3, bucket) == []
    assert set(objects(s3, bucket)) == expected_keys


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("order", ["filename_first", "file_first"])
async def test_multipart_round_trip_is_byte_exact(client_for, moto_endpoint, bucket, s3, size, order) -> None:
    """Any size, either field order: the stored object has the sent bytes, and the answer says so."""
    client = await client_for(s3_settings(moto_endpoint, bucket))
    data = payload(size, seed=size)
    fields: list[tuple[str, str | bytes]] = [("caller", "+4930123"), ("filename", "call-7"), ("recording", data)]
    if order == "file_first":
        fields = [("recording", data), ("caller", "+4930123"), ("filename", "call-7")]
    resp = await client.post("/recordings", data=form(fields))
    body = await resp.json()
    assert resp.status == 200, body
    assert body == {
        "status": "success",
        "url": f"{moto_endpoint}/{bucket}/rec/call-7.wav",
        "key": "rec/call-7.wav",
        "size": size,
        "sha256": sha256(data),
        "audio": None,
        "checksum": md5_checksum(data, PART),  # --checksum auto on a store never probed: Content-MD5
        "bucket": bucket,
    }
    stored = s3.get_object(Bucket=bucket, Key="rec/call-7.wav")
    assert sha256(stored["Body"].read()) == sha256(data)
    assert stored["ContentType"] == "audio/wav"
    assert stored["Metadata"]["filename"] == "call-7"
    if order == "filename_first" or size <= PART:
        assert stored["Metadata"]["caller"] == "+4930123"
    facts = dict(stored["Metadata"])
    if "sha256" not in facts:  # a direct multipart upload carries them as tags
        tags = s3.get_object_tagging(Bucket=bucket, Key="rec/call-7.wav")["TagSet"]
        facts = {t["Key"]: t["Value"] for t in tags}
    assert facts["sha256"] == sha256(data) and facts["size"] == str(size)
    await _no_leftovers(s3, bucket, {"rec/call-7.wav"})


@pytest.mark.parametrize("size", [1, 3 * PART + 17])
async def test_raw_put_and_raw_post(client_for, moto_endpoint, bucket, s3, size) -> None:
    """PUT /recordings/NAME and POST /recordings?filename=NAME store the raw body."""
    client = await client_for(s3_settings(moto_endpoint, bucket))
    data = payload(size)
    put = await client.put("/recordings/put-1", data=data, headers={"Content-Type": "audio/wav"})
    assert put.status == 200, await put.text()
    post = await client.post(
        "/recordings", params={"filename": "post-1"}, data=data, headers={"Content-Type": "application/octet-stream"}
    )
    assert post.status == 200, await post.text()
    assert (await post.json())["sha256"] == sha256(data)
    stored = objects(s3, bucket)
    assert sha256(stored["rec/put-1.wav"]) == sha256(stored["rec/post-1.wav"]) == sha256(data)
    # Bytes of no known format keep the type the client declared; a generic one stays generic.
    assert s3.head_object(Bucket=bucket, Key="rec/put-1.wav")["ContentType"] == "audio/wav"
    assert s3.head_object(Bucket=bucket, Key="rec/post-1.wav")["ContentType"] == "application/octet-stream"
    await _no_leftovers(s3, bucket, {"rec/put-1.wav", "rec/post-1.wav"})


async def test_chunked_bodies(client_for, moto_endpoint, bucket, s3) -> None:
    """Bodies without Content-Length (chunked transfer encoding), raw and multipart, stream the same."""
    client = await client_for(s3_settings(moto_endpoint, bucket))
    data = payload(2 * PART + 5)
    raw = await client.put("/recordings/chunked", data=chunks(data), headers={"Content-Type": "audio/wav"})
    assert raw.status == 200, await raw.text()
    body = multipart_body([("filename", b"chunked-form"), ("recording", data)])
    multi = await client.post(
        "/recordings", data=chunks(body), headers={"Content-Type": "multipart/form-data; boundary=b0undary"}
    )
    assert multi.status == 200, await multi.text()
    stored = objects(s3, bucket)
    assert stored["rec/chunked.wav"] == data and stored["rec/chunked-form.wav"] == data


async def test_existing_key_is_refused_by_the_store(client_for, moto_endpoint, bucket, s3) -> None:
    """409 exists for single-PUT, multipart and late-name uploads; the first object stays intact."""
    client = await client_for(s3_settings(moto_endpoint, bucket))
    first = payload(10)
    s3.put_object(Bucket=bucket, Key="rec/taken.wav", Body=first)
    cases: list[list[tuple[str, str | bytes]]] = [
        [("filename", "taken"), ("recording", payload(100))],
        [("filename", "taken"), ("recording", payload(2 * PART + 1))],
        [("recording", payload(2 * PART + 1)), ("filename", "taken")],
    ]
    for fields in cases:
        resp = await client.post("/recordings", data=form(fields))
        body = await resp.json()
        assert resp.status == 409, body
        assert body["status"] == "failure" and body["error"] == "exists"
    assert objects(s3, bucket) == {"rec/taken.wav": first}
    await _no_leftovers(s3, bucket, {"rec/taken.wav"})


async def test_overwrite_replaces(client_for, moto_endpoint, bucket, s3) -> None:
    """--overwrite lets a new upload replace the object."""
    client = await client_for(s3_settings(moto_endpoint, bucket, overwrite=True))
    s3.put_object(Bucket=bucket, Key="rec/again.wav", Body=b"old")
    new = payload(2 * PART + 3)
    resp = await client.post("/recordings", data=form([("filename", "again"), ("recording", new)]))
    assert resp.status == 200
    assert objects(s3, bucket) == {"rec/again.wav": new}


@pytest.mark.parametrize("kind", ["raw", "multipart"])
async def test_streamed_oversize_is_413_and_aborted(client_for, moto_endpoint, bucket, s3, kind) -> None:
    """A chunked body that grows past the limit mid-stream is refused and its multipart upload aborted."""
    client = await client_for(s3_settings(moto_endpoint, bucket, max_upload_bytes=3 * PART))
    data = payload(4 * PART)
    if kind == "raw":
        resp = await client.put("/recordings/big", data=chunks(data), headers={"Content-Type": "audio/wav"})
    else:
        body = multipart_body([("filename", b"big"), ("recording", data)])
        resp = await client.post(
            "/recordings", data=chunks(body), headers={"Content-Type": "multipart/form-data; boundary=b0undary"}
        )
    assert resp.status == 413
    assert (await resp.json())["error"] == "too_large"
    await _no_leftovers(s3, bucket, set())


async def test_storage_unreachable_is_a_failure(client_for, bucket) -> None:
    """With S3 down, the answer is 503 storage_unavailable, never success (the PHP sample's bug)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    client = await client_for(s3_settings(dead, bucket, s3_max_attempts=2))
    for size in (10, 3 * PART):
        resp = await client.post("/recordings", data=form([("filename", "lost"), ("recording", payload(size))]))
        body = await resp.json()
        assert resp.status == 503, body
        assert body["status"] == "failure" and body["error"] == "storage_unavailable"


async def test_missing_bucket_is_a_failure(client_for, moto_endpoint, s3) -> None:
    """A bucket that does not exist is 502 storage_failed with S3's code in the message."""
    client = await client_for(s3_settings(moto_endpoint, "no-such-bucket-here"))
    resp = await client.post("/recordings", data=form([("filename", "x"), ("recording", b"abc")]))
    body = await resp.json()
    assert resp.status == 502 and body["error"] == "storage_failed"
    assert "NoSuchBucket" in body["message"]


async def _send_partial(port: int, headers: bytes, body: bytes) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(headers + body)
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.transport.abort()  # vanish mid-body, like a dropped call leg


@pytest.mark.parametrize("offset", [10, PART - 3, PART, 2 * PART + 100, 3 * PART - 1])
async def test_client_disconnect_leaves_nothing(client_for, moto_endpoint, bucket, s3, offset) -> None:
    """A client that vanishes mid-body leaves no object and no incomplete multipart upload."""
    client = await client_for(s3_settings(moto_endpoint, bucket))
    data = payload(3 * PART)
    body = multipart_body([("filename", b"gone"), ("recording", data)])
    cut = body.index(data[:64]) + offset
    headers = (
        f"POST /recordings HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b0undary\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    await _send_partial(client.port, headers, body[:cut])
    await _no_leftovers(s3, bucket, set())
    ok = await client.post("/recordings", data=form([("filename", "after"), ("recording", b"still serving")]))
    assert ok.status == 200


async def test_read_timeout_is_408_and_aborts(client_for, moto_endpoint, bucket, s3) -> None:
    """A client that stops sending for --read-timeout gets 408 and its upload is aborted."""
    client = await client_for(s3_settings(moto_endpoint, bucket, read_timeout=0.5))
    data = payload(2 * PART + 10)

    async def stall():
        yield data
        await asyncio.sleep(3)
        yield b"never"

    resp = await client.put("/recordings/slow", data=stall(), headers={"Content-Type": "audio/wav"})
    assert resp.status == 408
    assert (await resp.json())["error"] == "client_timeout"
    await _no_leftovers(s3, bucket, set())


async def test_more_uploads_than_the_budget_holds(client_for, moto_endpoint, bucket, s3) -> None:
    """12 concurrent 3-part uploads through a 2-part budget all finish byte-exact (no deadlock)."""
    client = await client_for(s3_settings(moto_endpoint, bucket, max_buffer_bytes=2 * PART, part_concurrency=2))
    datas = {f"c{i}": payload(2 * PART + i + 1, seed=i) for i in range(12)}

    async def send(name: str, data: bytes) -> int:
        resp = await client.put(f"/recordings/{name}", data=chunks(data), headers={"Content-Type": "audio/wav"})
        return resp.status

    statuses = await asyncio.wait_for(asyncio.gather(*(send(n, d) for n, d in datas.items())), 120)
    assert statuses == [200] * 12
    stored = objects(s3, bucket)
    assert {k: sha256(v) for k, v in stored.items()} == {f"rec/{n}.wav": sha256(d) for n, d in datas.items()}


async def test_admission_limit_is_503_with_retry_after(client_for, moto_endpoint, bucket, s3) -> None:
    """Beyond --max-concurrent-uploads, new uploads get 503 and Retry-After before the body is read."""
    client = await client_for(s3_settings(moto_endpoint, bucket, max_concurrent_uploads=1))
    release = asyncio.Event()

    async def held():
        yield b"x" * 1000
        await release.wait()
        yield b"y" * 1000

    first = asyncio.ensure_future(client.put("/recordings/held", data=held(), headers={"Content-Type": "audio/wav"}))
    await asyncio.sleep(0.3)
    second = await client.put("/recordings/other", data=b"abc", headers={"Content-Type": "audio/wav"})
    assert second.status == 503
    assert second.headers["Retry-After"] == "1"
    assert (await second.json())["error"] == "busy"
    release.set()
    assert (await first).status == 200
    assert set(objects(s3, bucket)) == {"rec/held.wav"}


async def test_virtual_hosted_url_on_aws() -> None:
    """Without a custom endpoint the URL is virtual-hosted, as the PHP sample builds it."""
    from streamproxy.sinks.s3 import S3Options, S3Sink

    sink = S3Sink(S3Options.from_settings(s3_settings(None, "calls", s3_region="eu-central-1"), endpoint_url=None))
    await sink.start()
    try:
        assert sink.object_url("rec/call 7.wav") == "https://calls.s3.eu-central-1.amazonaws.com/rec/call%207.wav"
    finally:
        await sink.close()
