"""A multipart/form-data scanner that hands out views of the received bytes instead of copies.

aiohttp's ``BodyPartReader.read_chunk`` finds the boundary by concatenating each chunk with the
one before (``prev + chunk``) and slicing the result: every body byte is copied twice on the
event loop before the caller copies it once more into its part buffer. This scanner searches
each chunk the HTTP layer delivers in place (``bytes.find``) and yields ``memoryview`` slices of
it, so the only copy of a body byte on the loop is the caller's, into its part buffer. Only the
few bytes at the end of a chunk that could be the start of a split delimiter are carried over
(fewer than the delimiter's length, at most 74 bytes per chunk).

Two layers:

- ``FormParser`` is sans-I/O: ``feed(chunk)`` returns events (``PartStart``, ``memoryview`` data,
  ``PART_END``, ``FORM_END``), ``close()`` checks the body ended after the closing boundary.
- ``FormReader`` drives it from an aiohttp ``StreamReader`` and offers the surface ingest uses
  from aiohttp's ``MultipartReader``: ``next()`` returns a part with ``name``, ``filename``,
  ``headers`` and ``read_chunk(size)``.

What it accepts is aiohttp's reader's behaviour, case for case (tests/test_formdata.py checks
the two agree on generated and corrupted forms): a preamble of lines before the first boundary
(RFC 2046), boundary lines compared after stripping trailing whitespace, part headers parsed by
aiohttp's own ``HeadersParser`` (8190 bytes a line, 128 lines), a leading ``_charset_`` part
consumed (31 bytes at most), and everything after the closing boundary ignored. It refuses what
ingest would refuse anyway: nested multipart parts and an empty or over-long boundary.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final, Protocol

from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HeadersParser
from aiohttp.multipart import content_disposition_filename, parse_content_disposition
from multidict import CIMultiDictProxy

__all__ = [
    "FORM_END",
    "PART_END",
    "FormParser",
    "FormPart",
    "FormReader",
    "MalformedForm",
    "PartStart",
    "boundary_of",
    "next_chunk",
]

MAX_HEADER_LINE: Final = 8190  # aiohttp's max_field_size for part headers
MAX_HEADER_LINES: Final = 128  # aiohttp's max_headers
MAX_FRAMING_LINE: Final = 128 * 1024  # a preamble or boundary line (aiohttp: its read buffer's high-water mark)
MAX_CHARSET: Final = 31  # aiohttp reads a leading _charset_ part with read_chunk(32) and refuses more than 31


class MalformedForm(ValueError):
    """The body is not a well-formed multipart/form-data body (ingest answers 400 malformed_body)."""


@dataclass(frozen=True)
class PartStart:
    """A part's headers are complete; its data follows."""

    headers: CIMultiDictProxy[str]


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


PART_END: Final = _Marker("PART_END")  # the current part's data is complete
FORM_END: Final = _Marker("FORM_END")  # the closing boundary was read; nothing after it matters

Event = PartStart | memoryview | _Marker

_PREAMBLE, _HEADERS, _DATA, _BOUNDARY_LINE, _END = range(5)


def boundary_of(content_type: str) -> bytes:
    """Return the boundary of a ``multipart/*`` Content-Type; raise ``MalformedForm`` if it has none."""
    mimetype = parse_mimetype(content_type)
    if mimetype.type != "multipart":
        raise MalformedForm("the body is not multipart")
    boundary = mimetype.parameters.get("boundary")
    if boundary is None:
        raise MalformedForm("the Content-Type has no boundary")
    if not boundary or len(boundary) > 70:  # RFC 2046: 1 to 70 characters
        raise MalformedForm(f"the boundary must be 1 to 70 characters, not {len(boundary)}")
    return boundary.encode("utf-8", "surrogateescape")


