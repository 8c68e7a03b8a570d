"""An in-memory sink for tests and trials: objects live in a dict until the process ends."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import BadRequest, KeyExists, StorageUnavailable
from ..parts import PartBuffer
from . import Stored, SweepItem

__all__ = ["MemoryObject", "MemorySink", "MemoryWriter"]


@dataclass
class MemoryObject:
    """One stored object."""

    data: bytes
    content_type: str
    metadata: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class MemorySink:
    """Keep objects in ``self.objects``; exclusive creation unless ``overwrite``."""

    description = "memory://"

    def __init__(self, *, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self.objects: dict[str, MemoryObject] = {}
        self.aborted = 0
        self.reachable = True

    async def start(self) -> None:
        """Nothing to acquire."""

    async def close(self) -> None:
        """Nothing to release."""

    async def probe(self) -> None:
        """Fail while ``reachable`` is false (tests flip it to play an outage)."""
        if not self.reachable:
            raise StorageUnavailable("memory storage is marked unreachable", storage_code="Unreachable")

    async def sweep(self, older_than: float, *, dry_run: bool, now: float | None = None) -> list[SweepItem]:
        """Nothing outlives an upload here: unfinished uploads were never in ``objects``."""
        return []

    async def open(
        self,
        key: str | None,
        *,
        content_type: str,
        metadata: Mapping[str, str],
        tags: Mapping[str, str] | None = None,
    ) -> MemoryWriter:
        """Start an upload."""
        return MemoryWriter(self, key, content_type, dict(metadata))


class MemoryWriter:
    """Collects parts; the object appears in the sink only on ``complete``."""

    def __init__(self, sink: MemorySink, key: str | None, content_type: str, metadata: dict[str, str]) -> None:
        self._sink = sink
        self._key = key
        self._content_type = content_type
        self._metadata = metadata
        self._chunks: list[bytes] = []
        self._done = False
        self._head_deferred = False
        self._head: bytes | None = None
        self.parts_seen: list[int] = []  # the order in which parts arrived (1 is the head), for tests

    def defer_head(self) -> None:
        """Part 1 comes last through ``write_head`` (the S3 writer's sequence, played in memory)."""
        self._head_deferred = True

    async def write(self, part: PartBuffer, *, last: bool = False) -> None:
        """Copy the part and release it."""
        try:
            self._chunks.append(bytes(part.view))
            self.parts_seen.append(len(self._chunks) + (1 if self._head_deferred else 0))
        finally:
            part.release()

    async def write_head(self, part: PartBuffer) -> None:
        """Take part 1 after the others."""
        try:
            self._head = bytes(part.view)
            self.parts_seen.append(1)
        finally:
            part.release()

    async def complete(
        self,
        *,
        key: str | None = None,
        metadata: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Stored:
        """Store the object under its key, refusing to replace one unless overwriting."""
        key = key or self._key
        if key is None:
            await self.abort()
            raise BadRequest("no key for the upload", code="missing_field")
        if key in self._sink.objects and not self._sink.overwrite:
            await self.abort()
            raise KeyExists(f"{key!r} already exists")
        data = b"".join(self._chunks if self._head is None else [self._head, *self._chunks])
        meta = {**self._metadata, **(metadata or {})}
        digest = None
        if self._head is not None:  # what S3 does by reading the object back
            digest = hashlib.sha256(data).hexdigest()
            meta["sha256"] = digest
        self._sink.objects[key] = MemoryObject(data, self._content_type, meta, dict(tags or {}))
        self._chunks = []
        self._done = True
        return Stored(key=key, url=f"memory:///{key}", parts=1, sha256=digest)

    async def abort(self) -> None:
        """Forget the bytes."""
        if not self._done:
            self._done = True
            self._chunks = []
            self._head = None
            self._sink.aborted += 1
