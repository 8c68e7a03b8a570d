"""The one S3 interposing proxy of the suite: a loopback aiohttp reverse proxy in front of moto.

streamproxy is pointed at the proxy (``s3_endpoint_url=proxy.url``); the tests keep talking to moto
directly to arrange and inspect the bucket. The proxy does three things, each optional:

* **records** every request as a ``Call`` (``proxy.calls``) and counts them per operation
  (``proxy.requests``), to assert on what streamproxy actually sent: moto stores most request
  headers, but ignores Object Lock on CreateMultipartUpload, for instance;
* **injects faults** (``proxy.add(operation, action)``, see ``Fault``), counted in ``proxy.injected``;
* **imitates** a store that differs from S3 (``proxy.imitate``, see ``Imitation`` and
  docs/storage-compatibility.md): drop a header the store ignores (Ceph 16's ``If-None-Match`` on
  CompleteMultipartUpload) or refuse an operation as the store does (Swift's 501 on a conditional
  PutObject, s3rver's missing UploadPartCopy).

One classifier, ``operation()``, names each request as the S3 API does. Faults and the counters use
the short names of ``SHORT`` (a table over the same classification, not a second classifier):

=========  ==================================  ===========================================================
short      operation                           request
=========  ==================================  ===========================================================
create     CreateMultipartUpload               ``POST ?uploads``
complete   CompleteMultipartUpload             ``POST ?uploadId``
part       UploadPart                          ``PUT ?partNumber&uploadId`` without ``x-amz-copy-source``
copy-part  UploadPartCopy                      ``PUT ?partNumber&uploadId`` with ``x-amz-copy-source``
tagging    PutObjectTagging                    ``PUT ?tagging``
put        PutObject, CopyObject               any other ``PUT`` (without / with ``x-amz-copy-source``)
abort      AbortMultipartUpload                ``DELETE ?uploadId``
delete     DeleteObject                        ``DELETE`` without ``uploadId``
head       HeadObject                          ``HEAD``
get        GetObject                           any ``GET`` (objects, listings)
post       POST                                any other ``POST``
=========  ==================================  ===========================================================

Fault actions:

* ``500`` / ``503``: an S3 XML error (``InternalError`` / ``SlowDown``) after reading the body;
* ``404`` / ``412``: ``NoSuchUpload`` / ``PreconditionFailed``, what S3 answers a retried complete
  or conditional write whose first attempt already succeeded;
* ``reset``: read part of the body (half, at most 64 KiB), then abort the TCP connection;
* ``delay``: wait ``seconds``, then forward;
* ``hang``: read the body, then never answer (until the proxy stops);
* ``stall``: read no body at all and never answer (the sender's writes block);
* ``drop``: forward to moto (the operation takes effect), then abort the connection instead of answering.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

__all__ = ["OPERATIONS", "SHORT", "Call", "Fault", "Imitation", "S3Proxy", "operation"]

SHORT = {
    "CreateMultipartUpload": "create",
    "CompleteMultipartUpload": "complete",
    "UploadPart": "part",
    "UploadPartCopy": "copy-part",
    "PutObjectTagging": "tagging",
    "PutObject": "put",
    "CopyObject": "put",
    "AbortMultipartUpload": "abort",
    "DeleteObject": "delete",
    "HeadObject": "head",
    "GetObject": "get",
    "POST": "post",
}
OPERATIONS = ("create", "part", "copy-part", "put", "complete", "abort", "delete", "head", "tagging", "get")
ACTIONS = ("500", "503", "404", "412", "reset", "delay", "hang", "stall", "drop")

_ERRORS = {
    "500": ("InternalError", "We encountered an internal error. Please try again."),
    "503": ("SlowDown", "Please reduce your request rate."),
    "404": ("NoSuchUpload", "The specified multipart upload does not exist."),
    "412": ("PreconditionFailed", "At least one of the pre-conditions you specified did not hold"),
}
# Not recorded (they describe the hop, not the S3 request) and not forwarded (aiohttp sets its own).
_HOP = {"host", "content-length", "expect", "transfer-encoding", "connection", "keep-alive"}
# Also not copied from moto's answer: aiohttp writes its own date/server, and the body is passed as is.
_ANSWER_HOP = _HOP | {"content-encoding", "date", "server"}


def operation(method: str, query: Mapping[str, object], headers: Mapping[str, str]) -> str:
    """Name the S3 operation of a request (see the module docstring for the table)."""
    copy = "x-amz-copy-source" in headers
    if method == "POST":
        return (
            "CreateMultipartUpload"
            if "uploads" in query
            else "CompleteMultipartUpload"
            if "uploadId" in query
            else "POST"
        )
    if method == "PUT":
        if "uploadId" in query:
            return "UploadPartCopy" if copy else "UploadPart"
        if "tagging" in query:
            return "PutObjectTagging"
        return "CopyObject" if copy else "PutObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    return "HeadObject" if method == "HEAD" else "GetObject"


@dataclass(frozen=True)
class Call:
    """One S3 request as it arrived (headers lower-cased, without the hop-by-hop ones)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]

    @property
    def operation(self) -> str:
        """The S3 operation, named as in the API."""
        return operation(self.method, self.query, self.headers)

    @property
    def key(self) -> str:
        """The object key (path-style addressing: /bucket/key)."""
        return self.path.split("/", 2)[2] if self.path.count("/") >= 2 else ""


