"""A webhook receiver on loopback for the notification tests: verifies every signature, records every event.

``status`` is what it answers (tests flip it to play an outage); only deliveries answered 2xx count
as ``received``. A delivery with a bad or missing signature is answered 401 and kept in ``rejected``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from streamproxy.notify.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, verify


@dataclass
class Delivery:
    """One POST as the receiver saw it."""

    event: dict[str, Any]
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """The state of a receiver app: answer ``status``; keep what arrived."""

    secret: str
    status: int = 200
    delay: float = 0.0
    received: list[Delivery] = field(default_factory=list)
    refused: int = 0
    rejected: list[Delivery] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        delivery = Delivery(json.loads(body), headers, body, time.time())
        self.attempts[delivery.event.get("id", "")] += 1
        if not verify(self.secret, request.headers.get(SIGNATURE_HEADER, ""), body):
            self.rejected.append(delivery)
            return web.Response(status=401, text="bad signature")
        if request.headers.get(DELIVERY_HEADER) != delivery.event["id"]:
            self.rejected.append(delivery)
            return web.Response(status=400, text="delivery header does not match the event id")
        if request.headers.get(EVENT_HEADER) != delivery.event["event"]:
            self.rejected.append(delivery)
            return web.Response(status=400, text="event header does not match the event")
        if self.delay:
            await asyncio.sleep(self.delay)
        if not 200 <= self.status < 300:
            self.refused += 1
            return web.Response(status=self.status, text="not now")
        self.received.append(delivery)
        return web.Response(status=204)

    def ids(self) -> list[str]:
        return [d.event["id"] for d in self.received]

    async def wait_for(self, count: int, within: float = 20.0) -> None:
        """Until ``count`` deliveries were accepted (``AssertionError`` after ``within`` seconds)."""
        deadline = time.monotonic() + within
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.received)} of {count} events arrived within {within} s")
            await asyncio.sleep(0.02)


class ThreadedReceiver(Receiver):
    """A ``Receiver`` served from its own thread and event loop, for tests that block (subprocesses, CLI).

    Use as a context manager; ``url`` is set once it listens on loopback.
    """

    def __enter__(self) -> ThreadedReceiver:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def start() -> None:
            self._runner = web.AppRunner(self.app(), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}/hook"

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="receiver", daemon=True)
        self._thread.start()
        assert ready.wait(10), "the receiver did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def wait_blocking(self, count: int, within: float = 30.0) -> None:
        """Like ``wait_for``, for code outside an event loop."""
        deadline = time.monotonic() + within
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.received)} of {count} events arrived within {within} s")
            time.sleep(0.02)
