"""A loopback proxy in front of moto that records every S3 request, to assert on what reached S3.

moto stores most request headers (encryption, storage class, tags, object lock on PutObject), but
ignores Object Lock on CreateMultipartUpload; the recorder shows what streamproxy actually sent.

``imitate`` makes moto behave like a store that differs from S3 (docs/storage-compatibility.md):
an ``Imitation`` drops a header the store ignores (Ceph 16's ``If-None-Match`` on
CompleteMultipartUpload) or refuses an operation as the store does (Swift's 501 on a conditional
PutObject, s3rver's missing UploadPartCopy).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

_DROP = {"host", "content-length", "expect", "transfer-encoding"}


@dataclass(frozen=True)
class Call:
    """One S3 request as it arrived."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]

    @property
    def operation(self) -> str:
        """The S3 operation, named as in the API."""
        q, m = self.query, self.method
        if m == "POST" and "uploads" in q:
            return "CreateMultipartUpload"
        if m == "POST" and "uploadId" in q:
            return "CompleteMultipartUpload"
        if m == "PUT" and "partNumber" in q:
            return "UploadPartCopy" if "x-amz-copy-source" in self.headers else "UploadPart"
        if m == "PUT" and "tagging" in q:
            return "PutObjectTagging"
        if m == "PUT":
            return "CopyObject" if "x-amz-copy-source" in self.headers else "PutObject"
        if m == "DELETE" and "uploadId" in q:
            return "AbortMultipartUpload"
        return {"DELETE": "DeleteObject", "HEAD": "HeadObject", "GET": "GetObject"}.get(m, m)

    @property
    def key(self) -> str:
        """The object key (path-style addressing: /bucket/key)."""
        return self.path.split("/", 2)[2] if self.path.count("/") >= 2 else ""


@dataclass(frozen=True)
class Imitation:
    """How the imitated store treats one operation (optionally only requests carrying ``when_header``)."""

    operation: str
    ignore_header: str | None = None  # dropped before moto sees it: the store ignores it
    refuse: tuple[int, str] | None = None  # (status, S3 error code) answered instead of forwarding
    when_header: str | None = None

    def applies(self, call: Call) -> bool:
        return call.operation == self.operation and (self.when_header is None or self.when_header in call.headers)


class S3Recorder:
    """Forward requests to ``upstream`` and keep a list of them."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.calls: list[Call] = []
        self.imitate: list[Imitation] = []
        self.endpoint = ""  # where the proxy listens, once started
        self._session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        """The proxy application."""
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
        call = Call(
            request.method,
            request.path,
            parse_qs(request.query_string, keep_blank_values=True),
            {k.lower(): v for k, v in headers.items()},
        )
        self.calls.append(call)
        for imitation in self.imitate:
            if not imitation.applies(call):
                continue
            if imitation.refuse is not None:
                status, code = imitation.refuse
                error = f"<Error><Code>{code}</Code><Message>imitated {code}</Message></Error>"
                return web.Response(status=status, body=error.encode(), content_type="application/xml")
            if imitation.ignore_header is not None:
                headers = {k: v for k, v in headers.items() if k.lower() != imitation.ignore_header}
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body, allow_redirects=False
        ) as upstream:
            data = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP}
            return web.Response(status=upstream.status, headers=out, body=data)

    def final_writes(self, key: str) -> list[Call]:
        """The requests that create ``key`` with its attributes (PutObject or CreateMultipartUpload)."""
        return [c for c in self.calls if c.key == key and c.operation in ("PutObject", "CreateMultipartUpload")]
