"""Helpers shared by the tests: settings for each store, payloads, bucket inspection, request builders."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streamproxy.config import MIB, Settings, StorageURI
from streamproxy.sinks.memory import MemorySink, MemoryWriter

PART = 5 * MIB  # S3's minimum part size keeps the multi-part cases small
# Storage tests send opaque bytes and check them byte for byte: store them as they came, under
# the old fixed extension. The audio tests (tests/test_audio_*.py) use streamproxy's own defaults.
RAW_BYTES = {"raw_audio": "none", "key_template": "{filename}.wav"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating bytes (so a misplaced part changes the hash)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest() * 512
        counter += 1
    return bytes(out[:size])


def objects(s3: Any, bucket: str) -> dict[str, bytes]:
    """Every object in the bucket with its bytes."""
    listing = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing}


def incomplete_uploads(s3: Any, bucket: str) -> list[str]:
    """Keys of multipart uploads that were neither completed nor aborted."""
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def s3_settings(moto_endpoint: str | None, bucket: str, prefix: str = "rec/", **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        storage=StorageURI.parse(f"s3://{bucket}/{prefix}"),
        s3_endpoint_url=moto_endpoint,
        part_size=PART,
        max_buffer_bytes=8 * PART,
        # moto has every feature AWS documents; the probe itself is tested in test_probe.py and tests/compat/
        s3_capabilities="aws",
        **RAW_BYTES,
    )
    values.update(overrides)
    return Settings(**values)


def fs_settings(root: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        storage=StorageURI.parse(root.as_uri()), part_size=PART, max_buffer_bytes=8 * PART, **RAW_BYTES
    )
    values.update(overrides)
    return Settings(**values)


ClientFactory = Callable[..., Any]

KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/0b7a-test"


class TrackedMemorySink(MemorySink):
    """A ``MemorySink`` that counts the uploads it opened, so a test can check that every one ended.

    For the storage-neutral HTTP cases (validation, limits, auth): what they assert does not depend on
    S3, and an in-memory sink answers them without moto. S3-specific cleanup (multipart uploads left
    open, staged copies) stays tested against moto.
    """

    opened = 0

    async def open(self, *args: Any, **kwargs: Any) -> MemoryWriter:
        self.opened += 1
        return await super().open(*args, **kwargs)


def nothing_left(sink: TrackedMemorySink) -> None:
    """Nothing was stored, and every upload the sink opened was aborted (none left half-written)."""
    assert sink.objects == {}
    assert sink.aborted == sink.opened


# Key templates of every kind (plain, prefixed, dated, per field, unique), for the key property tests.
KEY_TEMPLATES = [
    "{filename}",
    "{filename}.wav",
    "calls/{filename}",
    "{date:%Y/%m}/{filename}",
    "{field:id}/{filename}.wav",
    "{field:id}-{uuid}",
]


def required(path: str | None, message: str) -> str:
    """The path of an external program; missing, it fails the test under CI (which installs it) and skips elsewhere."""
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def queue_and_topic(sqs: Any, sns: Any, prefix: str) -> tuple[str, str, str]:
    """A fresh SQS queue, and an SNS topic fanned out to a second queue: (queue, fanout queue, topic) URLs/ARN."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    fanout = sqs.create_queue(QueueName=f"{name}-fanout")["QueueUrl"]
    fanout_arn = sqs.get_queue_attributes(QueueUrl=fanout, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic = sns.create_topic(Name=name)["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=fanout_arn)
    return queue, fanout, topic


def form(
    fields: Sequence[tuple[str, str | bytes]], *, file_field: str = "recording", content_type: str = "audio/wav"
) -> aiohttp.FormData:
    """A multipart form with the fields in the given order; the file field carries bytes."""
    data = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields:
        if name == file_field:
            data.add_field(name, value, filename="recording.wav", content_type=content_type)
        else:
            data.add_field(name, value)
    return data


async def upload_form(client: Any, name: str, data: bytes, order: str = "filename_first") -> dict[str, Any]:
    """POST ``filename`` and ``recording`` in ``order`` (``file_first`` reverses them); assert 200, answer."""
    fields: list[tuple[str, str | bytes]] = [("filename", name), ("recording", data)]
    if order == "file_first":
        fields.reverse()
    resp = await client.post("/recordings", data=form(fields))
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200, body
    return body


async def put_audio(client: Any, name: str, raw: bytes) -> dict[str, Any]:
    """PUT ``raw`` as chunked ``audio/basic`` to ``/recordings/<name>``; assert 200, return the answer."""
    resp = await client.put(f"/recordings/{name}", data=chunks(raw), headers={"Content-Type": "audio/basic"})
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200, body
    return body


async def chunks(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    """Yield ``data`` in pieces, so aiohttp sends it with chunked transfer encoding."""
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


def multipart_body(
    fields: Sequence[tuple[str, bytes]], *, boundary: str = "b0undary", file_field: str = "recording"
) -> bytes:
    """A hand-built multipart/form-data body (for malformed and truncated variants)."""
    out = bytearray()
    for name, value in fields:
        out += f"--{boundary}\r\n".encode()
        if name == file_field:
            out += f'Content-Disposition: form-data; name="{name}"; filename="r.wav"\r\n'.encode()
            out += b"Content-Type: audio/wav\r\n\r\n"
        else:
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


async def held_body(data: bytes, hold_at: int, release: asyncio.Event) -> AsyncIterator[bytes]:
    """Send ``data[:hold_at]``, wait for ``release``, then send the rest."""
    for start in range(0, hold_at, 256 * 1024):
        yield data[start : min(start + 256 * 1024, hold_at)]
    await release.wait()
    for start in range(hold_at, len(data), 256 * 1024):
        yield data[start : start + 256 * 1024]


async def put_recording(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    """PUT a recording; return the status and JSON answer, or -1 and the error if the connection broke."""
    try:
        async with session.put(url, data=body, headers={"Content-Type": "audio/wav"}) as resp:
            return resp.status, await resp.json()
    except aiohttp.ClientError as exc:
        return -1, repr(exc)


async def until(condition: Callable[[], bool], seconds: float = 30) -> None:
    """Poll ``condition`` until it holds; fail the test after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def md5_checksum(data: bytes, part_size: int) -> dict[str, str]:
    """The answer's ``checksum`` for Content-MD5 parts: the object's MD5, or the MD5 of the parts' MD5s and -N."""
    pieces = [data[i : i + part_size] for i in range(0, len(data), part_size)]
    if len(pieces) == 1:
        value = base64.b64encode(hashlib.md5(data).digest()).decode()
        return {"algorithm": "md5", "type": "FULL_OBJECT", "value": value}
    joined = base64.b64encode(hashlib.md5(b"".join(hashlib.md5(p).digest() for p in pieces)).digest()).decode()
    return {"algorithm": "md5", "type": "COMPOSITE", "value": f"{joined}-{len(pieces)}"}


def audio_settings(sink: str, moto_endpoint: str, bucket: str, tmp_path: Path, **overrides: Any) -> Any:
    """Settings with streamproxy's own audio defaults (the shared helpers pin storage tests to raw bytes)."""
    audio = {"raw_audio": "ulaw", "store_format": "wav", "key_template": "{filename}{ext}"}
    audio.update(overrides)
    if sink == "s3":
        return s3_settings(moto_endpoint, bucket, **audio)
    return fs_settings(tmp_path / "store", **audio)


def stored(sink: str, s3: Any, bucket: str, tmp_path: Path, key: str) -> bytes:
    if sink == "s3":
        return objects(s3, bucket)[key]
    return (tmp_path / "store" / key.removeprefix("rec/")).read_bytes()


async def send(client: Any, route: str, raw: bytes, name: str = "call-7", part_name: str = "call-7.ul") -> Any:
    if route == "form_name_first":
        data = form([("filename", name), ("recording", raw)], content_type="application/octet-stream")
        return await client.post("/recordings", data=data)
    if route == "form_file_first":
        data = form([("recording", raw), ("filename", name)], content_type="application/octet-stream")
        return await client.post("/recordings", data=data)
    if route == "put":
        return await client.put(f"/recordings/{name}", data=chunks(raw), headers={"Content-Type": "audio/basic"})
    return await client.post(
        "/recordings", params={"filename": name}, data=chunks(raw), headers={"Content-Type": "application/octet-stream"}
    )


def mutate(body: bytes, operations: list[tuple[int, int, bytes]]) -> bytes:
    """Corrupt ``body`` for the fuzz tests: each operation inserts (0), deletes (1) or overwrites (2) at a position."""
    for kind, position, blob in operations:
        at = position % (len(body) + 1)
        if kind == 0:
            body = body[:at] + blob + body[at:]
        elif kind == 1:
            body = body[:at] + body[at + len(blob) + 1 :]
        else:
            body = body[:at] + blob + body[at + len(blob) :]
    return body
