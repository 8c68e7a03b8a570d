"""The zero-copy form-data scanner: exact parts on every split, views not copies, and aiohttp's verdict.

The property tests feed the same bytes, cut into the same chunks, to aiohttp's ``MultipartReader``
(what ingest used before) and to ``FormReader``, read them the way ingest does, and require the
same verdict: both accept with identical parts, or both refuse.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import warnings
from dataclasses import dataclass

import pytest
from aiohttp import BodyPartReader, MultipartReader
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import EmptyStreamReader, StreamReader
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from streamproxy.config import Settings, StorageURI
from streamproxy.formdata import (
    FORM_END,
    PART_END,
    FormParser,
    FormReader,
    MalformedForm,
    PartStart,
    boundary_of,
    next_chunk,
)
from streamproxy.sinks.memory import MemorySink
from tests.helpers import PART, mutate
from tests.live import live_servers

BOUNDARY = b"b0undary"


def form(
    *parts: tuple[bytes, bytes], boundary: bytes = BOUNDARY, preamble: bytes = b"", epilogue: bytes = b""
) -> bytes:
    """A form of (header block, value) parts."""
    out = [preamble]
    for headers, value in parts:
        out.append(b"--" + boundary + b"\r\n" + headers + b"\r\n" + value + b"\r\n")
    out.append(b"--" + boundary + b"--\r\n" + epilogue)
    return b"".join(out)


def field(name: str, value: bytes, extra: str = "") -> tuple[bytes, bytes]:
    return f'Content-Disposition: form-data; name="{name}"\r\n{extra}'.encode(), value


def file(name: str, value: bytes, filename: str = "r.wav") -> tuple[bytes, bytes]:
    disposition = f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
    return (disposition + "Content-Type: audio/wav\r\n").encode(), value


def parse(body: bytes, cuts: list[int] | None = None) -> list[tuple[str, bytes]]:
    """Feed ``body`` in pieces (at ``cuts``) to the sans-I/O parser; return (name, data) per part."""
    parser = FormParser(BOUNDARY)
    parts: list[tuple[str, bytes]] = []
    data = bytearray()
    name = ""
    points = [0, *sorted(set(c for c in (cuts or []) if 0 < c < len(body))), len(body)]
    events: list[object] = []
    for a, b in itertools.pairwise(points):
        events += [(e.tobytes() if isinstance(e, memoryview) else e) for e in parser.feed(body[a:b])]
    events += parser.close()
    for event in events:
        if isinstance(event, PartStart):
            name, data = event.headers["Content-Disposition"], bytearray()
        elif isinstance(event, bytes):
            data += event
        elif event is PART_END:
            parts.append((name, bytes(data)))
    assert events[-1] is FORM_END
    return parts


TRICKY = b"\r\n--b0undar\r\n--b0undar\r\r\n-\r\n--\n--b0undar"


def test_parts_and_every_single_split() -> None:
    """Two parts whose data holds near-delimiters come out exact wherever the body is cut in two."""
    body = form(field("filename", b"call-1"), file("recording", TRICKY + b"\x00" * 10 + b"\r"))
    want = parse(body)
    assert [d for _, d in want] == [b"call-1", TRICKY + b"\x00" * 10 + b"\r"]
    for cut in range(1, len(body)):
        assert parse(body, [cut]) == want, cut


def test_byte_by_byte() -> None:
    body = form(field("a", b""), field("b", b"\r\n"), file("recording", TRICKY), preamble=b"pre\r\namble\r\n")
    assert parse(body, list(range(len(body)))) == parse(body)
    assert [d for _, d in parse(body)] == [b"", b"\r\n", TRICKY]


def test_data_is_a_view_of_the_chunk_not_a_copy() -> None:
    """A chunk inside a part's data comes back as a view of that very chunk."""
    parser = FormParser(BOUNDARY)
    head = b'--b0undary\r\nContent-Disposition: form-data; name="recording"\r\n\r\n'
    events = parser.feed(head)
    assert isinstance(events[0], PartStart)
    chunk = bytes(range(256)) * 1024
    events = parser.feed(chunk)
    views = [e for e in events if isinstance(e, memoryview)]
    # All but the carried CRLF start of the part (2 bytes) and a possible delimiter start at the end.
    assert sum(map(len, views)) >= len(chunk) - len(b"\r\n--b0undary")
    assert any(v.obj is chunk for v in views)
    assert sum(len(v) for v in views if v.obj is not chunk) <= 2


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"no boundary at all\r\n", "no opening boundary"),
        (form(field("a", b"x"))[:-14], "ends before the closing boundary"),
        (b"--b0undary\r\nContent-Disposition: form-da", "inside a part's headers"),
        (b"--b0undary\r\nContent-Disposition: form-data\r\n\r\nv\r\n--b0undaryX\r\n", "unexpected bytes"),
        (b"x" * 200_000 + b"\r\n" + form(field("a", b"x")), "line is too long"),
        (b"--b0undary\r\nX: " + b"j" * 9000 + b"\r\n\r\nv\r\n--b0undary--\r\n", "line is too long"),
        (b"--b0undary\r\n" + b"X-J: j\r\n" * 200 + b"\r\nv\r\n--b0undary--\r\n", "too many header lines"),
        (b"--b0undary\r\nno colon here\r\n\r\nv\r\n--b0undary--\r\n", "header is invalid"),
    ],
)
def test_refused(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedForm, match=reason):
        parse(body)


