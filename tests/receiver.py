"""A webhook receiver on loopback for the notification tests: verifies every signature, records every event.

``status`` is what it answers (tests flip it to play an outage); only deliveries answered 2xx count
as ``received``. A delivery with a bad or missing signature is answered 401 and kept in ``rejected``.
"""

from __future__ import annotations

import asyncio
import json
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
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
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
        self.arrived.set()
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
