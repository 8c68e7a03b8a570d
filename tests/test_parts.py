"""The buffer budget: bounded, reused, first-come first-served, and free of deadlock."""

from __future__ import annotations

import asyncio

import pytest

from streamproxy.parts import BufferPool

PART = 1024


async def test_budget_blocks_at_capacity_and_resumes_on_release() -> None:
    """The (capacity+1)-th acquire waits until a buffer comes back."""
    pool = BufferPool(PART, 3 * PART)
    held = [await pool.acquire() for _ in range(3)]
    waiter = asyncio.ensure_future(pool.acquire())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    assert pool.bytes_in_use == 3 * PART
    held.pop().release()
    buffer = await asyncio.wait_for(waiter, 1)
    assert len(buffer.data) == PART
    assert pool.bytes_allocated == 3 * PART


async def test_buffers_are_reused_not_reallocated() -> None:
    """A released buffer is handed out again, so memory stays at the high-water mark."""
    pool = BufferPool(PART, 2 * PART)
    first = await pool.acquire()
    data = first.data
    first.release()
    again = await pool.acquire()
    assert again.data is data


async def test_shared_part_returns_only_after_last_reference() -> None:
    """retain/release: the hasher and the writer can both hold a part."""
    pool = BufferPool(PART, PART)
    part = (await pool.acquire()).retain()
    part.release()
    assert pool.bytes_in_use == PART
    part.release()
    assert pool.bytes_in_use == 0


async def test_many_more_uploaders_than_budget_all_finish() -> None:
    """50 uploads of 7 parts each through a 4-part budget finish: no upload ever waits holding a partial claim."""
    pool = BufferPool(PART, 4 * PART)
    peak = 0

    async def upload() -> None:
        nonlocal peak
        for _ in range(7):
            part = await pool.acquire()
            peak = max(peak, pool.bytes_in_use)
            await asyncio.sleep(0)  # the part "uploads"
            part.release()

    await asyncio.wait_for(asyncio.gather(*(upload() for _ in range(50))), 10)
    assert peak <= 4 * PART
    assert pool.bytes_in_use == 0


def test_budget_must_hold_a_part() -> None:
    """A budget smaller than one part is a configuration error."""
    with pytest.raises(ValueError):
        BufferPool(PART, PART - 1)


class _Connection:
    """Stands for aiohttp's protocol: records whether the upload paused its reading."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


async def test_an_upload_waiting_for_a_buffer_pauses_its_connection_until_it_gets_one() -> None:
    """Without the pause, aiohttp keeps receiving up to twice read_bufsize per waiting upload, outside the budget."""
    from streamproxy.parts import RECEIVING

    pool = BufferPool(PART, PART)
    connection = _Connection()
    RECEIVING.set(connection)  # the test's context; the tasks below copy it as aiohttp's request tasks do
    held = await pool.acquire()
    assert connection.calls == []  # a free buffer: no pause
    waiter = asyncio.ensure_future(pool.acquire())
    await asyncio.sleep(0.01)
    assert connection.calls == ["pause"]
    held.release()
    (await asyncio.wait_for(waiter, 1)).release()
    assert connection.calls == ["pause", "resume"]


async def test_a_cancelled_wait_for_a_buffer_resumes_the_connection() -> None:
    from streamproxy.parts import RECEIVING

    pool = BufferPool(PART, PART)
    connection = _Connection()
    RECEIVING.set(connection)
    held = await pool.acquire()
    waiter = asyncio.ensure_future(pool.acquire())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert connection.calls == ["pause", "resume"]
    held.release()
    assert pool.bytes_in_use == 0
