"""Read a recording off the request and stream it into a sink writer, part by part.

Multipart bodies are read with aiohttp's ``MultipartReader``/``BodyPartReader.read_chunk`` and raw
bodies with the request stream; never ``request.post()`` or ``part.read()``, which buffer whole
fields (and ``post()`` spools files to disk). Every read is bounded by the read timeout, every
byte is counted against the upload limit (``client_max_size`` does not bound ``read_chunk``),
and the sha256 of the recording is computed in a worker thread, one whole part at a time, while
the next part fills.

Whatever goes wrong after a writer was opened, the writer is aborted before the error leaves
this module: an upload ends in ``complete`` or ``abort``, never in between.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import quote

import structlog
from aiohttp import BodyPartReader, MultipartReader
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from .errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from .keys import KeyTemplate, check_filename, decode_filename, join_key
from .lifecycle import mark_completing
from .parts import BufferPool, PartBuffer
from .sinks import Sink, Stored, Writer
from .tags import sanitize_tag_key, sanitize_tag_value
from .wav import WavInfo, WavProbe

__all__ = [
    "MAX_FIELD_BYTES",
    "MAX_FORM_OVERHEAD",
    "MAX_PARTS",
    "Ingest",
    "Received",
    "RecordingStream",
    "Upload",
    "media_type_allowed",
]

log = structlog.get_logger("streamproxy.ingest")

# An upper bound per read: a read returns what aiohttp has buffered. An upload waiting for a part
# buffer holds its last chunk and the multipart reader's look-behind chunk; at 1 MiB that was
# ~250 MiB over the budget with 100 uploads in flight, at 64 KiB it is a few MiB (docs/benchmarks.md).
READ_CHUNK = 64 * 1024
MAX_PARTS = 64  # form parts per request
MAX_FIELD_BYTES = 64 * 1024  # one text field
MAX_FIELDS_BYTES = 512 * 1024  # all text fields together
MAX_FORM_OVERHEAD = 1024 * 1024  # what a multipart body may carry beyond the recording itself
MAX_METADATA_BYTES = 2048  # S3's limit on user metadata, names and values together
_IDENTITY_ENCODINGS = ("", "7bit", "8bit", "binary", "identity")
_META_NAME_UNSAFE = re.compile(r"[^a-z0-9-]")
_RESERVED_META = ("sha256", "size", "audio", "mime_type", "streamproxy-upload-id")
_SUFFIX_TYPES = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".flac": "audio/flac"}

T = TypeVar("T")


@dataclass(frozen=True)
class Received:
    """Size and sha256 of the bytes actually received."""

    size: int
    sha256: str
    wav: WavInfo | None = None

    @property
    def audio(self) -> dict[str, object] | None:
        """The ``audio`` object of the answer: WAV facts, or ``None`` for anything else."""
        return self.wav.to_json(self.size) if self.wav is not None else None


@dataclass(frozen=True)
class Upload:
    """A stored recording, as the handler reports it."""

    stored: Stored
    received: Received
    content_type: str
    fields: dict[str, str] = field(default_factory=dict)


def media_type_allowed(content_type: str, accept: tuple[str, ...]) -> bool:
    """Whether ``content_type`` (parameters ignored) matches one of ``accept`` (``type/*`` wildcards)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return any(pattern == media or (pattern.endswith("/*") and media.startswith(pattern[:-1])) for pattern in accept)


@dataclass(frozen=True)
class _Deadline:
    """When the whole upload must have arrived (``--max-upload-seconds``), on the loop's clock."""

    at: float
    limit: float


async def _timed(awaitable: Awaitable[T], seconds: float, deadline: _Deadline | None = None) -> T:
    now = asyncio.get_running_loop().time()
    capped = deadline is not None and deadline.at - now < seconds
    try:
        async with asyncio.timeout_at(deadline.at if deadline is not None and capped else now + seconds):
            return await awaitable
    except TimeoutError:
        if deadline is not None and capped:
            raise RequestTimeout(
                f"the upload took longer than {deadline.limit:g} seconds", code="upload_timeout"
            ) from None
        raise RequestTimeout(f"the client sent nothing for {seconds:g} seconds") from None


class RecordingStream:
    """Cut incoming chunks into full part buffers, hash them in order, and hand them to a writer."""

    def __init__(self, writer: Writer, pool: BufferPool, *, max_bytes: int, require_wav: bool = False) -> None:
        self._writer = writer
        self._pool = pool
        self._max_bytes = max_bytes
        self._probe = WavProbe()
        self._require_wav = require_wav
        self._sha = hashlib.sha256()
        self._hashing: asyncio.Future[None] | None = None
        self._buffer: PartBuffer | None = None
        self.size = 0

    async def feed(self, chunk: bytes) -> None:
        """Copy ``chunk`` into part buffers, shipping each full one; enforces the size limit.

        A full buffer is shipped only once the next byte arrives, so the writer always knows
        whether a part is the last. That keeps the budget deadlock-free: no writer ever sits on
        a buffer waiting for another one to learn whether the upload goes on.
        """
        if self.size + len(chunk) > self._max_bytes:
            raise PayloadTooLarge(f"the recording is larger than the limit of {self._max_bytes} bytes")
        self.size += len(chunk)
        if not self._probe.done:  # only the first chunk or two: the header is a few dozen bytes
            self._probe.feed(chunk)
            self._check_wav()
        view = memoryview(chunk)
        while view:
            buffer = self._buffer
            if buffer is not None and buffer.length == len(buffer.data):
                await self._ship(last=False)
                buffer = None
            if buffer is None:
                buffer = self._buffer = await self._pool.acquire()
            take = min(len(buffer.data) - buffer.length, len(view))
            buffer.data[buffer.length : buffer.length + take] = view[:take]
            buffer.length += take
            view = view[take:]

    async def _ship(self, *, last: bool) -> None:
        if self._hashing is not None:
            # sha256 is order-dependent; the previous part is long done by now. Wait before taking
            # the buffer out of self._buffer: a cancellation here (the client vanished) must leave
            # it where discard() gives it back, or the budget loses a buffer for good.
            await self._hashing
        part, self._buffer = self._buffer, None
        assert part is not None
        part.retain()
        # hashlib releases the GIL on large buffers: hashing runs on the second core.
        self._hashing = asyncio.get_running_loop().run_in_executor(None, self._sha.update, part.view)
        self._hashing.add_done_callback(lambda _: part.release())
        await self._writer.write(part, last=last)

    def _check_wav(self) -> None:
        if self._require_wav and self._probe.done and self._probe.info is None and self.size:
            raise UnsupportedMediaType(f"the recording is not a WAV file: {self._probe.reason}", code="not_wav")

    async def finish(self) -> Received:
        """Ship the last part and return what was received."""
        self._probe.finish()
        self._check_wav()
        if self._buffer is not None and self._buffer.length:
            await self._ship(last=True)
        await self.discard()
        return Received(self.size, self._sha.hexdigest(), self._probe.info)

    async def discard(self) -> None:
        """Give back the buffer being filled and wait for hashing to let go of its part."""
        if self._buffer is not None:
            self._buffer.release()
            self._buffer = None
        if self._hashing is not None:
            await asyncio.gather(self._hashing, return_exceptions=True)
            self._hashing = None


def sanitize_metadata(fields: Mapping[str, str], budget: int = MAX_METADATA_BYTES) -> dict[str, str]:
    """Turn text fields into S3 user metadata: safe names, ASCII values, within S3's 2 KiB."""
    out: dict[str, str] = {}
    for name, value in fields.items():
        key = _META_NAME_UNSAFE.sub("-", name.lower()).strip("-")
        if not key or key in _RESERVED_META or key in out:
            continue
        clean = quote(value, safe=" !#$&'()*+,/:;=?@[]^_`{|}~-.")
        cost = len(key) + len(clean)
        if cost > budget:
            log.warning("metadata_field_skipped", field=name, reason="S3 user metadata is limited to 2 KiB")
            continue
        budget -= cost
        out[key] = clean
    return out


class Ingest:
    """Turn one request body into one stored object (or a clean failure)."""

    def __init__(
        self,
        sink: Sink,
        pool: BufferPool,
        *,
        prefix: str,
        key_template: str,
        max_upload_bytes: int,
        read_timeout: float,
        file_field: str,
        accept_types: tuple[str, ...],
        max_upload_seconds: float | None = None,
        require_wav: bool = False,
        tag_fields: tuple[str, ...] = (),
        manifest: bool = False,
        manifest_sink: Sink | None = None,
    ) -> None:
        self.sink = sink
        self.pool = pool
        self.prefix = prefix
        self.template = KeyTemplate(key_template)
        self.max_upload_bytes = max_upload_bytes
        self.read_timeout = read_timeout
        self.file_field = file_field
        self.accept_types = accept_types
        self.max_upload_seconds = max_upload_seconds
        self.require_wav = require_wav
        self.tag_fields = tag_fields
        self.manifest = manifest
        # Manifests bypass the upload instrumentation: they are not recordings.
        self.manifest_sink = manifest_sink if manifest_sink is not None else sink
        self.manifest_failures = 0  # manifests not written although their recording was stored
        self.on_manifest_failure: Callable[[], None] = lambda: None
        # "upload.wav" tells which type to store when the client sends application/octet-stream.
        suffix = "." + key_template.rsplit(".", 1)[-1].lower() if "." in key_template else ""
        self._default_type = _SUFFIX_TYPES.get(suffix, "application/octet-stream")

    def key_for(self, filename: str | None, fields: Mapping[str, str]) -> str:
        """Return the full object key for this upload (prefix included), or raise a 400."""
        return join_key(self.prefix, self.template.render(filename, fields))

    def stored_type(self, declared: str | None) -> str:
        """Return the content type to store: the client's, unless it is missing or generic."""
        media = (declared or "").split(";", 1)[0].strip().lower()
        if not media or media == "application/octet-stream":
            return self._default_type
        return media

    def check_type(self, declared: str | None) -> None:
        """Refuse a recording whose content type is not accepted (415)."""
        if not media_type_allowed(declared or "application/octet-stream", self.accept_types):
            raise UnsupportedMediaType(
                f"recording content type {declared!r} is not accepted (accepted: {', '.join(self.accept_types)})"
            )

    def tags_for(self, fields: Mapping[str, str]) -> dict[str, str]:
        """Return the object tags the ``--tag-field`` fields give (sanitized to S3's tag rules)."""
        return {sanitize_tag_key(n): sanitize_tag_value(fields[n]) for n in self.tag_fields if n in fields}

    def _deadline(self) -> _Deadline | None:
        if self.max_upload_seconds is None:
            return None
        return _Deadline(asyncio.get_running_loop().time() + self.max_upload_seconds, self.max_upload_seconds)

    async def _stream(
        self, writer: Writer, read: Callable[[], Awaitable[bytes]], deadline: _Deadline | None = None
    ) -> Received:
        stream = RecordingStream(writer, self.pool, max_bytes=self.max_upload_bytes, require_wav=self.require_wav)
        try:
            while chunk := await _timed(read(), self.read_timeout, deadline):
                await stream.feed(chunk)
            received = await stream.finish()
        except BaseException:
            await stream.discard()
            raise
        if received.size == 0:
            raise BadRequest("the recording is empty", code="empty_recording")
        return received

    async def raw(self, read: Callable[[], Awaitable[bytes]], *, filename: str, content_type: str | None) -> Upload:
        """Store a raw request body (PUT /recordings/{filename}, POST /recordings?filename=)."""
        deadline = self._deadline()
        self.check_type(content_type)
        fields = {"filename": check_filename(filename)}
        key = self.key_for(filename, fields)
        stored_type = self.stored_type(content_type)
        writer = await self.sink.open(
            key, content_type=stored_type, metadata=sanitize_metadata(fields), tags=self.tags_for(fields)
        )
        try:
            received = await self._stream(writer, read, deadline)
            mark_completing()
            stored = await writer.complete(metadata=_facts(received), tags=self.tags_for(fields))
        except BaseException:
            await writer.abort()
            raise
        return Upload(stored, received, stored_type, fields)

    async def multipart(self, reader: MultipartReader) -> Upload:
        """Store the file field of a multipart/form-data body, whatever the order of its fields.

        Text fields before the file become metadata and may feed the key template. If the file
        comes before ``filename``, the sink stages it and moves it once the name is known.
        """
        fields: dict[str, str] = {}
        writer: Writer | None = None
        staged = False
        received: Received | None = None
        stored_type = ""
        fields_bytes = 0
        deadline = self._deadline()
        try:
            for _ in range(MAX_PARTS + 1):
                part = await _timed(_malformed_guard(reader.next()), self.read_timeout, deadline)
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    raise BadRequest("nested multipart bodies are not accepted", code="malformed_body")
                name = part.name
                if name is None:
                    raise BadRequest("a form part has no name", code="malformed_body")
                if name == self.file_field:
                    if writer is not None:
                        raise BadRequest(f"the file field {name!r} was sent twice", code="duplicate_field")
                    declared = part.headers.get("Content-Type")
                    self.check_type(declared)
                    encoding = part.headers.get("Content-Transfer-Encoding", "").strip().lower()
                    if encoding not in _IDENTITY_ENCODINGS or part.headers.get("Content-Encoding"):
                        raise BadRequest(
                            "encoded file parts are not accepted: send the bytes as they are", code="malformed_body"
                        )
                    key = None
                    if "filename" in fields:
                        key = self.key_for(fields["filename"], fields)
                    else:
                        # Fields the key template needs must come before the file: fail before streaming.
                        missing = [f for f in self.template.fields if not fields.get(f)]
                        if missing:
                            raise BadRequest(
                                f"the key template needs the text field {missing[0]!r} before the file",
                                code="missing_field",
                            )
                        staged = True
                    stored_type = self.stored_type(declared)
                    writer = await self.sink.open(
                        key, content_type=stored_type, metadata=sanitize_metadata(fields), tags=self.tags_for(fields)
                    )
                    received = await self._stream(writer, _chunk_reader(part), deadline)
                elif part.filename is not None:
                    raise BadRequest(
                        f"unexpected file field {name!r} (the recording goes in {self.file_field!r})",
                        code="unexpected_field",
                    )
                else:
                    if name in fields:
                        raise BadRequest(f"the field {name!r} was sent twice", code="duplicate_field")
                    value = await self._text(part, name, deadline)
                    fields_bytes += len(value) + len(name)
                    if fields_bytes > MAX_FIELDS_BYTES:
                        raise BadRequest(
                            f"the text fields exceed {MAX_FIELDS_BYTES} bytes together", code="field_too_large"
                        )
                    fields[name] = value
            else:
                raise BadRequest(f"the form has more than {MAX_PARTS} parts", code="too_many_parts")
            if writer is None or received is None:
                raise BadRequest(f"the file field {self.file_field!r} is missing", code="missing_field")
            if "filename" not in fields:
                raise BadRequest("the text field 'filename' is missing", code="missing_field")
            facts = _facts(received)
            tags = self.tags_for(fields)
            if staged:
                mark_completing()
                stored = await writer.complete(
                    key=self.key_for(fields["filename"], fields),
                    metadata={**sanitize_metadata(fields), **facts},
                    tags=tags,
                )
            else:
                mark_completing()
                stored = await writer.complete(metadata=facts, tags=tags)
        except BaseException:
            if writer is not None:
                await writer.abort()
            raise
        return Upload(stored, received, stored_type, fields)

    async def _text(self, part: BodyPartReader, name: str, deadline: _Deadline | None = None) -> str:
        data = bytearray()
        while chunk := await _timed(_malformed_guard(part.read_chunk(MAX_FIELD_BYTES)), self.read_timeout, deadline):
            data += chunk
            if len(data) > MAX_FIELD_BYTES:
                raise BadRequest(f"the field {name!r} is longer than {MAX_FIELD_BYTES} bytes", code="field_too_large")
        if name == "filename":
            return check_filename(decode_filename(bytes(data)))
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"the field {name!r} is not valid UTF-8", code="invalid_field") from None


def _chunk_reader(part: BodyPartReader) -> Callable[[], Awaitable[bytes]]:
    async def read() -> bytes:
        return await _malformed_guard(part.read_chunk(READ_CHUNK))

    return read


async def _malformed_guard(awaitable: Awaitable[T]) -> T:
    """Turn aiohttp's parse errors for a broken multipart body into a 400.

    aiohttp's multipart reader raises RuntimeError for some input too (an over-long ``_charset_``
    part, unknown encodings), so it counts as malformed input here.
    """
    try:
        return await awaitable
    except (ValueError, AssertionError, RuntimeError, HttpProcessingError) as exc:
        raise BadRequest(f"the multipart body is malformed ({_reason(exc)})", code="malformed_body") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, LineTooLong):  # its message quotes the line itself
        return "a line is too long"
    if isinstance(exc, HttpProcessingError):
        return exc.message or type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


def _facts(received: Received) -> dict[str, str]:
    facts = {"sha256": received.sha256, "size": str(received.size)}
    if received.wav is not None:
        facts["audio"] = received.wav.to_metadata(received.size)
    return facts
