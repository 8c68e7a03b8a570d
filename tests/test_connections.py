"""The connection guard (streamproxy/connections.py) in front of a small aiohttp app, in process.

The same guard wired into ``streamproxy serve`` (flags, metrics, memory under hundreds of slow
connections) is tested in tests/test_slow_clients.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from streamproxy.connections import ConnectionLimits, GuardedSite
from tests.servers import free_port

Start = Callable[[ConnectionLimits], Awaitable[tuple[GuardedSite, int]]]


@pytest.fixture
async def guarded() -> AsyncIterator[Start]:
    """Serve an echo app through a GuardedSite; yield a function that starts it with given limits."""
    runners: list[web.AppRunner] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"status": "success", "size": len(body)})

    async def start(limits: ConnectionLimits) -> tuple[GuardedSite, int]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", echo)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        runners.append(runner)
        port = free_port()
        site = GuardedSite(runner, "127.0.0.1", port, limits)
        await site.start()
        return site, port

    yield start
    for runner in runners:
        await runner.cleanup()


async def answer_of(reader: asyncio.StreamReader) -> tuple[int, dict[str, object], bool]:
    """Read one answer until the server closes: (status, JSON body, closed)."""
    data = await asyncio.wait_for(reader.read(), 10)  # read() returns at EOF only
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body), reader.at_eof()


async def request(port: int, head: bytes, body: bytes = b"") -> tuple[int, dict[str, object]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body)
    await writer.drain()
    line = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(next(h for h in line.split(b"\r\n") if h.lower().startswith(b"content-length:")).split(b":")[1])
    payload = await reader.readexactly(length)
    writer.close()
    return int(line.split(b" ", 2)[1]), json.loads(payload)


def put_head(size: int, extra: bytes = b"") -> bytes:
    return b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: " + str(size).encode() + b"\r\n" + extra + b"\r\n"


async def test_half_headers_are_closed_after_the_timeout_while_others_are_served(guarded: Start) -> None:
    site, port = await guarded(ConnectionLimits(header_timeout=1.0, max_connections=0))
    started = time.monotonic()
    slow = []
    for number in range(200):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PUT /x HTTP/1.1\r\nHost: t\r\nX-Slow: " + str(number).encode())  # never ends the head
        slow.append((reader, writer))
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]  # send nothing at all
    await asyncio.sleep(0.2)
    assert site.stats.open == 220

    # A normal request meanwhile is served.
    assert await request(port, put_head(5), b"hello") == (200, {"status": "success", "size": 5})

    for reader, _writer in [*slow, *idle]:
        status, body, closed = await answer_of(reader)
        assert (status, body["error"], closed) == (408, "client_timeout", True)
    waited = time.monotonic() - started
    assert 1.0 <= waited < 5, waited
    assert site.stats.header_timeouts == 220
    for _ in range(50):
        if site.stats.open == 0:
            break
        await asyncio.sleep(0.05)
    assert site.stats.open == 0
    for _reader, writer in [*slow, *idle]:
        writer.close()


async def test_a_head_split_across_reads_counts_and_a_slow_body_is_not_cut(guarded: Start) -> None:
    """The end of the head may arrive split (CR LF CR | LF); after it, only the body's own timeouts apply."""
    site, port = await guarded(ConnectionLimits(header_timeout=0.5, max_connections=0))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = put_head(6)
    writer.write(head[:-1])
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.write(head[-1:])
    for piece in (b"ab", b"cd", b"ef"):  # the body takes 1.2 s, longer than the header timeout
        await asyncio.sleep(0.4)
        writer.write(piece)
    status, body, _closed = await answer_of_keepalive(reader)
    assert (status, body) == (200, {"status": "success", "size": 6})
    assert site.stats.header_timeouts == 0
    writer.close()


async def answer_of_keepalive(reader: asyncio.StreamReader) -> tuple[int, dict[str, object], bool]:
    line = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(next(h for h in line.split(b"\r\n") if h.lower().startswith(b"content-length:")).split(b":")[1])
    return int(line.split(b" ", 2)[1]), json.loads(await reader.readexactly(length)), False


async def test_connections_beyond_the_cap_are_refused_at_once(guarded: Start) -> None:
    site, port = await guarded(ConnectionLimits(header_timeout=0, max_connections=5))
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
    await asyncio.sleep(0.1)
    refused_at = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    status, body, closed = await answer_of(reader)
    assert (status, body["error"], closed) == (503, "busy", True)
    assert time.monotonic() - refused_at < 1
    assert site.stats.refused == 1 and site.stats.open == 5
    writer.close()

    # The held connections still work, and once one closes a new one is accepted.
    held_reader, held_writer = held[0]
    held_writer.write(put_head(2) + b"ok")
    status, body, _closed = await answer_of_keepalive(held_reader)
    assert (status, body) == (200, {"status": "success", "size": 2})
    held_writer.close()
    for _ in range(50):
        if site.stats.open == 4:
            break
        await asyncio.sleep(0.05)
    assert await request(port, put_head(3), b"abc") == (200, {"status": "success", "size": 3})
    for _reader, other in held[1:]:
        other.close()


async def test_no_limits_means_no_guarding(guarded: Start) -> None:
    site, port = await guarded(ConnectionLimits(header_timeout=0, max_connections=0))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"PUT /x HTTP/1.1\r\nHost: t\r\n")
    await asyncio.sleep(0.5)
    assert not reader.at_eof() and site.stats.header_timeouts == 0 and site.stats.open == 1
    writer.close()


async def test_request_tasks_can_pause_their_own_connection_while_they_wait(guarded: Start) -> None:
    """The guard hands each connection's tasks a handle that pauses its socket (streamproxy.parts.RECEIVING)."""
    from streamproxy.parts import RECEIVING

    seen: list[tuple[object, bool, bool]] = []

    async def handler(request: web.Request) -> web.Response:
        connection = RECEIVING.get()
        assert connection is not None and request.transport is not None
        connection.pause_reading()
        paused = not request.transport.is_reading()
        connection.resume_reading()
        seen.append((connection, paused, request.transport.is_reading()))
        return web.json_response({"status": "success"})

    app = web.Application()
    app.router.add_get("/who", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    try:
        port = free_port()
        await GuardedSite(runner, "127.0.0.1", port, ConnectionLimits(header_timeout=5, max_connections=0)).start()
        for _ in range(2):
            status, _ = await request(port, b"GET /who HTTP/1.1\r\nHost: t\r\n\r\n")
            assert status == 200
    finally:
        await runner.cleanup()
    assert [(paused, resumed) for _, paused, resumed in seen] == [(True, True), (True, True)]
    assert seen[0][0] is not seen[1][0]  # each connection its own
    assert RECEIVING.get() is None  # nothing leaks into the loop's own context
