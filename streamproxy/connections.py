"""What aiohttp does not bound per connection: the time to send the request head, and how many are open.

aiohttp parses the request line and headers inside its protocol and calls no application code until
they are complete, so no handler or middleware can time out a client that sends half a header and
then trickles or stops: such a connection stayed open until aiohttp's keep-alive timer (an hour by
default). A few thousand of them exhaust file descriptors and hold parser buffers.

``ConnectionGuard`` is the protocol factory the listening socket uses instead of aiohttp's: each
connection gets a thin protocol in front of aiohttp's that

- refuses a connection beyond ``max_connections`` at once with a canned ``503 busy`` (no parser, no
  task, no request object is made for it) and closes it;
- closes a connection whose first request line and headers have not all arrived within
  ``header_timeout`` of its start, after a canned ``408 client_timeout``. The end of the head is the
  first empty line (CRLF CRLF), found by scanning only the bytes before it.

Later requests on a kept-alive connection are bounded by aiohttp's keep-alive timer instead, which
closes a connection whose next request has not arrived complete when it fires (``keepalive_timeout``
of the runner). Everything else, bodies included, passes through untouched: the body's own timeouts
(``--read-timeout``, ``--max-upload-seconds``) live in ingest.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from aiohttp import web

from .parts import RECEIVING

__all__ = ["READ_BUFSIZE", "ConnectionGuard", "ConnectionLimits", "ConnectionStats", "GuardedSite"]

# aiohttp's per-connection body buffer (``read_bufsize``): its StreamReader pauses the socket once it
# holds twice this. aiohttp's default (256 KiB) lets every upload waiting for a part buffer keep up
# to 512 KiB plus one socket read (up to 256 KiB) outside the part budget.
READ_BUFSIZE = 2**18

_HEAD_END = b"\r\n\r\n"
# After a canned answer, how long the client's further bytes are read and dropped before the close:
# closing a socket with unread bytes sends a reset, which can destroy the answer in the client's
# buffer before it is read (the "lingering close" of nginx and Apache).
_LINGER = 2.0


def _canned(status: str, error: str, message: str, retry_after: int | None = None) -> bytes:
    """Build a complete HTTP/1.1 answer in the failure shape of every other answer, closing the connection."""
    body = json.dumps({"status": "failure", "error": error, "message": message}).encode()
    head = [f"HTTP/1.1 {status}", "Content-Type: application/json", f"Content-Length: {len(body)}", "Connection: close"]
    if retry_after is not None:
        head.append(f"Retry-After: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


_BUSY = _canned(
    "503 Service Unavailable", "busy", "too many open connections (--max-connections); retry shortly", retry_after=1
)
_HEADER_TIMEOUT = _canned(
    "408 Request Timeout", "client_timeout", "the request line and headers did not arrive within --header-timeout"
)


@dataclass(frozen=True)
class ConnectionLimits:
    """``header_timeout`` in seconds (0: none); ``max_connections`` open at once (0: no cap)."""

    header_timeout: float
    max_connections: int


@dataclass
class ConnectionStats:
    """What the guard has done, read by the metrics at scrape time."""

    open: int = 0
    refused: int = 0
    header_timeouts: int = 0


@dataclass
class ConnectionGuard:
    """The protocol factory for the listening socket: wraps each protocol ``factory`` makes."""

    factory: Callable[[], asyncio.BaseProtocol]
    limits: ConnectionLimits
    stats: ConnectionStats = field(default_factory=ConnectionStats)

    def __call__(self) -> asyncio.Protocol:
        """Make the protocol of one new connection (aiohttp's is made only if it is accepted)."""
        return _GuardedConnection(self)


class _GuardedConnection(asyncio.Protocol):
    """One connection: counts it, refuses it over the cap, and closes it if its head is late."""

    __slots__ = ("_counted", "_guard", "_inner", "_lingering", "_paused", "_tail", "_timer", "_transport")

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self._counted = False
        self._lingering = False
        self._paused = False  # reading paused by pause_reading() below (not by aiohttp's flow control)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not isinstance: uvloop's transports implement the interface without subclassing it.
        transport = cast(asyncio.Transport, transport)
        guard = self._guard
        limits = guard.limits
        if limits.max_connections and guard.stats.open >= limits.max_connections:
            # Refused before aiohttp sees it: one write and a close, nothing else is allocated.
            guard.stats.refused += 1
            self._answer_and_close(transport, _BUSY)
            return
        guard.stats.open += 1
        self._counted = True
        self._transport = transport
        if limits.header_timeout > 0:
            self._timer = asyncio.get_running_loop().call_later(limits.header_timeout, self._head_late)
        inner = cast(asyncio.Protocol, guard.factory())
        self._inner = inner
        # aiohttp starts the connection's task here; the task (and each request's) inherits this,
        # so an upload waiting for a part buffer can pause its own connection (streamproxy.parts).
        token = RECEIVING.set(self)
        try:
            inner.connection_made(transport)
        finally:
            RECEIVING.reset(token)

    def data_received(self, data: bytes) -> None:
        if self._inner is None or self._lingering:
            return  # answered already: whatever the client still sends is dropped
        if self._timer is not None:
            # Only reads up to the end of the first head are scanned; the kept tail finds a
            # CRLF CRLF split across two reads.
            window = self._tail + data if self._tail else data
            if _HEAD_END in window:
                self._timer.cancel()
                self._timer = None
                self._tail = b""
            else:
                self._tail = window[-(len(_HEAD_END) - 1) :]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is None or self._lingering:
            return None  # the transport closes
        return self._inner.eof_received()

    def pause_reading(self) -> None:
        """Stop reading the socket while this connection's upload waits for a part buffer (streamproxy.parts).

        The transport alone, and only if it is reading: aiohttp's own pause also pauses its HTTP
        parser, and aiohttp may have paused the transport itself (its buffer full), which only it
        may undo.
        """
        transport = self._transport
        if transport is not None and not transport.is_closing() and transport.is_reading():
            transport.pause_reading()
            self._paused = True

    def resume_reading(self) -> None:
        """Undo pause_reading()."""
        transport = self._transport
        if self._paused:
            self._paused = False
            if transport is not None and not transport.is_closing():
                transport.resume_reading()

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._counted:
            self._counted = False
            self._guard.stats.open -= 1
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def _head_late(self) -> None:
        self._timer = None
        self._guard.stats.header_timeouts += 1
        transport = self._transport
        if transport is not None and not transport.is_closing():
            # aiohttp's protocol sees no more data and learns of the close in connection_lost.
            self._answer_and_close(transport, _HEADER_TIMEOUT)

    def _answer_and_close(self, transport: asyncio.Transport, answer: bytes) -> None:
        """Send a canned answer and end the connection without a reset that could destroy it."""
        self._lingering = True
        transport.write(answer)
        if transport.can_write_eof():
            transport.write_eof()  # FIN after the answer; the client's own close or the linger ends it
            asyncio.get_running_loop().call_later(_LINGER, transport.close)
        else:
            transport.close()  # TLS: close_notify after the answer


class GuardedSite(web.BaseSite):
    """A TCP site like aiohttp's ``TCPSite`` whose connections pass through a ``ConnectionGuard``."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        limits: ConnectionLimits,
        *,
        stats: ConnectionStats | None = None,
        ssl_context: object | None = None,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)  # type: ignore[arg-type]
        self._host = host
        self._port = port
        self._limits = limits
        self.stats = stats if stats is not None else ConnectionStats()

    @property
    def name(self) -> str:
        """The URL the site listens on."""
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        """Listen; every accepted connection goes through the guard to aiohttp's protocol."""
        await super().start()
        server = self._runner.server
        assert server is not None
        guard = ConnectionGuard(server, self._limits, self.stats)
        self._server = await asyncio.get_running_loop().create_server(
            guard,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=True,
            family=socket.AF_UNSPEC,
        )