class FormParser:
    """Sans-I/O multipart parser: feed it chunks, get events; data events are views of the chunks."""

    def __init__(self, boundary: bytes) -> None:
        if not boundary:
            raise MalformedForm("the boundary is empty")
        self._dash: Final = b"--" + boundary  # a boundary line, before trailing whitespace
        self._delimiter: Final = b"\r\n--" + boundary  # what ends a part's data
        self._state = _PREAMBLE
        self._line = bytearray()  # an unfinished framing line
        self._header_lines: list[bytes] = []
        # Bytes at the end of the last chunk that may begin a delimiter; not yet known to be data.
        self._tail = b""
        # How many of ``_tail``'s first bytes are not data: a part starts with a virtual CRLF so
        # that a delimiter right after the headers (an empty part) is found like any other.
        self._virtual = 0
        self.parts = 0

    @property
    def done(self) -> bool:
        """Whether the closing boundary was read."""
        return self._state == _END

    def feed(self, chunk: bytes) -> list[Event]:
        """Parse ``chunk``; return the events it completes. Raises ``MalformedForm``."""
        events: list[Event] = []
        pos = 0
        end = len(chunk)
        while pos < end:
            state = self._state
            if state == _DATA:
                pos = self._scan(chunk, pos, events)
            elif state == _END:
                break  # the epilogue: ignored, as aiohttp does
            else:
                newline = chunk.find(b"\n", pos)
                stop = end if newline < 0 else newline + 1
                self._line += memoryview(chunk)[pos:stop]
                pos = stop
                limit = MAX_HEADER_LINE if state == _HEADERS else MAX_FRAMING_LINE
                if len(self._line) > limit:
                    raise MalformedForm("a line is too long")
                if newline >= 0:
                    line, self._line = bytes(self._line), bytearray()
                    self._on_line(line, events)
        return events

    def close(self) -> list[Event]:
        """End the body: return the last events, or raise if the form is incomplete."""
        events: list[Event] = []
        if self._line and self._state in (_PREAMBLE, _BOUNDARY_LINE):
            # A last line without its newline still counts (aiohttp's readline returns it too).
            line, self._line = bytes(self._line), bytearray()
            self._on_line(line, events)
        if self._state == _END:
            return events
        if self._state == _PREAMBLE:
            raise MalformedForm("the body has no opening boundary")
        if self._state == _HEADERS:
            raise MalformedForm("the body ends inside a part's headers")
        raise MalformedForm("the body ends before the closing boundary")

    def _on_line(self, line: bytes, events: list[Event]) -> None:
        state = self._state
        if state == _PREAMBLE:
            stripped = line.rstrip()
            if stripped == self._dash:
                self._state = _HEADERS
            elif stripped == self._dash + b"--":
                self._state = _END
                events.append(FORM_END)
        elif state == _BOUNDARY_LINE:
            # ``line`` is what follows the delimiter on its line.
            stripped = (self._dash + line).rstrip()
            if stripped == self._dash:
                self._state = _HEADERS
            elif stripped == self._dash + b"--":
                self._state = _END
                events.append(FORM_END)
            else:
                raise MalformedForm("a boundary line has unexpected bytes after the boundary")
        else:  # _HEADERS
            line = line.rstrip(b"\r\n")
            if line:
                self._header_lines.append(line)
                if len(self._header_lines) > MAX_HEADER_LINES:
                    raise MalformedForm("a part has too many header lines")
                return
            lines, self._header_lines = self._header_lines, []
            try:
                headers, _ = HeadersParser(max_field_size=MAX_HEADER_LINE).parse_headers([*lines, b""])
            except HttpProcessingError as exc:
                raise MalformedForm(f"a part header is invalid ({type(exc).__name__})") from None
            events.append(PartStart(headers))
            self.parts += 1
            self._state = _DATA
            self._tail = b"\r\n"
            self._virtual = 2

    def _scan(self, chunk: bytes, pos: int, events: list[Event]) -> int:
        """Emit the part data in ``chunk[pos:]`` up to a delimiter; return where scanning stopped."""
        delimiter = self._delimiter
        size = len(delimiter)
        end = len(chunk)
        if self._tail:
            # A delimiter may straddle the carried bytes and this chunk. The window holds every
            # delimiter that starts in the tail (it is shorter than the delimiter).
            head = chunk[pos : pos + size - 1]
            window = self._tail + head
            found = window.find(delimiter)
            if found >= 0:
                if found > self._virtual:
                    events.append(memoryview(window)[self._virtual : found])
                self._tail, self._virtual = b"", 0
                return self._ended(pos + found + size - (len(window) - len(head)), events)
            if len(head) == size - 1:
                if len(self._tail) > self._virtual:  # no delimiter starts in the tail: it is data
                    events.append(memoryview(self._tail)[self._virtual :])
                self._tail, self._virtual = b"", 0
            else:  # the chunk is shorter than a delimiter: carry the window's possible start
                keep = _partial(window, 0, delimiter)
                data_end = len(window) - keep
                if data_end > self._virtual:
                    events.append(memoryview(window)[self._virtual : data_end])
                self._virtual = max(0, self._virtual - data_end)
                self._tail = window[data_end:]
                return end
        found = chunk.find(delimiter, pos)
        if found >= 0:
            if found > pos:
                events.append(memoryview(chunk)[pos:found])
            return self._ended(found + size, events)
        keep = _partial(chunk, pos, delimiter)
        if end - keep > pos:
            events.append(memoryview(chunk)[pos : end - keep])
        self._tail = chunk[end - keep :] if keep else b""
        return end

    def _ended(self, pos: int, events: list[Event]) -> int:
        events.append(PART_END)
        self._state = _BOUNDARY_LINE
        return pos


def _partial(data: bytes, pos: int, delimiter: bytes) -> int:
    """Length of the longest suffix of ``data[pos:]`` that is a proper prefix of ``delimiter``."""
    end = len(data)
    start = max(pos, end - len(delimiter) + 1)
    first = delimiter[:1]
    at = data.find(first, start)
    while at >= 0:
        if delimiter.startswith(data[at:end]):
            return end - at
        at = data.find(first, at + 1)
    return 0


