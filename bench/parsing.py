"""Multipart parsers on the event loop: MB/s and copies of each body byte, in one process.

Each contender reads the same form (``filename`` then a ``recording`` of random bytes) from an
aiohttp ``StreamReader`` that holds the body as the HTTP layer delivers it (256 KiB chunks, what
uvloop reads at a time) and copies the recording into an 8 MiB part buffer, as ingest does:

- ``floor``: no parsing, one chunk at a time and the copy into the part buffer (what one copy costs);
- ``floor_bytearray``: the same, copying with ``bytearray[a:b] = view`` as ingest did (two copies);
- ``aiohttp``: ``MultipartReader`` and ``BodyPartReader.read_chunk(64 KiB)`` (ingest until now);
- ``formdata``: ``streamproxy.formdata.FormReader`` (views of the chunks, ``read_chunk``);
- ``multipart``: the ``multipart`` package's ``PushMultipartParser`` (if installed);
- ``python_multipart``: ``python-multipart``'s callback parser (if installed);
- ``ingest``: ``formdata`` feeding ``streamproxy.audio.stream.AudioStream`` as ``Ingest.multipart``
  does (sniff, size limit, WAV probe, the copy into pool part buffers, sha256 in a worker thread),
  with a writer that drops each part: the whole loop-side path of a recording byte.

MB/s is CPU time of the parsing thread (``time.thread_time``), contenders alternated, median of
the rounds. Copies per byte: every copy these parsers make lands in a new ``bytes`` object, so
the bytes allocated while parsing, per body byte, count the copies before the part buffer; the
copy into the part buffer (preallocated) adds one. Allocations are counted by preloading
``bench/malloc_count.c`` (``--copies``; needs gcc) with ``PYTHONMALLOC=malloc``, as the
difference between two body sizes so start-up cancels out.
The HTTP parser's own copy (llhttp's body callback makes each chunk a ``bytes``) is upstream of
all contenders and not counted.

Run: ``python -m bench.parsing [--mib 256] [--rounds 5] [--copies]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

from aiohttp import BodyPartReader, MultipartReader
from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import StreamReader

from streamproxy.audio.formats import Hints, Plan
from streamproxy.audio.stream import AudioPolicy, AudioStream
from streamproxy.formdata import FormReader, next_chunk
from streamproxy.parts import BufferPool, PartBuffer
from streamproxy.sinks import Writer

MIB = 1024 * 1024
CHUNK = 256 * 1024
PART = 8 * MIB
BOUNDARY = "bench0boundary0f00d"
HEAD = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="filename"\r\n\r\ncall-1\r\n'
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="recording"; filename="call-1.wav"\r\n'
    "Content-Type: audio/wav\r\n\r\n"
).encode()
TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


class _Protocol(BaseProtocol):
    """A protocol with no socket: the whole body is already in the reader."""

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


class PartSink:
    """The part buffer ingest copies into: the one copy every contender must make."""

    def __init__(self, through_bytearray: bool = False) -> None:
        self.buffer = bytearray(PART)
        # Slice assignment to a bytearray first copies a non-bytearray source into a temporary
        # bytearray (CPython's bytearray_ass_subscript): two copies. A memoryview target: one.
        self.target: bytearray | memoryview = self.buffer if through_bytearray else memoryview(self.buffer)
        self.length = 0
        self.total = 0

    def copy(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self.length == PART:
                self.length = 0  # "shipped"
            take = min(PART - self.length, len(view))
            self.target[self.length : self.length + take] = view[:take]
            self.length += take
            self.total += take
            view = view[take:]


def chunks(mib: int) -> list[bytes]:
    """The body in 256 KiB chunks: head, the same random chunk repeated (no extra memory), tail."""
    block = os.urandom(CHUNK)
    body = [HEAD + block[: CHUNK - len(HEAD)]]
    body += [block] * (mib * MIB // CHUNK - 1)
    body.append(block[: len(HEAD)] + TAIL)
    return body


def stream(body: list[bytes]) -> StreamReader:
    loop = asyncio.get_running_loop()
    reader = StreamReader(_Protocol(loop), 2**16, loop=loop)
    for chunk in body:
        reader.feed_data(chunk)
    reader.feed_eof()
    return reader


async def floor(body: list[bytes], sink: PartSink) -> None:
    reader = stream(body)
    while chunk := await next_chunk(reader):
        sink.copy(chunk)


async def floor_bytearray(body: list[bytes], sink: PartSink) -> None:
    sink.target = sink.buffer
    await floor(body, sink)


async def with_aiohttp(body: list[bytes], sink: PartSink) -> None:
    reader = MultipartReader({"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, stream(body))
    while (part := await reader.next()) is not None:
        assert isinstance(part, BodyPartReader)
        while chunk := await part.read_chunk(64 * 1024):
            if part.name == "recording":
                sink.copy(chunk)


async def with_formdata(body: list[bytes], sink: PartSink) -> None:
    reader = FormReader(stream(body), BOUNDARY.encode())
    while (part := await reader.next()) is not None:
        while chunk := await part.read_chunk(1 << 20):
            if part.name == "recording":
                sink.copy(chunk)


async def with_multipart(body: list[bytes], sink: PartSink) -> None:
    import multipart

    reader = stream(body)
    parser = multipart.PushMultipartParser(BOUNDARY)
    name = None
    while True:
        chunk = await next_chunk(reader)
        for event in parser.parse(chunk):
            if isinstance(event, multipart.MultipartSegment):
                name = event.name
            elif event and name == "recording":
                sink.copy(event)
        if not chunk:
            break


async def with_python_multipart(body: list[bytes], sink: PartSink) -> None:
    import python_multipart

    reader = stream(body)
    state = {"name": b""}

    def on_header_value(data: bytes, start: int, end: int) -> None:
        if b'name="recording"' in data[start:end]:
            state["name"] = b"recording"

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["name"] == b"recording":
            sink.copy(memoryview(data)[start:end])

    parser = python_multipart.MultipartParser(
        BOUNDARY, callbacks={"on_part_data": on_part_data, "on_header_value": on_header_value}
    )
    while chunk := await next_chunk(reader):
        parser.write(chunk)
    parser.finalize()


class _DroppingWriter:
    """A writer that counts and drops each part (the sink's work is not the loop's parsing)."""

    def __init__(self, sink: PartSink) -> None:
        self.sink = sink

    async def write(self, part: PartBuffer, *, last: bool = False) -> None:
        self.sink.total += part.length
        part.release()


async def with_ingest(body: list[bytes], sink: PartSink) -> None:
    pool = BufferPool(PART, 2 * PART)
    writer = _DroppingWriter(sink)

    async def open_writer(chosen: Plan) -> Writer:
        return cast(Writer, writer)

    reader = FormReader(stream(body), BOUNDARY.encode())
    while (part := await reader.next()) is not None:
        if part.name != "recording":
            await part.release()
            continue
        audio = AudioStream(
            pool,
            max_bytes=1 << 40,
            policy=AudioPolicy(store_format="original"),
            hints=Hints(part.filename, part.headers.get("Content-Type")),
            open_writer=open_writer,
        )
        while chunk := await part.read_chunk(64 * 1024):
            await audio.feed(chunk)
        await audio.finish()


CONTENDERS: dict[str, Callable[[list[bytes], PartSink], Awaitable[None]]] = {
    "floor": floor,
    "floor_bytearray": floor_bytearray,
    "aiohttp": with_aiohttp,
    "formdata": with_formdata,
    "multipart": with_multipart,
    "python_multipart": with_python_multipart,
    "ingest": with_ingest,
}


def available() -> list[str]:
    names = ["floor", "floor_bytearray", "aiohttp", "formdata", "ingest"]
    for name, module in (("multipart", "multipart"), ("python_multipart", "python_multipart")):
        try:
            __import__(module)
        except ImportError:
            continue
        names.append(name)
    return names


def one(name: str, mib: int) -> float:
    """Parse a ``mib`` MiB recording with contender ``name``; return CPU seconds."""
    body = chunks(mib)
    sink = PartSink()

    async def run() -> float:
        started = time.thread_time()
        await CONTENDERS[name](body, sink)
        return time.thread_time() - started

    seconds = asyncio.run(run())
    expected = sum(map(len, body)) - (
        0 if name.startswith("floor") else len(HEAD) + len(TAIL)
    )  # floor copies the framing too
    if sink.total != expected:
        raise RuntimeError(f"{name}: copied {sink.total} bytes of the recording, expected {expected}")
    return seconds


def speeds(names: list[str], mib: int, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {n: [] for n in names}
    for rnd in range(rounds):
        order = names[rnd % len(names) :] + names[: rnd % len(names)]
        for name in order:
            times[name].append(one(name, mib))
    return {n: mib * MIB / 1e6 / statistics.median(t) for n, t in times.items()}


def allocated(name: str, mib: int, preload: Path) -> int:
    """Bytes malloc'd by a process that parses ``mib`` MiB with ``name`` (bench/malloc_count.c)."""
    env = {**os.environ, "PYTHONMALLOC": "malloc", "LD_PRELOAD": str(preload)}
    argv = [sys.executable, "-m", "bench.parsing", "--one", name, "--mib", str(mib)]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    found = re.search(r"malloc_total (\d+)", result.stderr)
    if not found:
        raise RuntimeError(result.stderr[-2000:])
    return int(found.group(1))


def copies(names: list[str], mib: int) -> dict[str, float]:
    """Copies of each recording byte: allocations per byte (difference of two sizes) plus the part buffer's."""
    with tempfile.TemporaryDirectory() as tmp:
        preload = Path(tmp) / "malloc_count.so"
        source = Path(__file__).with_name("malloc_count.c")
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(preload), str(source), "-ldl"], check=True)
        out = {}
        for name in names:
            small, large = allocated(name, mib, preload), allocated(name, 2 * mib, preload)
            out[name] = (large - small) / (mib * MIB) + 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mib", type=int, default=256, help="recording size for the speed rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--copies", action="store_true", help="also count copies (preloads bench/malloc_count.c)")
    parser.add_argument("--copies-mib", type=int, default=32)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one, args.mib)
        return
    names = available()
    result: dict[str, object] = {"mib": args.mib, "rounds": args.rounds, "mb_s": speeds(names, args.mib, args.rounds)}
    if args.copies:
        result["copies_per_byte"] = copies(names, args.copies_mib)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