@dataclass
class Fault:
    """Apply ``action`` to requests of ``operation`` (a short name): skip the first ``after``, then hit
    ``times`` (None: all).

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

    def take(self, short: str, path: str) -> bool:
        """Count a matching request; return whether this one gets the fault."""
        if short != self.operation or (self.key_contains and self.key_contains not in path):
            return False
        self.seen += 1
        if self.seen <= self.after or (self.times is not None and self.hits >= self.times):
            return False
        if self.rate < 1.0 and self._random.random() >= self.rate:
            return False
        self.hits += 1
        return True


@dataclass(frozen=True)
class Imitation:
    """How an imitated store treats one operation (optionally only requests carrying ``when_header``)."""

    operation: str  # named as in the API
    ignore_header: str | None = None  # dropped before moto sees it: the store ignores it
    refuse: tuple[int, str] | None = None  # (status, S3 error code) answered instead of forwarding
    when_header: str | None = None

    def applies(self, call: Call) -> bool:
        return call.operation == self.operation and (self.when_header is None or self.when_header in call.headers)


@dataclass
class S3Proxy:
    """The reverse proxy; ``async with S3Proxy(moto) as proxy`` serves on ``proxy.url``."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    imitate: list[Imitation] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)  # per short name
    injected: Counter[str] = field(default_factory=Counter)  # "short:action"
    url: str = ""

    def __post_init__(self) -> None:
        self.upstream = self.upstream.rstrip("/")
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

    def final_writes(self, key: str) -> list[Call]:
        """The requests that create ``key`` with its attributes (PutObject or CreateMultipartUpload)."""
        return [c for c in self.calls if c.key == key and c.operation in ("PutObject", "CreateMultipartUpload")]

    async def __aenter__(self) -> S3Proxy:
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

    def _pick(self, short: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.take(short, path):
                return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        call = Call(
            request.method,
            request.path,
            parse_qs(request.query_string, keep_blank_values=True),
            {k.lower(): v for k, v in headers.items()},
        )
        self.calls.append(call)
        short = SHORT[call.operation]
        self.requests[short] += 1
        fault = self._pick(short, request.path)
        if fault is not None:
            self.injected[f"{short}:{fault.action}"] += 1
            if fault.action in _ERRORS:
                await request.read()
                code, message = _ERRORS[fault.action]
                return self._error(int(fault.action), code, message)
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
        for imitation in self.imitate:
            if not imitation.applies(call):
                continue
            if imitation.refuse is not None:
                await request.read()
                status, code = imitation.refuse
                return self._error(status, code, f"imitated {code}")
            if imitation.ignore_header is not None:
                headers = {k: v for k, v in headers.items() if k.lower() != imitation.ignore_header}
        status, answer, body = await self._forward(request, headers)
        if fault is not None and fault.action == "drop":
            return self._reset(request)
        response = web.Response(status=status, body=body if request.method != "HEAD" else None)
        for name, value in answer:
            response.headers.add(name, value)
        return response

    async def _forward(self, request: web.Request, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self._session is not None
        body = await request.read()
        async with self._session.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=body if body else None,
            skip_auto_headers=("Content-Type", "Accept-Encoding", "User-Agent", "Accept"),
            allow_redirects=False,
        ) as upstream:
            data = await upstream.read()
            kept = [(k, v) for k, v in upstream.headers.items() if k.lower() not in _ANSWER_HOP]
            return upstream.status, kept, data

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        xml = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        return web.Response(status=status, text=xml, content_type="application/xml")

    @staticmethod
    def _reset(request: web.Request) -> web.Response:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)
