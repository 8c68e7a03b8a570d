"""Run streamproxy apps on loopback in a background thread, for synchronous (hypothesis) tests."""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from streamproxy.app import make_app
from streamproxy.appkeys import SINK
from streamproxy.config import Settings
from streamproxy.sinks import Sink


@dataclass(frozen=True)
class Reply:
    """A response as the tests look at it."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class LiveServer:
    """One app listening on 127.0.0.1:port."""

    port: int
    sink: Sink

    def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None, timeout: float = 20
    ) -> Reply:
        """Send one request on a fresh connection and read the whole answer."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return Reply(response.status, dict(response.getheaders()), response.read())
        finally:
            connection.close()


@contextmanager
def live_servers(configs: Sequence[tuple[Settings, Sink | None]]) -> Iterator[list[LiveServer]]:
    """Start one app per (settings, sink) on a free loopback port; stop them all at exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runners: list[web.AppRunner] = []

    async def start(settings: Settings, sink: Sink | None) -> LiveServer:
        app = make_app(settings, sink)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return LiveServer(port, app[SINK])

    def run(coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, loop)
        return future.result(30)

    try:
        yield [run(start(settings, sink)) for settings, sink in configs]
    finally:

        async def stop() -> None:
            for runner in runners:
                await runner.cleanup()

        run(stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
