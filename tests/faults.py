"""A programmable S3 fault injector: a small aiohttp reverse proxy on loopback in front of moto.

streamproxy is pointed at the proxy (``--s3-endpoint-url``); the tests keep talking to moto directly
to arrange and inspect the bucket. Each request is classified into one S3 operation:

=========  ===========================================================
create     ``POST ?uploads``
part       ``PUT ?partNumber&uploadId`` without ``x-amz-copy-source``
copy-part  ``PUT ?partNumber&uploadId`` with ``x-amz-copy-source``
put        ``PUT`` without ``uploadId`` (and not ``?tagging``)
complete   ``POST ?uploadId``
abort      ``DELETE ?uploadId``
delete     ``DELETE`` without ``uploadId``
head       ``HEAD``
tagging    ``PUT ?tagging``
get        any other ``GET`` (objects, listings)
=========  ===========================================================

A ``Fault`` names an operation, an action and how many matching requests it hits:

* ``500`` / ``503``: an S3 XML error (``InternalError`` / ``SlowDown``) after reading the body;
* ``404`` / ``412``: ``NoSuchUpload`` / ``PreconditionFailed``, what S3 answers a retried complete
  or conditional write whose first attempt already succeeded;
* ``reset``: read part of the body (half, at most 64 KiB), then abort the TCP connection;
* ``delay``: wait ``seconds``, then forward;
* ``hang``: read the body, then never answer (until the proxy stops);
* ``stall``: read no body at all and never answer (the sender's writes block);
* ``drop``: forward to moto (the operation takes effect), then abort the connection instead of answering.

Every request and every injected fault is recorded, so a test can assert how many of each happened.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

__all__ = ["OPERATIONS", "Fault", "FaultProxy", "classify"]

OPERATIONS = ("create", "part", "copy-part", "put", "complete", "abort", "delete", "head", "tagging", "get")
ACTIONS = ("500", "503", "404", "412", "reset", "delay", "hang", "stall", "drop")

_ERRORS = {
    "500": ("InternalError", "We encountered an internal error. Please try again."),
    "503": ("SlowDown", "Please reduce your request rate."),
    "404": ("NoSuchUpload", "The specified multipart upload does not exist."),
    "412": ("PreconditionFailed", "At least one of the pre-conditions you specified did not hold"),
}
_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding", "date", "server"}


def classify(method: str, query: dict[str, str] | object, headers: dict[str, str] | object) -> str:
    """Name the S3 operation of a request (see the module docstring for the table)."""
    q = query if isinstance(query, dict) else dict(query)  # type: ignore[call-overload]
    h = {k.lower(): v for k, v in (headers.items() if hasattr(headers, "items") else [])}
    copy = "x-amz-copy-source" in h
    if method == "POST":
        return "create" if "uploads" in q else "complete" if "uploadId" in q else "post"
    if method == "PUT":
        if "uploadId" in q:
            return "copy-part" if copy else "part"
        return "tagging" if "tagging" in q else "put"
    if method == "DELETE":
        return "abort" if "uploadId" in q else "delete"
    if method == "HEAD":
        return "head"
    return "get"


@dataclass
class Fault:
    """Apply ``action`` to requests of ``operation``: skip the first ``after``, then hit ``times`` (None: all).

    With ``rate`` below 1, each candidate request is hit with that probability (seeded, reproducible).
    """

    operation: str
    action: str
    times: int | None = 1
    after: int = 0
    seconds: float = 0.0
    key_contains: str | None = None
    rate: float = 1.0
    seed: int = 0
    seen: int = 0
    hits: int = 0

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS or self.action not in ACTIONS:
            raise ValueError(f"unknown fault {self.operation}/{self.action}")
        self._random = random.Random(self.seed)

    def take(self, operation: str, path: str) -> bool:
        """Count a matching request; return whether this one gets the fault."""
        if operation != self.operation or (self.key_contains and self.key_contains not in path):
            return False
        self.seen += 1
        if self.seen <= self.after or (self.times is not None and self.hits >= self.times):
            return False
        if self.rate < 1.0 and self._random.random() >= self.rate:
            return False
        self.hits += 1
        return True


@dataclass
class FaultProxy:
    """The reverse proxy; ``async with FaultProxy(moto) as proxy`` serves on ``proxy.url``."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    url: str = ""

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopping = asyncio.Event()

    def add(self, operation: str, action: str, **kwargs: object) -> Fault:
        """Program one more fault (see ``Fault``) and return it."""
        fault = Fault(operation, action, **kwargs)  # type: ignore[arg-type]
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        """Forget all programmed faults (the counters stay)."""
        self.faults.clear()

    async def __aenter__(self) -> FaultProxy:
        self._session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=120))
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        listener = socket.socket()
        # A small receive window (inherited by accepted sockets) makes "stall" block the sender
        # for real: with Linux's autotuning a whole 5 MiB part would vanish into kernel buffers.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        site = web.SockSite(self._runner, listener)
        await site.start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _pick(self, operation: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.take(operation, path):
                return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        operation = classify(request.method, dict(request.query), dict(request.headers))
        self.requests[operation] += 1
        fault = self._pick(operation, request.path)
        if fault is not None:
            self.injected[f"{operation}:{fault.action}"] += 1
            if fault.action in _ERRORS:
                await request.read()
                code, message = _ERRORS[fault.action]
                xml = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
                return web.Response(status=int(fault.action), text=xml, content_type="application/xml")
            if fault.action == "reset":
                length = request.content_length or 0
                await request.content.read(min(length // 2, 64 * 1024))
                return self._reset(request)
            if fault.action == "stall":
                await self._stopping.wait()
                return self._reset(request)
            if fault.action == "hang":
                await request.read()
                await self._stopping.wait()
                return self._reset(request)
            if fault.action == "delay":
                await asyncio.sleep(fault.seconds)
        status, headers, body = await self._forward(request)
        if fault is not None and fault.action == "drop":
            return self._reset(request)
        response = web.Response(status=status, body=body if request.method != "HEAD" else None)
        for name, value in headers:
            response.headers.add(name, value)
        return response

    async def _forward(self, request: web.Request) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with self._session.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=body if body else None,
            skip_auto_headers=("Content-Type", "Accept-Encoding", "User-Agent", "Accept"),
            allow_redirects=False,
        ) as upstream:
            data = await upstream.read()
            kept = [(k, v) for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS]
            return upstream.status, kept, data

    @staticmethod
    def _reset(request: web.Request) -> web.Response:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)
