"""S3Writer against an injected in-process fake client: the call sequences, fast, without moto.

The moto suite (test_upload_s3, test_faults_s3) shows the same behaviour against a real S3 API;
these cases pin the sequence of calls and the ownership of buffers, and inject answers moto cannot.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from streamproxy.errors import KeyExists, StorageFailed
from streamproxy.parts import BufferPool
from streamproxy.sinks import Completion, ObjectSpec
from streamproxy.sinks.s3 import STAGING_DIR, S3Options, S3Sink
from tests.fake_s3 import FakeS3
from tests.fake_s3 import error as _error
from tests.fake_s3 import write_recording as _write
from tests.helpers import s3_settings

PART = 5 * 1024 * 1024


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeS3, S3Sink, BufferPool]]:
    store = FakeS3()
    options = S3Options.from_settings(s3_settings("http://127.0.0.1:9", "calls", part_size=PART))
    sink = S3Sink(options, client_factory=store.factory())
    await sink.start()
    pool = BufferPool(PART, 8 * PART)
    yield store, sink, pool
    await sink.close()
    assert pool.bytes_in_use == 0, "a part buffer was not given back"


async def test_one_part_is_one_conditional_put(fake: tuple[FakeS3, S3Sink, BufferPool]) -> None:
    store, sink, pool = fake
    writer = await sink.open(ObjectSpec("rec/a.wav", "audio/wav"))
    await _write(pool, writer, b"x" * 1000)
    stored = await writer.complete()
    assert store.calls == ["PutObject"] and stored.parts == 1
    assert store.objects["rec/a.wav"][0] == b"x" * 1000


async def test_multipart_stores_the_parts_in_order(fake: tuple[FakeS3, S3Sink, BufferPool]) -> None:
    store, sink, pool = fake
    data = bytes(range(256)) * (3 * PART // 256) + b"tail"
    writer = await sink.open(ObjectSpec("rec/b.wav", "audio/wav"))
    await _write(pool, writer, data)
    stored = await writer.complete()
    assert stored.parts == 4 and not store.uploads
    assert hashlib.sha256(store.objects["rec/b.wav"][0]).digest() == hashlib.sha256(data).digest()


async def test_a_failed_part_aborts_and_stores_nothing(fake: tuple[FakeS3, S3Sink, BufferPool]) -> None:
    store, sink, pool = fake
    store.fail["UploadPart"] = _error("InternalError", 500, "UploadPart")
    with pytest.raises(StorageFailed):  # from a later write() or from complete(), whichever sees it first
        async with await sink.open(ObjectSpec("rec/c.wav", "audio/wav")) as writer:
            await _write(pool, writer, b"y" * (3 * PART))
            await writer.complete()
    assert "AbortMultipartUpload" in store.calls and not store.uploads and not store.objects


async def test_a_lost_answer_to_our_own_write_is_success(fake: tuple[FakeS3, S3Sink, BufferPool]) -> None:
    store, sink, pool = fake
    store.lose_answer.add("CompleteMultipartUpload")
    writer = await sink.open(ObjectSpec("rec/d.wav", "audio/wav"))
    await _write(pool, writer, b"z" * (2 * PART))
    await writer.complete()
    assert store.calls[-1] == "HeadObject" and store.objects["rec/d.wav"][0] == b"z" * (2 * PART)


async def test_someone_elses_object_is_never_replaced(fake: tuple[FakeS3, S3Sink, BufferPool]) -> None:
    store, sink, pool = fake
    store.objects["rec/e.wav"] = (b"theirs", {})
    writer = await sink.open(ObjectSpec("rec/e.wav", "audio/wav"))
    await _write(pool, writer, b"ours")
    with pytest.raises(KeyExists):
        await writer.complete()
    assert store.objects["rec/e.wav"][0] == b"theirs"


async def test_staged_upload_is_copied_then_the_staging_object_deleted(fake: tuple[FakeS3, S3Sink, BufferPool]) -> None:
    store, sink, pool = fake
    data = b"s" * (2 * PART + 7)
    writer = await sink.open(ObjectSpec(None, "audio/wav"))
    await _write(pool, writer, data)
    stored = await writer.complete(Completion(key="rec/f.wav"))
    assert stored.key == "rec/f.wav" and store.objects["rec/f.wav"][0] == data
    assert not [k for k in store.objects if STAGING_DIR in k] and not store.uploads
    assert "UploadPartCopy" in store.calls


async def test_leaving_the_block_on_an_exception_aborts(fake: tuple[FakeS3, S3Sink, BufferPool]) -> None:
    store, sink, pool = fake
    with pytest.raises(RuntimeError):
        async with await sink.open(ObjectSpec("rec/g.wav", "audio/wav")) as writer:
            await _write(pool, writer, b"w" * (2 * PART))
            raise RuntimeError("client went away")
    assert store.calls[-1] == "AbortMultipartUpload" and not store.uploads and not store.objects
