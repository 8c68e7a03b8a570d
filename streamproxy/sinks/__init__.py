"""Storage sinks: where recordings go, behind one small interface.

A ``Sink`` opens a ``Writer`` per upload. The writer receives whole part buffers in order and
takes ownership of each (it calls ``release()`` once it no longer needs the bytes, whether the
part was stored or not). Every writer ends in exactly one of:

* ``complete()``: the object now exists whole under its key, or an exception says it does not;
* ``abort()``: nothing of the upload remains. Idempotent, safe after any partial failure, and
  also what ``complete()`` does itself before it raises.

What an upload is to become travels as two parameter objects, as tusd's ``FileInfo`` does, so
wrappers (the metrics sink) forward one value and a new field touches no signature:
``open(ObjectSpec(key, content_type, metadata, tags))`` and ``complete(Completion(key, metadata, tags))``
(``complete()`` alone: as opened). A writer opened with ``key=None`` does not know its name yet (the
multipart form sent the file before the ``filename`` field); it stages the bytes and
``complete(Completion(key=...))`` moves them.

Some stored recordings begin with a header whose content is known only at the end (a WAV header
in front of headerless G.711). A writer supports that in one of two ways, declared as protocols:
``HeaderPatching`` (the filesystem: the header is written in place before the rename) or
``HeadLast`` (S3: part 1 is uploaded after all the others). Either way ``complete`` then reports
the sha256 of the stored bytes in ``Stored.sha256`` (it had to hash them itself) and stores it as
the ``sha256`` metadata or tag instead of the one it was given.

Implementations: ``S3Sink`` (the sinks.s3 package), ``FileSink`` (sinks.fs), ``MemorySink`` (sinks.memory).
Sinks raise only ``streamproxy.errors`` exceptions and never import aiohttp's web layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from ..checksums import Checksum
from ..errors import BadRequest
from ..parts import PartBuffer

__all__ = [
    "AS_OPENED",
    "Completion",
    "HeadLast",
    "HeadLastWriter",
    "HeaderPatching",
    "ObjectSpec",
    "Observable",
    "PatchingWriter",
    "Sink",
    "Stored",
    "SweepItem",
    "Writer",
    "WriterBase",
]


def _own_mappings(spec: ObjectSpec | Completion) -> None:
    """Copy the caller's metadata and tags: a writer keeps them until ``complete``, the caller may reuse its dicts."""
    object.__setattr__(spec, "metadata", dict(spec.metadata))
    object.__setattr__(spec, "tags", dict(spec.tags))


@dataclass(frozen=True)
class ObjectSpec:
    """What ``Sink.open`` starts: the object's key (``None``: named at ``complete``), type, metadata, tags.

    ``tags`` are the object tags known at open, for stores that have them (S3); ``complete`` may add more.
    """

    key: str | None
    content_type: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _own_mappings(self)


@dataclass(frozen=True)
class Completion:
    """What ``Writer.complete`` adds to the ``ObjectSpec``: the key if it came late, more metadata and tags.

    Metadata known only at the end (the sha256, the size) joins the metadata given at open.
    ``tags`` are the object's whole tag set, for stores that have tags (others ignore them);
    ``ObjectSpec.tags`` only start an upload that must be created with its tags (S3 multipart).
    """

    key: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _own_mappings(self)

    def key_for(self, spec: ObjectSpec) -> str:
        """Return the final key: the one given now, else the one given at open; ``BadRequest`` if neither."""
        key = self.key or spec.key
        if key is None:
            raise BadRequest("no key for the upload", code="missing_field")
        return key


AS_OPENED = Completion()  # ``complete()``'s default: the key, metadata and tags given at open


@dataclass(frozen=True)
class Stored:
    """What a completed upload left in storage."""

    key: str
    url: str
    bucket: str | None = None
    etag: str | None = None
    version_id: str | None = None
    parts: int = 1
    extra: dict[str, str] = field(default_factory=dict)
    checksum: Checksum | None = None  # the whole object's checksum the store verified (S3 only)
    sha256: str | None = None  # of the stored bytes, when the writer hashed them (a header was put in front)


@dataclass(frozen=True)
class SweepItem:
    """A leftover of an interrupted upload (incomplete multipart upload, staging object, temp file)."""

    kind: str
    key: str
    age_seconds: float
    error: str | None = None


class Writer(Protocol):
    """One upload in progress; see the package docstring for the ownership and ending rules."""

    async def write(self, part: PartBuffer, *, last: bool = False) -> None:
        """Take ownership of one filled part; parts arrive in order, all but the last full-size.

        ``last`` tells that no part follows. A writer must not hold a part that is not the last
        while it waits for more (see ``streamproxy.parts`` on why the budget cannot deadlock).
        """

    async def complete(self, done: Completion = AS_OPENED) -> Stored:
        """Make the object appear whole under ``done.key_for(spec)``, or abort and raise."""

    async def abort(self) -> None:
        """Remove every trace of this upload. Idempotent."""

    async def __aenter__(self) -> Self:
        """Use the writer as ``async with``: see ``WriterBase``, which every writer derives from."""

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Abort the upload unless ``complete()`` finished it."""


@runtime_checkable
class HeaderPatching(Protocol):
    """A writer that can overwrite the first bytes it was given (placeholders) before ``complete``."""

    async def patch_header(self, header: bytes) -> None:
        """Replace the first ``len(header)`` bytes written; ``complete`` then hashes what it stores."""


@runtime_checkable
class HeadLast(Protocol):
    """A writer that takes part 1 after all the others (S3 accepts parts in any order)."""

    def defer_head(self) -> None:
        """Announce, before the first ``write``, that part 1 will come last through ``write_head``."""

    async def write_head(self, part: PartBuffer) -> None:
        """Take part 1 (full-size unless it is the only part) after every other part, before ``complete``.

        ``complete`` then reads back what follows part 1 to hash the stored bytes.
        """


@runtime_checkable
class Observable(Protocol):
    """A sink that reports every call it makes to its store (the S3 sink), for the metrics."""

    observe: Callable[[str, float, int], None]
    """Called after each call with its operation, its duration in seconds and its retries."""


class HeadLastWriter(Writer, HeadLast, Protocol):
    """A writer that takes part 1 last."""


class PatchingWriter(Writer, HeaderPatching, Protocol):
    """A writer that patches its first bytes in place."""


class WriterBase:
    """Makes a writer an async context manager: leaving the block on an exception aborts the upload.

    As in smart_open, ``complete()`` finishes the upload and an exception inside the block undoes it;
    a block left without either is aborted too, so every upload ends in complete or abort.
    """

    async def abort(self) -> None:  # pragma: no cover - every writer defines its own
        """Remove every trace of this upload (each writer defines it)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.abort()  # idempotent, and a no-op after a successful complete()


class Sink(Protocol):
    """A storage destination."""

    description: str

    async def start(self) -> None:
        """Acquire long-lived resources (the S3 client and its connection pool)."""

    async def open(self, spec: ObjectSpec) -> Writer:
        """Start an upload to ``spec.key`` (``None``: the name comes at ``complete``)."""

    async def close(self) -> None:
        """Release connections and other resources."""

    async def probe(self) -> None:
        """Check cheaply that storage is reachable and usable; raise a ``StorageError`` if not."""

    async def sweep(self, older_than: float, *, dry_run: bool, now: float | None = None) -> list[SweepItem]:
        """Remove leftovers of interrupted uploads older than ``older_than`` seconds (``now``: a Unix time)."""
