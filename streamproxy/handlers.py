"""HTTP in, JSON out: the upload endpoints and the mapping of errors to responses.

This module never imports boto: storage errors arrive as ``streamproxy.errors`` exceptions.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.web_urldispatcher import _default_expect_handler

from .errors import BadRequest, PayloadTooLarge, StreamproxyError, Unavailable, UnsupportedMediaType
from .ingest import MAX_FORM_OVERHEAD, Ingest, Upload, media_type_allowed

__all__ = ["Admission", "error_middleware", "expect_handler", "health", "post_recording", "put_recording"]

log = structlog.get_logger("streamproxy.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

INGEST = web.AppKey("ingest", Ingest)


class Admission:
    """Counts uploads in flight and refuses new ones beyond the limit (503 with Retry-After)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.draining = False

    def check(self) -> None:
        """Raise 503 if a new upload would not be admitted now."""
        if self.draining:
            raise Unavailable("the server is shutting down; retry on another instance", code="draining", retry_after=5)
        if self.in_flight >= self.limit:
            raise Unavailable(f"{self.limit} uploads are already in progress; retry shortly", retry_after=1)

    def __enter__(self) -> Admission:
        self.check()
        self.in_flight += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.in_flight -= 1


ADMISSION = web.AppKey("admission", Admission)


def _json_error(error: StreamproxyError) -> web.Response:
    response = web.json_response(error.to_json(), status=error.status)
    if isinstance(error, Unavailable):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every failure as ``{"status": "failure", "error", "message"}`` JSON, and bind a request id."""
    request_id = request.headers.get("X-Request-ID", "")[:128] or uuid.uuid4().hex
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        try:
            response = await handler(request)
        except StreamproxyError as exc:
            response = _json_error(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
            response = web.json_response({"status": "failure", "error": code, "message": exc.reason}, status=exc.status)
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
        except Exception:
            log.exception("unhandled_error", path=request.path)
            response = web.json_response(
                {"status": "failure", "error": "internal_error", "message": "internal error; nothing was stored"},
                status=500,
            )
        response.headers["X-Request-ID"] = request_id
        return response
    finally:
        structlog.contextvars.unbind_contextvars("request_id")


def _precheck(request: web.Request) -> None:
    """Refuse what the headers alone decide, before a byte of the body is read."""
    request.app[ADMISSION].check()
    ingest = request.app[INGEST]
    multipart = request.content_type.startswith("multipart/")
    limit = ingest.max_upload_bytes + (MAX_FORM_OVERHEAD if multipart else 0)
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(
            f"the request declares {request.content_length} bytes; the limit is {ingest.max_upload_bytes} bytes"
        )


async def expect_handler(request: web.Request) -> web.Response | None:
    """Answer ``Expect: 100-continue`` with the failure instead, when the headers already decide it."""
    try:
        _precheck(request)
    except StreamproxyError as exc:
        return _json_error(exc)
    await _default_expect_handler(request)
    return None


async def health(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def post_recording(request: web.Request) -> web.Response:
    """``POST /recordings``: multipart/form-data, or a raw body with ``?filename=``."""
    ingest = request.app[INGEST]
    if request.content_type == "multipart/form-data":
        return await _run(request, lambda: _multipart(request, ingest))
    filename = request.query.get("filename")
    if request.content_type.startswith("multipart/"):
        raise UnsupportedMediaType(f"{request.content_type} is not accepted; send multipart/form-data")
    if media_type_allowed(request.content_type, ingest.accept_types) or not request.content_type:
        if filename is None:
            raise BadRequest("a raw upload needs ?filename=NAME (or use PUT /recordings/NAME)", code="missing_field")
        return await _run(request, lambda: _raw(request, ingest, filename))
    raise UnsupportedMediaType(
        f"{request.content_type!r} is not accepted: send multipart/form-data or a raw "
        f"{' or '.join(ingest.accept_types)} body"
    )


async def put_recording(request: web.Request) -> web.Response:
    """``PUT /recordings/{filename}``: the body is the recording."""
    ingest = request.app[INGEST]
    if request.content_type.startswith("multipart/"):
        raise UnsupportedMediaType("PUT takes the recording itself as the body, not a multipart form")
    return await _run(request, lambda: _raw(request, ingest, request.match_info["filename"]))


async def _multipart(request: web.Request, ingest: Ingest) -> Upload:
    try:
        reader = await request.multipart()
    except (KeyError, ValueError, AssertionError) as exc:
        raise BadRequest(f"the multipart body is malformed ({exc})", code="malformed_body") from None
    return await ingest.multipart(reader)


async def _raw(request: web.Request, ingest: Ingest, filename: str) -> Upload:
    return await ingest.raw(request.content.readany, filename=filename, content_type=request.content_type or None)


async def _run(request: web.Request, work: Callable[[], Awaitable[Upload]]) -> web.Response:
    _precheck(request)
    started = time.monotonic()
    outcome = "failure"
    upload: Upload | None = None
    error: StreamproxyError | None = None
    try:
        with request.app[ADMISSION]:
            upload = await work()
        outcome = "success"
    except StreamproxyError as exc:
        error = exc
        raise
    finally:
        elapsed = time.monotonic() - started
        size = upload.received.size if upload else None
        log.info(
            "upload",
            outcome=outcome,
            client=request.remote,
            method=request.method,
            key=upload.stored.key if upload else None,
            bytes=size,
            parts=upload.stored.parts if upload else None,
            duration_s=round(elapsed, 3),
            mib_per_s=round(size / elapsed / 2**20, 1) if size and elapsed > 0 else None,
            error=error.code if error else None,
            message=error.message if error else None,
        )
    body: dict[str, object] = {
        "status": "success",
        "url": upload.stored.url,
        "key": upload.stored.key,
        "size": upload.received.size,
        "sha256": upload.received.sha256,
    }
    if upload.stored.bucket is not None:
        body["bucket"] = upload.stored.bucket
    return web.json_response(body)
