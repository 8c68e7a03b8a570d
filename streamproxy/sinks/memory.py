"""An in-memory sink for tests and trials: objects live in a dict until the process ends."""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field

from ..errors import KeyExists, StorageUnavailable
from ..parts import PartBuffer
from . import AS_OPENED, Completion, ObjectSpec, Stored, SweepItem, WriterBase
from .outbox import check_name

__all__ = ["MemoryObject", "MemoryOutbox", "MemorySink", "MemoryWriter"]


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
        self.outbox = MemoryOutbox()

    def outbox_store(self) -> MemoryOutbox:
        """Return the notification outbox; servers that share this sink object share it too."""
        return self.outbox

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

    async def open(self, spec: ObjectSpec) -> MemoryWriter:
        """Start an upload."""
        return MemoryWriter(self, spec)


class MemoryWriter(WriterBase):
    """Collects parts; the object appears in the sink only on ``complete``."""

    def __init__(self, sink: MemorySink, spec: ObjectSpec) -> None:
        self._sink = sink
        self._spec = spec
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

    async def complete(self, done: Completion = AS_OPENED) -> Stored:
        """Store the object under its key, refusing to replace one unless overwriting."""
        try:
            key = done.key_for(self._spec)
            if key in self._sink.objects and not self._sink.overwrite:
                raise KeyExists(f"{key!r} already exists")
        except BaseException:
            await self.abort()
            raise
        data = b"".join(self._chunks if self._head is None else [self._head, *self._chunks])
        meta = {**self._spec.metadata, **done.metadata}
        digest = None
        if self._head is not None:  # what S3 does by reading the object back
            digest = hashlib.sha256(data).hexdigest()
            meta["sha256"] = digest
        self._sink.objects[key] = MemoryObject(data, self._spec.content_type, meta, dict(done.tags))
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


class MemoryOutbox:
    """The notification outbox as a sorted dict (``streamproxy.sinks.outbox``).

    ``failing`` makes every call raise ``StorageUnavailable``, so tests can play an outbox outage.
    """

    description = "memory:///.streamproxy-outbox/"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self._names: list[str] = []  # sorted, for paged listing
        self.failing = False

    def _check(self, name: str) -> str:
        if self.failing:
            raise StorageUnavailable("memory outbox is marked failing", storage_code="Unreachable")
        return check_name(name)

    async def put(self, name: str, data: bytes, *, durable: bool = True) -> None:
        """Store or replace ``name``."""
        if self._check(name) not in self.objects:
            bisect.insort(self._names, name)
        self.objects[name] = bytes(data)

    async def put_new(self, name: str, data: bytes, *, durable: bool = True) -> bool:
        """Store ``name`` only if it is free."""
        if self._check(name) in self.objects:
            return False
        await self.put(name, data)
        return True

    async def get(self, name: str) -> bytes | None:
        """Return ``name`` or ``None``."""
        return self.objects.get(self._check(name))

    async def delete(self, name: str) -> None:
        """Forget ``name``."""
        if self.objects.pop(self._check(name), None) is not None:
            del self._names[bisect.bisect_left(self._names, name)]

    async def list(self, prefix: str, *, after: str = "", limit: int = 100) -> list[str]:
        """Up to ``limit`` names starting with ``prefix`` after ``after``, in order."""
        if self.failing:
            raise StorageUnavailable("memory outbox is marked failing", storage_code="Unreachable")
        start = max(bisect.bisect_right(self._names, after), bisect.bisect_left(self._names, prefix))
        found: list[str] = []
        for name in self._names[start:]:
            if not name.startswith(prefix) or len(found) >= limit:
                break
            found.append(name)
        return found
