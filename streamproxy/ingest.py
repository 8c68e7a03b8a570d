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
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import quote

import structlog
from aiohttp import BodyPartReader, MultipartReader
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from .audio import AudioFacts
from .audio.formats import Hints, Plan, stored_type, strip_audio_extension
from .audio.stream import AudioPolicy, AudioStream, Outcome
from .errors import BadRequest, RequestTimeout, UnsupportedMediaType
from .keys import KeyTemplate, check_filename, decode_filename, join_key
from .lifecycle import mark_completing
from .parts import BufferPool
from .sinks import Completion, ObjectSpec, Sink, Stored, Writer
from .tags import sanitize_tag_key, sanitize_tag_value

__all__ = [
    "MAX_FIELD_BYTES",
    "MAX_FORM_OVERHEAD",
    "MAX_PARTS",
    "Ingest",
    "Received",
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

T = TypeVar("T")


@dataclass(frozen=True)
class Received:
    """Size, sha256 and format of the bytes actually received."""

    size: int
    sha256: str
    format: str | None = None  # "mulaw", "wav", "mp3", ... (None: unknown)

    def to_json(self) -> dict[str, object]:
        """Return the answer's ``received`` object."""
        return {"size": self.size, "sha256": self.sha256, "format": self.format}


@dataclass(frozen=True)
class Upload:
    """A stored recording, as the handler reports it: ``size``/``sha256`` of the stored object."""

    stored: Stored
    size: int
    sha256: str
    received: Received
    changed: bool  # the stored bytes differ from the received ones (a header in front, a transcode)
    audio: AudioFacts | None
    content_type: str
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def audio_json(self) -> dict[str, object] | None:
        """The ``audio`` object of the answer and the manifest."""
        return self.audio.to_json() if self.audio is not None else None


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
        audio: AudioPolicy | None = None,
        tag_fields: tuple[str, ...] = (),
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
        self.audio = audio or AudioPolicy()
        self.tag_fields = tag_fields

    def key_for(self, filename: str | None, fields: Mapping[str, str], ext: str = "") -> str:
        """Return the full object key for this upload (prefix included), or raise a 400.

        ``filename`` loses a known audio extension first: ``{filename}{ext}`` stores
        ``call-7.wav`` as ``call-7.wav``, not ``call-7.wav.wav``.
        """
        stem = strip_audio_extension(filename) if filename is not None else None
        return join_key(self.prefix, self.template.render(stem, fields, ext=ext))

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
        self,
        read: Callable[[], Awaitable[bytes]],
        deadline: _Deadline | None,
        hints: Hints,
        open_writer: Callable[[Plan], Awaitable[Writer]],
    ) -> tuple[Writer, Outcome]:
        """Stream the recording through the audio stage; the stage opens the writer once it knows the format.

        On any failure the writer (if one was opened) is aborted before the error leaves.
        """
        stream = AudioStream(
            self.pool, max_bytes=self.max_upload_bytes, policy=self.audio, hints=hints, open_writer=open_writer
        )
        try:
            while chunk := await _timed(read(), self.read_timeout, deadline):
                await stream.feed(chunk)
            outcome = await stream.finish()
            if outcome.received_size == 0 or stream.writer is None:
                raise BadRequest("the recording is empty", code="empty_recording")
        except BaseException:
            await stream.discard()
            if stream.writer is not None:
                await stream.writer.abort()
            raise
        return stream.writer, outcome

    async def _complete(
        self,
        writer: Writer,
        outcome: Outcome,
        fields: Mapping[str, str],
        content_type: str,
        *,
        key: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Upload:
        """Complete the writer with the facts of what is stored; abort it on failure."""
        try:
            mark_completing()
            stored = await writer.complete(
                Completion(key, metadata={**(metadata or {}), **_facts(outcome)}, tags=self.tags_for(fields))
            )
        except BaseException:
            await writer.abort()
            raise
        digest = outcome.stored_sha256 or stored.sha256
        assert digest is not None, "a writer that put a header in front must report the stored sha256"
        chosen = outcome.plan
        received = Received(outcome.received_size, outcome.received_sha256, chosen.arrival.format if chosen else None)
        changed = chosen is not None and chosen.changes_bytes
        return Upload(stored, outcome.stored_size, digest, received, changed, outcome.audio, content_type, dict(fields))

    def _opener(
        self, name: str | None, fields: Mapping[str, str], declared: str | None, types: list[str]
    ) -> Callable[[Plan], Awaitable[Writer]]:
        """Open the writer once the format is known: the key's ``{ext}`` and the stored type follow it.

        ``name`` ``None``: the name comes later (staged). The stored type is appended to ``types``.
        """

        async def open_writer(chosen: Plan) -> Writer:
            key = self.key_for(name, fields, chosen.ext) if name is not None else None
            types.append(stored_type(chosen, declared))
            return await self.sink.open(
                ObjectSpec(key, types[0], metadata=sanitize_metadata(fields), tags=self.tags_for(fields))
            )

        return open_writer

    async def raw(self, read: Callable[[], Awaitable[bytes]], *, filename: str, content_type: str | None) -> Upload:
        """Store a raw request body (PUT /recordings/{filename}, POST /recordings?filename=)."""
        deadline = self._deadline()
        self.check_type(content_type)
        fields = {"filename": check_filename(filename)}
        self.key_for(filename, fields, ".wav")  # a name that can never make a key fails before the body is read
        types: list[str] = []
        opener = self._opener(filename, fields, content_type, types)
        writer, outcome = await self._stream(read, deadline, Hints(filename, content_type), opener)
        return await self._complete(writer, outcome, fields, types[0])

    async def multipart(self, reader: MultipartReader) -> Upload:
        """Store the file field of a multipart/form-data body, whatever the order of its fields.

        Text fields before the file become metadata and may feed the key template. If the file
        comes before ``filename``, the sink stages it and moves it once the name is known; with
        no ``filename`` field at all, the file part's own ``filename=`` (without its extension)
        names the recording.
        """
        fields: dict[str, str] = {}
        writer: Writer | None = None
        staged = False
        outcome: Outcome | None = None
        part_name: str | None = None
        types: list[str] = []
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
                    if writer is not None or outcome is not None:
                        raise BadRequest(f"the file field {name!r} was sent twice", code="duplicate_field")
                    declared = part.headers.get("Content-Type")
                    self.check_type(declared)
                    encoding = part.headers.get("Content-Transfer-Encoding", "").strip().lower()
                    if encoding not in _IDENTITY_ENCODINGS or part.headers.get("Content-Encoding"):
                        raise BadRequest(
                            "encoded file parts are not accepted: send the bytes as they are", code="malformed_body"
                        )
                    part_name = part.filename
                    known = fields.get("filename")
                    if known is not None:
                        self.key_for(known, fields, ".wav")  # fail before streaming
                    else:
                        # Fields the key template needs must come before the file: fail before streaming.
                        missing = [f for f in self.template.fields if not fields.get(f)]
                        if missing:
                            raise BadRequest(
                                f"the key template needs the text field {missing[0]!r} before the file",
                                code="missing_field",
                            )
                        staged = True
                    opener = self._opener(known, dict(fields), declared, types)
                    writer, outcome = await self._stream(
                        _chunk_reader(part), deadline, Hints(part_name, declared), opener
                    )
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
            if writer is None or outcome is None or outcome.plan is None:
                raise BadRequest(f"the file field {self.file_field!r} is missing", code="missing_field")
            key: str | None = None
            if staged:
                key = self.key_for(self._name(fields, part_name), fields, outcome.plan.ext)
        except BaseException:
            if writer is not None:
                await writer.abort()
            raise
        if staged:
            return await self._complete(writer, outcome, fields, types[0], key=key, metadata=sanitize_metadata(fields))
        return await self._complete(writer, outcome, fields, types[0])

    @staticmethod
    def _name(fields: Mapping[str, str], part_name: str | None) -> str:
        """Return the recording's name: the ``filename`` field, else the file part's ``filename=`` sans extension."""
        if "filename" in fields:
            return fields["filename"]
        if part_name:
            stem = part_name.rsplit(".", 1)[0] if "." in part_name.lstrip(".") else part_name
            return check_filename(stem)
        raise BadRequest("the text field 'filename' is missing", code="missing_field")

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


def _facts(outcome: Outcome) -> dict[str, str]:
    """Return the ``sha256``/``size``/``audio`` metadata; a writer that hashes what it stored adds ``sha256``."""
    facts = {"size": str(outcome.stored_size)}
    if outcome.stored_sha256 is not None:
        facts["sha256"] = outcome.stored_sha256
    if outcome.audio is not None:
        facts["audio"] = outcome.audio.to_metadata()
    return facts
