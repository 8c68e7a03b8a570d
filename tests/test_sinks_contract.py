"""One contract for every sink: complete makes the object whole, abort leaves nothing, exists is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from streamproxy.errors import KeyExists
from streamproxy.parts import BufferPool
from streamproxy.sinks import Sink
from streamproxy.sinks.fs import FileSink
from streamproxy.sinks.memory import MemorySink
from streamproxy.sinks.s3 import S3Options, S3Sink
from tests.helpers import PART, incomplete_uploads, objects, payload, s3_settings

SinkFactory = Callable[..., Any]


@pytest.fixture(params=["memory", "fs", "s3"])
async def harness(
    request: pytest.FixtureRequest, tmp_path: Path, moto_endpoint: str, s3: Any, bucket: str
) -> AsyncIterator[tuple[Callable[[bool], Sink], Callable[[], dict[str, bytes]]]]:
    """Yield (make_sink(overwrite), contents()) for each sink, with its own way to read back what it stored."""
    made: list[Sink] = []

    def make(overwrite: bool = False) -> Sink:
        sink: Sink
        if request.param == "memory":
            sink = made[0] if made else MemorySink(overwrite=overwrite)
        elif request.param == "fs":
            sink = FileSink(tmp_path, overwrite=overwrite)
        else:
            sink = S3Sink(S3Options.from_settings(s3_settings(moto_endpoint, bucket, prefix="", overwrite=overwrite)))
        made.append(sink)
        return sink

    def contents() -> dict[str, bytes]:
        if request.param == "memory":
            return {k: v.data for k, v in made[0].objects.items()}  # type: ignore[attr-defined]
        if request.param == "fs":
            return {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
        assert incomplete_uploads(s3, bucket) == []
        return objects(s3, bucket)

    yield make, contents
    for sink in made:
        await sink.close()


async def _write(sink: Sink, pool: BufferPool, key: str | None, data: bytes) -> Any:
    writer = await sink.open(key, content_type="audio/wav", metadata={"caller": "1"})
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
    make, contents = harness
    sink = make()
    await sink.start()
    pool = BufferPool(PART, 4 * PART)
    data = payload(size)
    writer = await _write(sink, pool, None if late_key else "a/b.wav", data)
    stored = await writer.complete(key="a/b.wav" if late_key else None, metadata={"sha256": "x"})
    assert stored.key == "a/b.wav"
    assert contents() == {"a/b.wav": data}
    assert pool.bytes_in_use == 0


@pytest.mark.parametrize("late_key", [False, True])
async def test_abort_leaves_nothing(harness, late_key: bool) -> None:
    """Abort after some parts removes every trace and returns every buffer; a second abort is harmless."""
    make, contents = harness
    sink = make()
    await sink.start()
    pool = BufferPool(PART, 4 * PART)
    writer = await sink.open(None if late_key else "gone.wav", content_type="audio/wav", metadata={})
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
    make, contents = harness
    sink = make()
    await sink.start()
    pool = BufferPool(PART, 4 * PART)
    first = payload(5, seed=1)
    await (await _write(sink, pool, "k.wav", first)).complete()
    with pytest.raises(KeyExists):
        await (await _write(sink, pool, "k.wav", payload(size))).complete()
    with pytest.raises(KeyExists):
        await (await _write(sink, pool, None, payload(size))).complete(key="k.wav")
    assert contents() == {"k.wav": first}
    assert pool.bytes_in_use == 0


async def test_overwrite_replaces(harness) -> None:
    """With overwrite the second upload wins."""
    make, contents = harness
    sink = make(True)
    await sink.start()
    pool = BufferPool(PART, 4 * PART)
    await (await _write(sink, pool, "k.wav", b"one")).complete()
    await (await _write(sink, pool, "k.wav", b"two")).complete()
    assert contents() == {"k.wav": b"two"}