def test_preamble_epilogue_and_lenient_lines() -> None:
    """RFC 2046 preamble and epilogue are ignored; boundary lines may carry trailing whitespace or bare LF."""
    body = b"preamble\r\n--b0undary \t\r\nContent-Disposition: form-data; name=a\n\nv\r\n--b0undary--  \nepilogue"
    assert parse(body) == [("form-data; name=a", b"v")]
    assert parse(b"--b0undary--") == []  # the closing boundary may end the body without a newline


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        ("multipart/form-data; boundary=b0undary", True),
        ('multipart/form-data; boundary="b0 undary"', True),
        ("multipart/form-data", False),
        ("multipart/form-data; boundary=", False),
        ("multipart/form-data; boundary=" + "b" * 71, False),
        ("audio/wav", False),
    ],
)
def test_boundary_of(content_type: str, ok: bool) -> None:
    if ok:
        assert boundary_of(content_type)
    else:
        with pytest.raises(MalformedForm):
            boundary_of(content_type)


# --- agreement with aiohttp's reader ------------------------------------------------------------


class _Protocol(BaseProtocol):
    """A protocol with no socket: the whole body is already in the reader."""

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


def _stream(chunks: list[bytes]) -> StreamReader:
    loop = asyncio.get_running_loop()
    reader = StreamReader(_Protocol(loop), 2**16, loop=loop)
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    return reader


@dataclass(frozen=True)
class Verdict:
    parts: tuple[tuple[str | None, str | None, bytes], ...]
    ok: bool


async def _aiohttp(chunks: list[bytes]) -> Verdict:
    parts: list[tuple[str | None, str | None, bytes]] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = MultipartReader({"Content-Type": "multipart/form-data; boundary=b0undary"}, _stream(chunks))
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise ValueError("nested")
                data = bytearray()
                while chunk := await part.read_chunk(65536):
                    data += chunk
                parts.append((part.name, part.filename, bytes(data)))
    except (ValueError, AssertionError, RuntimeError, HttpProcessingError):
        return Verdict(tuple(parts), False)
    return Verdict(tuple(parts), True)


async def _ours(chunks: list[bytes]) -> Verdict:
    parts: list[tuple[str | None, str | None, bytes]] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = FormReader(_stream(chunks), BOUNDARY)
            while (part := await reader.next()) is not None:
                data = bytearray()
                while chunk := await part.read_chunk(65536):
                    data += chunk
                parts.append((part.name, part.filename, bytes(data)))
    except MalformedForm:
        return Verdict(tuple(parts), False)
    return Verdict(tuple(parts), True)


def _cut(body: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted({c % (len(body) + 1) for c in cuts}), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(points) if b > a]


# Data that likes to look like framing: pieces of the delimiter, CR, LF, dashes.
_atoms = st.sampled_from([b"\r", b"\n", b"\r\n", b"-", b"--", b"b0undary", b"b0und", b"\r\n--b0undar", b"x", b"\x00"])
values = st.one_of(st.binary(max_size=40), st.lists(_atoms, max_size=12).map(b"".join))
# No "_charset_": aiohttp's reader refuses every form that has one (test_charset_part covers it).
names = st.sampled_from(["filename", "recording", "caller", "a b", ""])
header_extras = st.sampled_from(
    ["", "Content-Type: audio/wav\r\n", "Content-Type: multipart/mixed; boundary=in\r\n", "X-A: 1\r\n", "bad\r\n"]
)
parts_strategy = st.lists(
    st.tuples(names, st.booleans(), header_extras, values).map(
        lambda t: (
            (
                f'Content-Disposition: form-data; name="{t[0]}"'
                + ('; filename="f.wav"' if t[1] else "")
                + "\r\n"
                + t[2]
            ).encode(),
            t[3],
        )
    ),
    max_size=4,
)


