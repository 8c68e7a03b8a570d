"""Read a recording off the request and stream it into a sink writer, part by part.

Multipart bodies are read with ``formdata.FormReader``, which hands out views of the chunks the
HTTP layer received, and raw bodies one received chunk at a time (``formdata.next_chunk``), so the
copy into the part buffer is the only copy of a body byte on the event loop; never
``request.post()``, which buffers whole fields and spools files to disk. Every read is bounded by
the read timeout, every byte is counted against the upload limit (``client_max_size`` does not
bound streamed reads), and the sha256 of the recording is computed in a worker thread, one whole
part at a time, while the next part fills.

Whatever goes wrong after a writer was opened, the writer is aborted before the error leaves
this module: the writer is an async context manager, entered into an ``AsyncExitStack`` the
moment the audio stage opens it, and leaving that block aborts every upload that did not
complete. An upload ends in ``complete`` or ``abort``, never in between.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import quote

import structlog
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from .audio import AudioFacts
from .audio.formats import Hints, Plan, stored_type, strip_audio_extension
from .audio.stream import AudioPolicy, AudioStream, Outcome
from .errors import BadRequest, RequestTimeout, UnsupportedMediaType
from .formdata import FormPart, FormReader
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


@dataclass
class _Form:
    """What a multipart body has delivered so far; iterating it yields its parts, each within the read timeout.

    A form may have ``MAX_PARTS`` parts: the part after them is still handed out (its own
    refusal, if any, comes first) and the form is refused before anything further is read.
    """

    reader: FormReader
    read_timeout: float
    deadline: _Deadline | None
    scope: AsyncExitStack  # the writer's: leaving it aborts an upload that did not complete
    fields: dict[str, str] = field(default_factory=dict)
    fields_bytes: int = 0  # names and values of the text fields, against MAX_FIELDS_BYTES
    writer: Writer | None = None  # open from the file part's first bytes until complete or abort
    outcome: Outcome | None = None
    staged: bool = False  # the file came before its name: the sink stages it
    part_name: str | None = None  # the file part's own ``filename=``
    types: list[str] = field(default_factory=list)  # the stored content type, once the writer opened
    parts: int = 0

    def __aiter__(self) -> _Form:
        return self

    async def __anext__(self) -> FormPart:
        if self.parts > MAX_PARTS:
            raise BadRequest(f"the form has more than {MAX_PARTS} parts", code="too_many_parts")
        part = await _timed(_malformed_guard(self.reader.next()), self.read_timeout, self.deadline)
        if part is None:
            raise StopAsyncIteration
        self.parts += 1
        return part


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
        read: Callable[[], Awaitable[bytes | memoryview]],
        deadline: _Deadline | None,
        hints: Hints,
        open_writer: Callable[[Plan], Awaitable[Writer]],
    ) -> tuple[Writer, Outcome]:
        """Stream the recording through the audio stage; the stage opens the writer once it knows the format.

        On any failure the stage gives back its buffers before the error leaves; the writer, if
        one was opened, is aborted when the caller's writer scope is left.
        """
        stream = AudioStream(
            self.pool, max_bytes=self.max_upload_bytes, policy=self.audio, hints=hints, open_writer=open_writer
        )
        try:
            while chunk := await _timed(read(), self.read_timeout, deadline):
                await stream.feed(chunk)
            outcome = await stream.finish()
        except BaseException:
            await stream.discard()
            raise
        if outcome.received_size == 0 or stream.writer is None:
            raise BadRequest("the recording is empty", code="empty_recording")
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
        """Complete the writer with the facts of what is stored (a failed complete aborts it)."""
        mark_completing()
        stored = await writer.complete(
            Completion(key, metadata={**(metadata or {}), **_facts(outcome)}, tags=self.tags_for(fields))
        )
        digest = outcome.stored_sha256 or stored.sha256
        assert digest is not None, "a writer that put a header in front must report the stored sha256"
        chosen = outcome.plan
        received = Received(outcome.received_size, outcome.received_sha256, chosen.arrival.format if chosen else None)
        changed = chosen is not None and chosen.changes_bytes
        return Upload(stored, outcome.stored_size, digest, received, changed, outcome.audio, content_type, dict(fields))

    def _opener(
        self,
        name: str | None,
        fields: Mapping[str, str],
        declared: str | None,
        types: list[str],
        scope: AsyncExitStack,
    ) -> Callable[[Plan], Awaitable[Writer]]:
        """Open the writer once the format is known: the key's ``{ext}`` and the stored type follow it.

        ``name`` ``None``: the name comes later (staged). The stored type is appended to ``types``.
        The writer enters ``scope`` as a context manager: leaving the scope aborts it unless it
        completed, whatever the way out (a refusal, a storage error, the client vanishing).
        """

        async def open_writer(chosen: Plan) -> Writer:
            key = self.key_for(name, fields, chosen.ext) if name is not None else None
            types.append(stored_type(chosen, declared))
            spec = ObjectSpec(key, types[0], metadata=sanitize_metadata(fields), tags=self.tags_for(fields))
            return await scope.enter_async_context(await self.sink.open(spec))

        return open_writer

    async def raw(self, read: Callable[[], Awaitable[bytes]], *, filename: str, content_type: str | None) -> Upload:
        """Store a raw request body (PUT /recordings/{filename}, POST /recordings?filename=)."""
        deadline = self._deadline()
        self.check_type(content_type)
        fields = {"filename": check_filename(filename)}
        self.key_for(filename, fields, ".wav")  # a name that can never make a key fails before the body is read
        types: list[str] = []
        async with AsyncExitStack() as scope:
            opener = self._opener(filename, fields, content_type, types, scope)
            writer, outcome = await self._stream(read, deadline, Hints(filename, content_type), opener)
            return await self._complete(writer, outcome, fields, types[0])

    async def multipart(self, reader: FormReader) -> Upload:
        """Store the file field of a multipart/form-data body, whatever the order of its fields.

        Text fields before the file become metadata and may feed the key template. If the file
        comes before ``filename``, the sink stages it and moves it once the name is known; with
        no ``filename`` field at all, the file part's own ``filename=`` (without its extension)
        names the recording.
        """
        async with AsyncExitStack() as scope:
            form = _Form(reader, self.read_timeout, self._deadline(), scope)
            async for part in form:
                await self._part(form, part)
            writer, outcome = form.writer, form.outcome
            if writer is None or outcome is None or outcome.plan is None:
                raise BadRequest(f"the file field {self.file_field!r} is missing", code="missing_field")
            if not form.staged:
                return await self._complete(writer, outcome, form.fields, form.types[0])
            key = self.key_for(self._name(form.fields, form.part_name), form.fields, outcome.plan.ext)
            metadata = sanitize_metadata(form.fields)
            return await self._complete(writer, outcome, form.fields, form.types[0], key=key, metadata=metadata)

    async def _part(self, form: _Form, part: FormPart) -> None:
        """Dispatch one part: the recording, a text field, or a refusal."""
        name = part.name
        if name is None:
            raise BadRequest("a form part has no name", code="malformed_body")
        if name == self.file_field:
            await self._file_part(form, part, name)
        elif part.filename is not None:
            raise BadRequest(
                f"unexpected file field {name!r} (the recording goes in {self.file_field!r})", code="unexpected_field"
            )
        else:
            await self._text_part(form, part, name)

    async def _file_part(self, form: _Form, part: FormPart, name: str) -> None:
        """Stream the recording into a writer; check everything that can fail before the first byte."""
        if form.writer is not None or form.outcome is not None:
            raise BadRequest(f"the file field {name!r} was sent twice", code="duplicate_field")
        declared = part.headers.get("Content-Type")
        self.check_type(declared)
        encoding = part.headers.get("Content-Transfer-Encoding", "").strip().lower()
        if encoding not in _IDENTITY_ENCODINGS or part.headers.get("Content-Encoding"):
            raise BadRequest("encoded file parts are not accepted: send the bytes as they are", code="malformed_body")
        form.part_name = part.filename
        known = form.fields.get("filename")
        if known is not None:
            self.key_for(known, form.fields, ".wav")  # fail before streaming
        else:
            # Fields the key template needs must come before the file: fail before streaming.
            missing = [f for f in self.template.fields if not form.fields.get(f)]
            if missing:
                raise BadRequest(
                    f"the key template needs the text field {missing[0]!r} before the file", code="missing_field"
                )
            form.staged = True
        opener = self._opener(known, dict(form.fields), declared, form.types, form.scope)
        form.writer, form.outcome = await self._stream(
            _chunk_reader(part), form.deadline, Hints(form.part_name, declared), opener
        )

    async def _text_part(self, form: _Form, part: FormPart, name: str) -> None:
        """Read one text field whole (it is small), counting it against the fields' budget."""
        if name in form.fields:
            raise BadRequest(f"the field {name!r} was sent twice", code="duplicate_field")
        value = await self._text(part, name, form.deadline)
        form.fields_bytes += len(value) + len(name)
        if form.fields_bytes > MAX_FIELDS_BYTES:
            raise BadRequest(f"the text fields exceed {MAX_FIELDS_BYTES} bytes together", code="field_too_large")
        form.fields[name] = value

    @staticmethod
    def _name(fields: Mapping[str, str], part_name: str | None) -> str:
        """Return the recording's name: the ``filename`` field, else the file part's ``filename=`` sans extension."""
        if "filename" in fields:
            return fields["filename"]
        if part_name:
            stem = part_name.rsplit(".", 1)[0] if "." in part_name.lstrip(".") else part_name
            return check_filename(stem)
        raise BadRequest("the text field 'filename' is missing", code="missing_field")

    async def _text(self, part: FormPart, name: str, deadline: _Deadline | None = None) -> str:
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


def _chunk_reader(part: FormPart) -> Callable[[], Awaitable[bytes | memoryview]]:
    async def read() -> bytes | memoryview:
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
