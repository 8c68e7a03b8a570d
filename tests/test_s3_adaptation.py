"""The S3 writer on stores that lack a feature: each gap's adaptation, against a fake that behaves like the store.

The capabilities are injected as the probe would find them (``S3Sink(..., capabilities=...)``); the
fake store behaves as the measured store does (ignores or refuses the header, lacks the call).
The same behaviours against the real stores are in tests/compat/.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest
import structlog
from awscrt import checksums as crt

from streamproxy.checksums import COMPOSITE, FULL_OBJECT
from streamproxy.errors import KeyExists, StorageFailed
from streamproxy.parts import BufferPool
from streamproxy.sinks import Completion, ObjectSpec, Stored
from streamproxy.sinks.s3 import STAGING_DIR, S3Options, S3Sink
from streamproxy.sinks.s3 import writer as writer_module
from tests.fake_s3 import FakeS3, error
from tests.fake_s3 import write_recording as _write
from tests.helpers import s3_settings
from tests.store_profiles import CAPABILITIES, FAKE, S3

PART = 5 * 1024 * 1024

Make = Callable[..., Any]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    """Start a sink on a fake store that behaves like ``store``; returns (fake, sink, pool)."""
    started: list[tuple[S3Sink, BufferPool]] = []

    async def start(store: str, **settings: Any) -> tuple[FakeS3, S3Sink, BufferPool]:
        fake = FakeS3(**FAKE[store])
        options = S3Options.from_settings(s3_settings("http://127.0.0.1:9", "calls", part_size=PART, **settings))
        sink = S3Sink(options, client_factory=fake.factory(), capabilities=CAPABILITIES[store])
        await sink.start()
        pool = BufferPool(PART, 8 * PART)
        started.append((sink, pool))
        return fake, sink, pool

    yield start
    for sink, pool in started:
        await sink.close()
        assert pool.bytes_in_use == 0, "a part buffer was not given back"


def _facts(data: bytes) -> dict[str, str]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": str(len(data))}


async def _store_with_facts(sink: S3Sink, pool: BufferPool, key: str, data: bytes) -> Stored:
    """Open, write ``data`` and complete with its sha256 and size, as ingest does."""
    writer = await sink.open(ObjectSpec(key, "audio/wav"))
    await _write(pool, writer, data)
    return await writer.complete(Completion(metadata=_facts(data)))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# --- no conditional CompleteMultipartUpload (Ceph 16) -----------------------------------------


async def test_ceph16_refuses_a_known_name_before_sending_a_byte(make: Make) -> None:
    fake, sink, pool = await make("ceph16")
    fake.objects["rec/a.wav"] = (b"first", {})
    writer = await sink.open(ObjectSpec("rec/a.wav", "audio/wav"))
    with pytest.raises(KeyExists):
        async with writer:
            await _write(pool, writer, b"x" * (2 * PART))
            await writer.complete()
    assert fake.calls == ["HeadObject"]  # no CreateMultipartUpload, no part sent
    assert fake.objects["rec/a.wav"][0] == b"first"


async def test_ceph16_checks_again_right_before_the_final_write(make: Make) -> None:
    """Another server stores the name while this upload streams: the complete is never sent."""
    fake, sink, pool = await make("ceph16")
    data = b"y" * (2 * PART + 1)
    writer = await sink.open(ObjectSpec("rec/b.wav", "audio/wav"))
    await _write(pool, writer, data)
    fake.objects["rec/b.wav"] = (b"theirs", {})  # appeared after the early check
    with pytest.raises(KeyExists):
        await writer.complete(Completion(metadata=_facts(data)))
    assert fake.objects["rec/b.wav"][0] == b"theirs"
    assert "CompleteMultipartUpload" not in fake.calls
    assert fake.calls[-2:] == ["HeadObject", "AbortMultipartUpload"] and not fake.uploads


async def test_ceph16_stores_a_new_name_and_sends_no_ignored_condition(make: Make) -> None:
    fake, sink, pool = await make("ceph16")
    data = b"z" * (2 * PART + 3)
    await _store_with_facts(sink, pool, "rec/c.wav", data)
    assert fake.objects["rec/c.wav"][0] == data
    (complete,) = fake.of("CompleteMultipartUpload")
    assert "IfNoneMatch" not in complete
    assert fake.calls.count("HeadObject") == 2  # before create, before complete
    # Ceph honours If-None-Match on PutObject: a one-part recording is guarded by the store itself.
    writer = await sink.open(ObjectSpec("rec/d.wav", "audio/wav"))
    await _write(pool, writer, b"small")
    await writer.complete()
    assert fake.of("PutObject")[-1]["IfNoneMatch"] == "*"


async def test_ceph16_two_uploads_of_one_name_in_one_process_store_one(make: Make) -> None:
    import asyncio

    fake, sink, pool = await make("ceph16")
    first, second = b"1" * (2 * PART), b"2" * (2 * PART)
    writers = [await sink.open(ObjectSpec("rec/e.wav", "audio/wav")) for _ in range(2)]
    await _write(pool, writers[0], first)
    await _write(pool, writers[1], second)
    results = await asyncio.gather(writers[0].complete(), writers[1].complete(), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["KeyExists", "Stored"]
    winner = first if not isinstance(results[0], BaseException) else second
    assert fake.objects["rec/e.wav"][0] == winner and not fake.uploads


# --- no conditional PutObject (Swift) ----------------------------------------------------------


async def test_swift_stores_a_small_recording_as_a_guarded_one_part_upload(make: Make) -> None:
    fake, sink, pool = await make("swift")
    stored = await _store_with_facts(sink, pool, "rec/f.wav", b"short")
    assert fake.calls == ["CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"]
    assert fake.of("CompleteMultipartUpload")[0]["IfNoneMatch"] == "*"
    data, metadata = fake.objects["rec/f.wav"]
    assert data == b"short" and stored.parts == 1
    assert metadata["sha256"] == hashlib.sha256(b"short").hexdigest()  # known at create: made at complete
    assert fake.of("UploadPart")[0]["ContentMD5"] == _b64(hashlib.md5(b"short").digest())  # auto: MD5 here


async def test_swift_keeps_the_first_recording_of_a_name(make: Make) -> None:
    fake, sink, pool = await make("swift")
    fake.objects["rec/g.wav"] = (b"first", {})
    writer = await sink.open(ObjectSpec("rec/g.wav", "audio/wav"))
    await _write(pool, writer, b"second")
    with pytest.raises(KeyExists):
        await writer.complete()
    assert fake.objects["rec/g.wav"][0] == b"first" and not fake.uploads
    assert "PutObject" not in fake.calls


async def test_swift_records_sha256_and_size_in_a_sidecar(make: Make) -> None:
    fake, sink, pool = await make("swift")
    data = b"q" * (2 * PART + 5)
    await _store_with_facts(sink, pool, "rec/h.wav", data)
    assert "PutObjectTagging" not in fake.calls
    body, metadata = fake.objects["rec/h.wav.sha256"]
    assert body == f"{hashlib.sha256(data).hexdigest()}  h.wav\n".encode()  # what sha256sum -c reads
    assert metadata == _facts(data)


async def test_staged_path_on_swift_puts_the_staging_object_plainly(make: Make) -> None:
    fake, sink, pool = await make("swift")
    writer = await sink.open(ObjectSpec(None, "audio/wav"))
    await _write(pool, writer, b"late name")
    await writer.complete(Completion(key="rec/i.wav"))
    assert fake.objects["rec/i.wav"][0] == b"late name"
    assert all("IfNoneMatch" not in kwargs for kwargs in fake.of("PutObject"))
    assert not [k for k in fake.objects if STAGING_DIR in k]


# --- no UploadPartCopy, no AbortMultipartUpload, no conditions (s3rver) ------------------------


async def test_s3rver_moves_a_staged_recording_with_copy_object(make: Make) -> None:
    fake, sink, pool = await make("s3rver")
    data = b"c" * (2 * PART + 9)
    writer = await sink.open(ObjectSpec(None, "audio/wav", metadata={"call": "7"}))
    await _write(pool, writer, data)
    await writer.complete(Completion(key="rec/j.wav", metadata=_facts(data)))
    assert "UploadPartCopy" not in fake.calls
    (copy,) = fake.of("CopyObject")
    assert copy["MetadataDirective"] == "REPLACE" and "IfNoneMatch" not in copy
    stored, metadata = fake.objects["rec/j.wav"]
    assert stored == data and metadata["sha256"] == hashlib.sha256(data).hexdigest() and metadata["call"] == "7"
    assert not [k for k in fake.objects if STAGING_DIR in k]


async def test_s3rver_never_replaces_on_the_staged_path(make: Make) -> None:
    fake, sink, pool = await make("s3rver")
    fake.objects["rec/k.wav"] = (b"first", {})
    writer = await sink.open(ObjectSpec(None, "audio/wav"))
    await _write(pool, writer, b"second" * 1000)
    with pytest.raises(KeyExists):
        await writer.complete(Completion(key="rec/k.wav"))
    assert fake.objects["rec/k.wav"][0] == b"first"
    assert "CopyObject" not in fake.calls and not [k for k in fake.objects if STAGING_DIR in k]


async def test_beyond_copy_object_limit_the_staged_bytes_stream_back_through_the_budget(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "COPY_OBJECT_LIMIT", PART)  # instead of uploading 5 GiB
    fake, sink, pool = await make("s3rver")
    data = bytes(range(256)) * ((2 * PART + 77) // 256)
    writer = await sink.open(ObjectSpec(None, "audio/wav"))
    await _write(pool, writer, data)
    await writer.complete(Completion(key="rec/l.wav"))
    assert "CopyObject" not in fake.calls and "GetObject" in fake.calls
    assert fake.objects["rec/l.wav"][0] == data and not fake.uploads
    assert not [k for k in fake.objects if STAGING_DIR in k]
    # parts of the copy were whole buffers from the budget (all but the last one full size)
    copy_parts = [kwargs["Body"] for kwargs in fake.of("UploadPart") if kwargs["Key"] == "rec/l.wav"]
    assert [len(p) for p in copy_parts[:-1]] == [PART] * (len(copy_parts) - 1)


async def test_s3rver_does_not_call_abort_and_says_so_once(make: Make) -> None:
    with structlog.testing.capture_logs() as logs:
        fake, sink, pool = await make("s3rver")
        for key in ("rec/m.wav", "rec/n.wav"):
            fake.fail["UploadPart"] = error("InternalError", 500, "UploadPart")
            with pytest.raises(StorageFailed):
                async with await sink.open(ObjectSpec(key, "audio/wav")) as writer:
                    await _write(pool, writer, b"w" * (3 * PART))
                    await writer.complete()
    assert "AbortMultipartUpload" not in fake.calls
    warnings = [entry for entry in logs if entry["event"] == "abort_multipart_unsupported"]
    assert len(warnings) == 1 and "lifecycle" in warnings[0]["effect"]


# --- checksums ----------------------------------------------------------------------------------


async def test_full_object_crc64nvme_is_sent_and_reported(make: Make) -> None:
    fake, sink, pool = await make("s3", checksum="crc64nvme")
    data = bytes(range(251)) * ((2 * PART + 13) // 251)
    writer = await sink.open(ObjectSpec("rec/o.wav", "audio/wav"))
    await _write(pool, writer, data)
    stored = await writer.complete()
    whole = _b64(crt.crc64nvme(data).to_bytes(8, "big"))  # one pass over the whole recording
    (create,) = fake.of("CreateMultipartUpload")
    assert (create["ChecksumAlgorithm"], create["ChecksumType"]) == ("CRC64NVME", "FULL_OBJECT")
    for kwargs in fake.of("UploadPart"):
        assert kwargs["ChecksumCRC64NVME"] == _b64(crt.crc64nvme(kwargs["Body"]).to_bytes(8, "big"))
    (complete,) = fake.of("CompleteMultipartUpload")
    assert complete["ChecksumCRC64NVME"] == whole and complete["ChecksumType"] == "FULL_OBJECT"
    assert all("ChecksumCRC64NVME" in p for p in complete["MultipartUpload"]["Parts"])
    assert stored.checksum is not None
    assert stored.checksum.as_json() == {"algorithm": "crc64nvme", "type": FULL_OBJECT, "value": whole}


async def test_auto_takes_the_strongest_mode_the_store_verifies(make: Make) -> None:
    fake, sink, pool = await make("s3")  # all modes verified: full-object CRC64NVME
    writer = await sink.open(ObjectSpec("rec/p.wav", "audio/wav"))
    await _write(pool, writer, b"one part")
    stored = await writer.complete()
    assert fake.of("PutObject")[0]["ChecksumCRC64NVME"] == _b64(crt.crc64nvme(b"one part").to_bytes(8, "big"))
    assert stored.checksum is not None and stored.checksum.type == FULL_OBJECT
    sink.capabilities = replace(S3, checksums=frozenset({"md5", "crc32c", "crc32"}))
    writer = await sink.open(ObjectSpec("rec/q.wav", "audio/wav"))
    await _write(pool, writer, b"one part")
    stored = await writer.complete()
    assert fake.of("PutObject")[1]["ChecksumCRC32C"] == _b64(crt.crc32c(b"one part").to_bytes(4, "big"))


async def test_composite_crc32c_lists_each_part_and_reports_the_composite_value(make: Make) -> None:
    fake, sink, pool = await make("s3", checksum="crc32c")
    data = b"k" * (PART + 100)
    writer = await sink.open(ObjectSpec("rec/r.wav", "audio/wav"))
    await _write(pool, writer, data)
    stored = await writer.complete()
    (create,) = fake.of("CreateMultipartUpload")
    assert create["ChecksumAlgorithm"] == "CRC32C" and "ChecksumType" not in create
    pieces = [data[:PART], data[PART:]]
    raws = [crt.crc32c(p).to_bytes(4, "big") for p in pieces]
    (complete,) = fake.of("CompleteMultipartUpload")
    assert [p["ChecksumCRC32C"] for p in complete["MultipartUpload"]["Parts"]] == [_b64(r) for r in raws]
    assert "ChecksumCRC32C" not in complete  # the whole object's value is the store's to form
    assert stored.checksum is not None and stored.checksum.type == COMPOSITE
    assert stored.checksum.value == _b64(crt.crc32c(b"".join(raws)).to_bytes(4, "big")) + "-2"


async def test_crc32_single_put_value(make: Make) -> None:
    fake, sink, pool = await make("s3", checksum="crc32")
    writer = await sink.open(ObjectSpec("rec/s.wav", "audio/wav"))
    await _write(pool, writer, b"abc")
    stored = await writer.complete()
    assert stored.checksum is not None
    assert (
        stored.checksum.value == _b64(zlib.crc32(b"abc").to_bytes(4, "big")) == fake.of("PutObject")[0]["ChecksumCRC32"]
    )


async def test_none_sends_and_reports_no_checksum(make: Make) -> None:
    fake, sink, pool = await make("s3", checksum="none")
    writer = await sink.open(ObjectSpec("rec/t.wav", "audio/wav"))
    await _write(pool, writer, b"n" * (PART + 1))
    stored = await writer.complete()
    assert stored.checksum is None
    for _, kwargs in fake.requests:
        assert not [k for k in kwargs if k.startswith(("Checksum", "ContentMD5"))]


async def test_overwrite_sends_no_condition_and_no_head(make: Make) -> None:
    fake, sink, pool = await make("ceph16", overwrite=True)
    fake.objects["rec/u.wav"] = (b"old", {})
    writer = await sink.open(ObjectSpec("rec/u.wav", "audio/wav"))
    await _write(pool, writer, b"v" * (PART + 1))
    await writer.complete()
    assert fake.objects["rec/u.wav"][0] == b"v" * (PART + 1)
    assert "HeadObject" not in fake.calls
    assert all("IfNoneMatch" not in kwargs for _, kwargs in fake.requests)