bodies = st.builds(
    lambda parts, preamble, epilogue, ops: mutate(form(*parts, preamble=preamble, epilogue=epilogue), ops),
    parts_strategy,
    st.sampled_from([b"", b"preamble\r\n", b"--b0undaryX\r\n"]),
    st.sampled_from([b"", b"epilogue", b"\r\n--b0undary\r\n"]),
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.binary(max_size=12) | _atoms), max_size=3),
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies, cuts=st.lists(st.integers(0, 10_000), max_size=6))
def test_agrees_with_aiohttp(body: bytes, cuts: list[int]) -> None:
    """Generated and corrupted forms, cut anywhere: the same verdict and parts as aiohttp's reader."""
    chunks = _cut(body, cuts)

    async def both() -> tuple[Verdict, Verdict]:
        return await _aiohttp(chunks), await _ours(chunks)

    theirs, ours = asyncio.run(both())
    assert ours.ok == theirs.ok, (body, theirs, ours)
    if ours.ok:
        assert ours.parts == theirs.parts, (body, theirs, ours)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(parts=parts_strategy, cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_valid_forms_come_out_exact(parts: list[tuple[bytes, bytes]], cuts: list[int]) -> None:
    """Unmutated forms whose headers are valid: every value comes back byte for byte, however cut."""
    parts = [p for p in parts if b"bad" not in p[0] and b"multipart" not in p[0]]
    assume(all(b"\r\n--b0undary" not in b"\r\n" + value + b"\r\n" for _, value in parts))  # else not a valid form
    body = form(*parts)
    verdict = asyncio.run(_ours(_cut(body, cuts)))
    assert verdict.ok
    assert [p[2] for p in verdict.parts] == [v for _, v in parts]


def test_charset_part() -> None:
    """A leading _charset_ part is consumed (31 bytes at most); later ones are ordinary fields.

    aiohttp's reader means the same but loses its place after reading it, so it refused every form
    with a _charset_ part: here a short one no longer fails the upload.
    """
    read = lambda *parts: asyncio.run(_ours([form(*parts)]))  # noqa: E731
    assert read(field("_charset_", b"utf-8"), field("a", b"x")) == Verdict((("a", None, b"x"),), True)
    assert read(field("a", b"x"), field("_charset_", b"utf-8")).parts[1] == ("_charset_", None, b"utf-8")
    assert not read(field("_charset_", b"c" * 32), field("a", b"x")).ok
    assert not read(field("_charset_", b"c" * 40), field("a", b"x")).ok


# --- the end of a body without one -------------------------------------------------------------


class _Counted:
    """aiohttp's reader for a request without a body, failing instead of spinning if asked forever."""

    def __init__(self) -> None:
        self._content = EmptyStreamReader()
        self.calls = 0

    async def readchunk(self) -> tuple[bytes, bool]:
        self.calls += 1
        if self.calls > 100:
            raise AssertionError("readchunk asked again and again at the end of the body")
        return await self._content.readchunk()

    def at_eof(self) -> bool:
        return self._content.at_eof()


def test_no_body_ends_at_once_every_time() -> None:
    """aiohttp's reader for bodyless requests (one shared ``EMPTY_PAYLOAD``) answers ``(b"", False)``
    once, then ``(b"", True)`` for ever without waiting: ``next_chunk`` must take that as the end too,
    or the second bodyless request of a process spins the event loop (the hang test_fuzz found)."""
    content = _Counted()

    async def twice() -> list[bytes]:
        return [await next_chunk(content), await next_chunk(content)]

    assert asyncio.run(twice()) == [b"", b""]
    assert content.calls <= 2


def test_reader_never_reads_past_the_end() -> None:
    """After the body ended, asking for parts again refuses at once instead of reading again."""
    content = _Counted()

    async def read() -> None:
        reader = FormReader(content, BOUNDARY)
        for _ in range(3):
            with pytest.raises(MalformedForm, match=r"opening boundary|ends before"):
                await reader.next()

    asyncio.run(read())
    assert content.calls == 1


def test_bodyless_requests_in_a_row_get_their_400() -> None:
    """Several bodyless multipart POSTs and PUTs on one server: each answers 400, none hangs the loop."""
    config = Settings(storage=StorageURI.parse("s3://calls/rec/"), part_size=PART, max_buffer_bytes=2 * PART)
    with live_servers([(config, MemorySink())]) as (live,):
        for _ in range(3):
            form_reply = live.request(
                "POST", "/recordings", headers={"Content-Type": "multipart/form-data; boundary=b0undary"}, timeout=10
            )
            assert (form_reply.status, json.loads(form_reply.body)["error"]) == (400, "malformed_body")
            raw_reply = live.request("PUT", "/recordings/call-1", headers={"Content-Type": "audio/wav"}, timeout=10)
            assert (raw_reply.status, json.loads(raw_reply.body)["error"]) == (400, "empty_recording")


@pytest.mark.parametrize("name", ["aiohttp", "formdata", "ingest"])
def test_parsing_bench_copies_every_recording_byte(name: str) -> None:
    """bench/parsing.py's contenders hand on exactly the recording's bytes (``one`` raises otherwise)."""
    from bench.parsing import one

    assert one(name, 2) >= 0
