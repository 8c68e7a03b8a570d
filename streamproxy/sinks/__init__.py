"""Storage sinks: where recordings go, behind one small interface.

A ``Sink`` opens a ``Writer`` per upload. The writer receives whole part buffers in order and
takes ownership of each (it calls ``release()`` once it no longer needs the bytes, whether the
part was stored or not). Every writer ends in exactly one of:

* ``complete()``: the object now exists whole under its key, or an exception says it does not;
* ``abort()``: nothing of the upload remains. Idempotent, safe after any partial failure, and
  also what ``complete()`` does itself before it raises.

A writer opened with ``key=None`` does not know its name yet (the multipart form sent the file
before the ``filename`` field); it stages the bytes and ``complete(key=...)`` moves them.

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
from ..parts import PartBuffer

__all__ = [
    "HeadLast",
    "HeadLastWriter",
    "HeaderPatching",
    "Observable",
    "PatchingWriter",
    "Sink",
    "Stored",
    "SweepItem",
    "Writer",
    "WriterBase",
]


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

    async def complete(
        self,
        *,
        key: str | None = None,
        metadata: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Stored:
        """Make the object appear whole, or abort and raise.

        ``tags`` are object tags for stores that have them (S3); others ignore them.
        """

    async def abort(self) -> None:
        """Remove every trace of this upload. Idempotent."""


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

    async def open(
        self,
        key: str | None,
        *,
        content_type: str,
        metadata: Mapping[str, str],
        tags: Mapping[str, str] | None = None,
    ) -> Writer:
        """Start an upload to ``key`` (``None``: the name comes at ``complete``).

        ``tags`` are the object tags known so far; ``complete`` may add more.
        """

    async def close(self) -> None:
        """Release connections and other resources."""

    async def probe(self) -> None:
        """Check cheaply that storage is reachable and usable; raise a ``StorageError`` if not."""

    async def sweep(self, older_than: float, *, dry_run: bool, now: float | None = None) -> list[SweepItem]:
        """Remove leftovers of interrupted uploads older than ``older_than`` seconds (``now``: a Unix time)."""
