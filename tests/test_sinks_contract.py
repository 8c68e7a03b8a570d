"""One contract for every sink: complete makes the object whole, abort leaves nothing, exists is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from streamproxy.errors import BadRequest, KeyExists
from streamproxy.parts import BufferPool
from streamproxy.sinks import Completion, ObjectSpec, Sink
from streamproxy.sinks.fs import FileSink
from streamproxy.sinks.memory import MemorySink
from streamproxy.sinks.s3 import S3Options, S3Sink
from tests.helpers import PART, incomplete_uploads, objects, payload, s3_settings

Start = Callable[..., Awaitable[tuple[Sink, BufferPool]]]


@pytest.fixture(params=["memory", "fs", "s3"])
async def harness(
    request: pytest.FixtureRequest, tmp_path: Path, moto_endpoint: str, s3: Any, bucket: str
) -> AsyncIterator[tuple[Start, Callable[[], dict[str, bytes]]]]:
    """Yield (start(overwrite), contents()) for each sink, with its own way to read back what it stored.

    ``start`` returns the started sink and a part budget of four parts.
    """
    made: list[Sink] = []

    async def start(overwrite: bool = False) -> tuple[Sink, BufferPool]:
        sink: Sink
        if request.param == "memory":
            sink = made[0] if made else MemorySink(overwrite=overwrite)
        elif request.param == "fs":
            sink = FileSink(tmp_path, overwrite=overwrite)
        else:
            sink = S3Sink(S3Options.from_settings(s3_settings(moto_endpoint, bucket, prefix="", overwrite=overwrite)))
        made.append(sink)
        await sink.start()
        return sink, BufferPool(PART, 4 * PART)

    def contents() -> dict[str, bytes]:
        if request.param == "memory":
            return {k: v.data for k, v in made[0].objects.items()}  # type: ignore[attr-defined]
        if request.param == "fs":
            return {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
        assert incomplete_uploads(s3, bucket) == []
        return objects(s3, bucket)

    yield start, contents
    for sink in made:
        await sink.close()


async def _write(sink: Sink, pool: BufferPool, key: str | None, data: bytes) -> Any:
    writer = await sink.open(ObjectSpec(key, "audio/wav", metadata={"caller": "1"}))
    pieces = [data[i : i + PART] for i in range(0, len(data), PART)]
    for index, piece in enumerate(pieces):
        part = await pool.acquire()
        part.data[: len(piece)] = piece
        part.length = len(piece)
        await writer.write(part, last=index == len(pieces) - 1)
    return writer


@pytest.mark.parametrize("size", [1, PART, 2 * PART + 7])
@pytest.mark.parametrize("late_key", [False, True])
async def test_complete_stores_exact_bytes(harness, size: int, late_key: bool) -> None:
    """The completed object has exactly the written bytes, whether the key came at open or at complete."""
    start, contents = harness
    sink, pool = await start()
    data = payload(size)
    writer = await _write(sink, pool, None if late_key else "a/b.wav", data)
    stored = await writer.complete(Completion(key="a/b.wav" if late_key else None, metadata={"sha256": "x"}))
    assert stored.key == "a/b.wav"
    assert contents() == {"a/b.wav": data}
    assert pool.bytes_in_use == 0


@pytest.mark.parametrize("late_key", [False, True])
async def test_abort_leaves_nothing(harness, late_key: bool) -> None:
    """Abort after some parts removes every trace and returns every buffer; a second abort is harmless."""
    start, contents = harness
    sink, pool = await start()
    writer = await sink.open(ObjectSpec(None if late_key else "gone.wav", "audio/wav"))
    for _ in range(2):
        part = await pool.acquire()
        part.length = PART
        await writer.write(part)
    await writer.abort()
    await writer.abort()
    assert contents() == {}
    assert pool.bytes_in_use == 0


@pytest.mark.parametrize("size", [3, 2 * PART + 1])
async def test_existing_key_is_refused_and_kept(harness, size: int) -> None:
    """Without overwrite, completing onto an existing key raises KeyExists and leaves the first object."""
    start, contents = harness
    sink, pool = await start()
    first = payload(5, seed=1)
    await (await _write(sink, pool, "k.wav", first)).complete()
    with pytest.raises(KeyExists):
        await (await _write(sink, pool, "k.wav", payload(size))).complete()
    with pytest.raises(KeyExists):
        await (await _write(sink, pool, None, payload(size))).complete(Completion(key="k.wav"))
    assert contents() == {"k.wav": first}
    assert pool.bytes_in_use == 0


async def test_overwrite_replaces(harness) -> None:
    """With overwrite the second upload wins."""
    start, contents = harness
    sink, pool = await start(True)
    await (await _write(sink, pool, "k.wav", b"one")).complete()
    await (await _write(sink, pool, "k.wav", b"two")).complete()
    assert contents() == {"k.wav": b"two"}


@pytest.mark.parametrize("late_key", [False, True])
async def test_leaving_the_block_aborts_unless_completed(harness, late_key: bool) -> None:
    """Every writer is an async context manager: leaving the block aborts, unless ``complete()`` stored it."""
    start, contents = harness
    sink, pool = await start()
    with pytest.raises(RuntimeError):
        async with await _write(sink, pool, None if late_key else "raised.wav", payload(2 * PART + 1)):
            raise RuntimeError("the client went away")
    async with await _write(sink, pool, None if late_key else "left.wav", payload(3)):
        pass  # neither complete() nor an exception: aborted all the same
    assert contents() == {}
    async with await _write(sink, pool, None if late_key else "kept.wav", payload(2 * PART + 1)) as writer:
        await writer.complete(Completion(key="kept.wav" if late_key else None))
    assert contents() == {"kept.wav": payload(2 * PART + 1)}
    assert pool.bytes_in_use == 0


async def test_a_late_key_that_never_comes_is_refused(harness) -> None:
    """Opened without a key and completed without one: 400 missing_field, and nothing is left."""
    start, contents = harness
    sink, pool = await start()
    writer = await _write(sink, pool, None, payload(2 * PART + 1))
    with pytest.raises(BadRequest) as raised:
        await writer.complete()
    assert raised.value.code == "missing_field"
    assert contents() == {}
    assert pool.bytes_in_use == 0


def test_the_parameter_objects_keep_their_own_copies() -> None:
    """A caller that reuses its dicts after open or complete cannot change what the writer stores."""
    metadata, tags = {"caller": "1"}, {"team": "a"}
    spec, done = ObjectSpec("k.wav", "audio/wav", metadata=metadata, tags=tags), Completion(metadata=metadata)
    metadata["caller"], tags["team"] = "2", "b"
    assert spec.metadata == {"caller": "1"} and spec.tags == {"team": "a"} and done.metadata == {"caller": "1"}