class _Content(Protocol):
    """What ``FormReader`` needs of aiohttp's ``StreamReader``."""

    async def readchunk(self) -> tuple[bytes, bool]: ...

    def at_eof(self) -> bool: ...


async def next_chunk(content: _Content) -> bytes:
    """Return the next chunk the HTTP layer buffered, as it is; ``b""`` at the end of the body.

    ``readany()`` joins every chunk buffered at the time (a copy of each byte whenever the
    reader is behind); ``readchunk()`` hands out one at a time, uncopied (a chunked body is cut
    at its HTTP chunk ends, and an empty read with ``True`` marks one, not the end).

    An empty read with ``True`` at the end of the body is the end too: aiohttp's reader for a
    request without a body (``EMPTY_PAYLOAD``) answers ``(b"", False)`` once and ``(b"", True)``
    ever after, without waiting, so asking again would spin on the event loop for good.
    """
    while True:
        chunk, end_of_http_chunk = await content.readchunk()
        if chunk or not end_of_http_chunk or content.at_eof():
            return chunk


class FormReader:
    """Read a multipart/form-data body part by part from an aiohttp ``StreamReader``."""

    def __init__(self, content: _Content, boundary: bytes) -> None:
        self._content = content
        self._parser = FormParser(boundary)
        self._events: deque[Event] = deque()
        self._part: FormPart | None = None
        self._first = True
        self._ended = False
        self._eof = False  # the body's end was read: never ask the stream again

    async def _event(self) -> Event:
        while not self._events:
            if self._ended:
                return FORM_END
            if self._eof:
                raise MalformedForm("the body ends before the closing boundary")
            chunk = await next_chunk(self._content)
            if chunk:
                self._events.extend(self._parser.feed(chunk))
            else:
                self._eof = True
                self._events.extend(self._parser.close())
        return self._events.popleft()

    def _push_back(self, event: Event) -> None:
        self._events.appendleft(event)

    async def next(self) -> FormPart | None:
        """Return the next part (its headers read), or ``None`` after the closing boundary."""
        if self._part is not None:
            await self._part.release()
            self._part = None
        event = await self._event()
        if event is FORM_END:
            self._ended = True
            self._events.clear()
            return None
        if not isinstance(event, PartStart):  # pragma: no cover - the parser emits data only inside a part
            raise MalformedForm("unexpected data between parts")
        part = FormPart(self, event.headers)
        if part.nested:
            raise MalformedForm("nested multipart bodies are not accepted")
        if self._first and part.name == "_charset_":
            # RFC 7578 4.6: a leading _charset_ part names the default charset of the text
            # fields. aiohttp's reader consumes it too, refusing one longer than any charset name
            # (it then fails to find the next part: a form with _charset_ always got a 400).
            self._first = False
            charset = await part.read_chunk(MAX_CHARSET + 1)
            if len(charset) > MAX_CHARSET or (not part.at_eof() and await part.read_chunk(1)):
                raise MalformedForm("the _charset_ part is too long")
            await part.release()
            return await self.next()
        self._first = False
        self._part = part
        return part

    def __aiter__(self) -> FormReader:
        return self

    async def __anext__(self) -> FormPart:
        part = await self.next()
        if part is None:
            raise StopAsyncIteration
        return part


class FormPart:
    """One part: its headers, and its data as views of the received chunks."""

    def __init__(self, reader: FormReader, headers: CIMultiDictProxy[str]) -> None:
        self._reader = reader
        self.headers = headers
        self._at_eof = False
        _, self._params = parse_content_disposition(headers.get("Content-Disposition"))

    @property
    def name(self) -> str | None:
        """The ``name`` of the Content-Disposition header."""
        return content_disposition_filename(self._params, "name")

    @property
    def filename(self) -> str | None:
        """The ``filename`` of the Content-Disposition header (``None`` for a text field)."""
        return content_disposition_filename(self._params, "filename")

    @property
    def nested(self) -> bool:
        """Whether the part is itself a multipart body."""
        return parse_mimetype(self.headers.get("Content-Type", "")).type == "multipart"

    def at_eof(self) -> bool:
        """Whether the part's data has been read to its end."""
        return self._at_eof

    async def read_chunk(self, size: int = 65536) -> memoryview | bytes:
        """Up to ``size`` bytes of the part's data without copying them; ``b""`` at its end."""
        if self._at_eof:
            return b""
        event = await self._reader._event()
        if event is PART_END:
            self._at_eof = True
            return b""
        if not isinstance(event, memoryview):  # pragma: no cover - data or PART_END follow a PartStart
            raise MalformedForm("unexpected event inside a part")
        if len(event) > size:
            self._reader._push_back(event[size:])
            return event[:size]
        return event

    async def release(self) -> None:
        """Skip what is left of the part's data."""
        while await self.read_chunk(1 << 30):
            pass
