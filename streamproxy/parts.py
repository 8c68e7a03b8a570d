"""Fixed-size part buffers and the process-wide byte budget.

Every byte streamproxy holds on behalf of an upload sits in a ``PartBuffer`` taken from one
``BufferPool``. The pool owns ``max_bytes // part_size`` buffers; when all are taken,
``acquire()`` waits, the upload stops reading from its socket (its connection is paused at
once, see ``RECEIVING``), and TCP backpressure slows the client. Nothing else allocates
per-upload memory that grows with the recording.

Why the budget cannot deadlock: a buffer is always taken *whole*, before any byte is read into
it. An upload holding a buffer therefore never needs a second one to make that buffer useful:
it fills it from its own client (bounded by the read timeout) and hands it to storage, which
returns it when the part is stored or the upload is aborted. Neither step waits on the pool.
The ingest side ships a full buffer only when the next byte arrives (so every part reaches
the writer marked last or not), and writers never keep a non-last part waiting for more: a
writer that held part 1 "until part 2 shows whether a single PUT will do" would hold a buffer
while needing another, and a handful of such uploads would exhaust the pool for good.
So every taken buffer comes back in bounded time, and waiters are served first-come
first-served. The trap this avoids is reserving budget in small increments, where many uploads
can each hold half a part and all wait for the other half.

One exception is planned for: an upload that must hold its first part until its end (a WAV
header whose sizes are known only then goes in front of it, and S3 takes that part last) holds
a buffer while it needs others. It takes that buffer with ``acquire(hold=True)``, which first
waits for one of ``capacity - 1`` hold slots while the upload holds nothing. So at most
``capacity - 1`` buffers are ever held that way, at least one buffer always circulates under
the rule above, and every holder gets its next buffer in bounded time.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import Protocol

__all__ = ["RECEIVING", "BufferPool", "PartBuffer", "Receiving"]


class Receiving(Protocol):
    """The reading side of a client connection (aiohttp's protocol): what an upload pauses while it waits."""

    def pause_reading(self) -> None:
        """Stop taking bytes from the socket."""

    def resume_reading(self) -> None:
        """Take bytes from the socket again."""


# The connection whose request the current task serves, set by the server for each connection's tasks
# (streamproxy.connections). While an upload waits for a buffer it reads nothing, and without a pause
# its connection would keep receiving into aiohttp's buffer until that holds twice ``read_bufsize``
# (512 KiB) plus one socket read: per waiting upload, outside the budget.
RECEIVING: ContextVar[Receiving | None] = ContextVar("receiving", default=None)
PAUSE_WHILE_WAITING = True


class PartBuffer:
    """One part's bytes, reference-counted so the hasher and the writer can share it."""

    __slots__ = ("_pool", "_refs", "data", "held", "length")

    def __init__(self, pool: BufferPool, data: bytearray, *, held: bool = False) -> None:
        self._pool = pool
        self._refs = 1
        self.data = data
        self.length = 0
        self.held = held  # taken with a hold slot, given back with the buffer

    @property
    def pool(self) -> BufferPool:
        """The budget this buffer belongs to (a writer that must read bytes back takes its parts from it)."""
        return self._pool

    @property
    def view(self) -> memoryview:
        """The filled bytes, without copying."""
        return memoryview(self.data)[: self.length]

    def retain(self) -> PartBuffer:
        """Add a reference; each holder calls ``release()`` once."""
        self._refs += 1
        return self

    def release(self) -> None:
        """Drop a reference; the last one returns the buffer to the pool. Call from the event loop."""
        self._refs -= 1
        if self._refs == 0:
            self._pool._give_back(self)


class BufferPool:
    """The process-wide budget of part buffers (see the module docstring for why it cannot deadlock)."""

    def __init__(self, part_size: int, max_bytes: int) -> None:
        if part_size <= 0 or max_bytes < part_size:
            raise ValueError("the buffer budget must hold at least one part")
        self.part_size = part_size
        self.capacity = max_bytes // part_size
        self._slots = asyncio.Semaphore(self.capacity)
        # One buffer must always circulate, so holders may keep at most capacity - 1 (module docstring).
        self._holds = asyncio.Semaphore(self.capacity - 1)
        self._free: list[bytearray] = []
        self._taken = 0

    @property
    def bytes_in_use(self) -> int:
        """Bytes held by uploads right now."""
        return self._taken * self.part_size

    @property
    def bytes_allocated(self) -> int:
        """Bytes of buffers allocated so far (in use or idle); never above the budget."""
        return (self._taken + len(self._free)) * self.part_size

    @property
    def can_hold(self) -> bool:
        """Whether an upload may hold a buffer while it takes others (the budget has two parts or more)."""
        return self.capacity > 1

    async def acquire(self, *, hold: bool = False) -> PartBuffer:
        """Take one empty buffer, waiting while the budget is spent.

        ``hold=True``: the caller will keep this buffer while it takes others; it first waits
        for a hold slot. Call it only while holding no buffer (see the module docstring).
        """
        if hold and not self.can_hold:
            raise ValueError("holding a part needs a buffer budget of at least two parts")
        receiving = RECEIVING.get() if PAUSE_WHILE_WAITING else None
        if receiving is not None and (self._slots.locked() or (hold and self._holds.locked())):
            receiving.pause_reading()
            try:
                await self._take_slots(hold)
            finally:
                receiving.resume_reading()
        else:
            await self._take_slots(hold)
        self._taken += 1
        # Reusing buffers keeps RSS flat: 8 MiB allocations would otherwise go back and forth
        # between glibc's heap and mmap and fragment it.
        data = self._free.pop() if self._free else bytearray(self.part_size)
        return PartBuffer(self, data, held=hold)

    async def _take_slots(self, hold: bool) -> None:
        if hold:
            await self._holds.acquire()
        try:
            await self._slots.acquire()
        except BaseException:
            if hold:
                self._holds.release()
            raise

    def _give_back(self, part: PartBuffer) -> None:
        if part.held:
            part.held = False
            self._holds.release()
        self._taken -= 1
        self._free.append(part.data)
        part.data = bytearray()
        self._slots.release()
