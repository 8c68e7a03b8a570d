"""S3Writer against an injected in-process fake client: the call sequences, fast, without moto.

The moto suite (test_upload_s3, test_faults_s3) shows the same behaviour against a real S3 API;
these cases pin the sequence of calls and the ownership of buffers, and inject answers moto cannot.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from streamproxy.errors import KeyExists, StorageFailed
from streamproxy.parts import BufferPool
from streamproxy.sinks.s3 import STAGING_DIR, S3Options, S3Sink
from tests.conftest import s3_settings

PART = 5 * 1024 * 1024


def _error(code: str, status: int, operation: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


class FakeS3:
    """Just enough of the S3 client API for the writer: objects and multipart uploads in dicts."""

    def __init__(self) -> None:
        self.meta = SimpleNamespace(region_name="us-east-1")
        self.objects: dict[str, tuple[bytes, dict[str, str]]] = {}
        self.uploads: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.fail: dict[str, ClientError] = {}  # operation -> error to raise once
        self.lose_answer: set[str] = set()  # operations that take effect, then fail with 412 once

    def _enter(self, operation: str) -> None:
        self.calls.append(operation)
        if operation in self.fail:
            raise self.fail.pop(operation)

    def _store(self, operation: str, key: str, data: bytes, metadata: dict[str, str], if_none_match: Any) -> None:
        if if_none_match == "*" and key in self.objects:
            raise _error("PreconditionFailed", 412, operation)
        self.objects[key] = (data, metadata)
        if operation in self.lose_answer:
            self.lose_answer.discard(operation)
            raise _error("PreconditionFailed", 412, operation)

    async def put_object(
        self, *, Key: str, Body: Any, Metadata: dict[str, str], IfNoneMatch: Any = None, **_: Any
    ) -> dict[str, Any]:
        self._enter("PutObject")
        self._store("PutObject", Key, bytes(Body.view), Metadata, IfNoneMatch)
        return {"ETag": '"x"'}

    async def create_multipart_upload(self, *, Key: str, Metadata: dict[str, str], **_: Any) -> dict[str, Any]:
        self._enter("CreateMultipartUpload")
        upload_id = f"u{len(self.uploads)}"
        self.uploads[upload_id] = {"key": Key, "metadata": Metadata, "parts": {}}
        return {"UploadId": upload_id}

    async def upload_part(self, *, UploadId: str, PartNumber: int, Body: Any, **_: Any) -> dict[str, Any]:
        self._enter("UploadPart")
        self.uploads[UploadId]["parts"][PartNumber] = bytes(Body.view)
        return {"ETag": f'"{PartNumber}"'}

    async def upload_part_copy(
        self, *, UploadId: str, PartNumber: int, CopySource: dict[str, str], CopySourceRange: str, **_: Any
    ) -> dict[str, Any]:
        self._enter("UploadPartCopy")
        first, last = (int(n) for n in CopySourceRange.removeprefix("bytes=").split("-"))
        self.uploads[UploadId]["parts"][PartNumber] = self.objects[CopySource["Key"]][0][first : last + 1]
        return {"CopyPartResult": {"ETag": f'"{PartNumber}"'}}

    async def complete_multipart_upload(
        self, *, UploadId: str, MultipartUpload: dict[str, Any], IfNoneMatch: Any = None, **_: Any
    ) -> dict[str, Any]:
        self._enter("CompleteMultipartUpload")
        upload = self.uploads.get(UploadId)
        if upload is None:
            raise _error("NoSuchUpload", 404, "CompleteMultipartUpload")
        data = b"".join(upload["parts"][p["PartNumber"]] for p in MultipartUpload["Parts"])
        del self.uploads[UploadId]
        self._store("CompleteMultipartUpload", upload["key"], data, upload["metadata"], IfNoneMatch)
        return {}

    async def abort_multipart_upload(self, *, UploadId: str, **_: Any) -> dict[str, Any]:
        self._enter("AbortMultipartUpload")
        if self.uploads.pop(UploadId, None) is None:
            raise _error("NoSuchUpload", 404, "AbortMultipartUpload")
        return {}

    async def head_object(self, *, Key: str, **_: Any) -> dict[str, Any]:
        self._enter("HeadObject")
        if Key not in self.objects:
            raise _error("404", 404, "HeadObject")
        return {"Metadata": self.objects[Key][1]}

    async def delete_object(self, *, Key: str, **_: Any) -> dict[str, Any]:
        self._enter("DeleteObject")
        self.objects.pop(Key, None)
        return {}

    async def put_object_tagging(self, **_: Any) -> dict[str, Any]:
        self._enter("PutObjectTagging")
        return {}


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeS3, S3Sink, BufferPool]]:
    store = FakeS3()

    @asynccontextmanager
    async def factory(options: S3Options) -> AsyncIterator[FakeS3]:
        yield store

    options = S3Options.from_settings(s3_settings("http://127.0.0.1:9", "calls", part_size=PART))
    sink = S3Sink(options, client_factory=factory)
    await sink.start()
    pool = BufferPool(PART, 8 * PART)
    yield store, sink, pool
    await sink.close()
    assert pool.bytes_in_use == 0, "a part buffer was not given back"


async def _write(pool: BufferPool, writer: Any, data: bytes) -> None:
    chunks = [data[i : i + PART] for i in range(0, len(data), PART)] or [b""]
    for number, chunk in enumerate(chunks, start=1):
        part = await pool.acquire()
        part.data[: len(chunk)] = chunk
        part.length = len(chunk)
        await writer.write(part, last=number == len(chunks))


async def test_one_part_is_one_conditional_put(fake: tuple[FakeS3, S3Sink, BufferPool]) -> None:
    store, sink, pool = fake
    writer = await sink.open("rec/a.wav", content_type="audio/wav", metadata={})
    await _write(pool, writer, b"x" * 1000)
    stored = await writer.complete()
    assert store.calls == ["PutObject"] and stored.parts == 1
    assert store.objects["rec/a.wav"][0] == b"x" * 1000


async def test_multipart_stores_the_parts_in_order(fake: tuple[FakeS3, S3Sink, BufferPool]) -> None:
    store, sink, pool = fake
    data = bytes(range(256)) * (3 * PART // 256) + b"tail"
    writer = await sink.open("rec/b.wav", content_type="audio/wav", metadata={})
    await _write(pool, writer, data)
    stored = await writer.complete()
    assert stored.parts == 4 and not store.uploads
    assert hashlib.sha256(store.objects["rec/b.wav"][0]).digest() == hashlib.sha256(data).digest()


async def test_a_failed_part_aborts_and_stores_nothing(fake: tuple[FakeS3, S3Sink, BufferPool]) -> None:
    store, sink, pool = fake
    store.fail["UploadPart"] = _error("InternalError", 500, "UploadPart")
    with pytest.raises(StorageFailed):  # from a later write() or from complete(), whichever sees it first
        async with await sink.open("rec/c.wav", content_type="audio/wav", metadata={}) as writer:
            await _write(pool, writer, b"y" * (3 * PART))
            await writer.complete()
    assert "AbortMultipartUpload" in store.calls and not store.uploads and not store.objects


async def test_a_lost_answer_to_our_own_write_is_success(fake: tuple[FakeS3, S3Sink, BufferPool]) -> None:
    store, sink, pool = fake
    store.lose_answer.add("CompleteMultipartUpload")
    writer = await sink.open("rec/d.wav", content_type="audio/wav", metadata={})
    await _write(pool, writer, b"z" * (2 * PART))
    await writer.complete()
    assert store.calls[-1] == "HeadObject" and store.objects["rec/d.wav"][0] == b"z" * (2 * PART)


async def test_someone_elses_object_is_never_replaced(fake: tuple[FakeS3, S3Sink, BufferPool]) -> None:
    store, sink, pool = fake
    store.objects["rec/e.wav"] = (b"theirs", {})
    writer = await sink.open("rec/e.wav", content_type="audio/wav", metadata={})
    await _write(pool, writer, b"ours")
    with pytest.raises(KeyExists):
        await writer.complete()
    assert store.objects["rec/e.wav"][0] == b"theirs"


async def test_staged_upload_is_copied_then_the_staging_object_deleted(fake: tuple[FakeS3, S3Sink, BufferPool]) -> None:
    store, sink, pool = fake
    data = b"s" * (2 * PART + 7)
    writer = await sink.open(None, content_type="audio/wav", metadata={})
    await _write(pool, writer, data)
    stored = await writer.complete(key="rec/f.wav")
    assert stored.key == "rec/f.wav" and store.objects["rec/f.wav"][0] == data
    assert not [k for k in store.objects if STAGING_DIR in k] and not store.uploads
    assert "UploadPartCopy" in store.calls


async def test_leaving_the_block_on_an_exception_aborts(fake: tuple[FakeS3, S3Sink, BufferPool]) -> None:
    store, sink, pool = fake
    with pytest.raises(RuntimeError):
        async with await sink.open("rec/g.wav", content_type="audio/wav", metadata={}) as writer:
            await _write(pool, writer, b"w" * (2 * PART))
            raise RuntimeError("client went away")
    assert store.calls[-1] == "AbortMultipartUpload" and not store.uploads and not store.objects
