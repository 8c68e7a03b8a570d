"""HTTP in, JSON out: the upload endpoints and the mapping of errors to responses.

This module never imports boto: storage errors arrive as ``streamproxy.errors`` exceptions.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute, _default_expect_handler

from .auth import check_request, client_address
from .errors import BadRequest, PayloadTooLarge, StreamproxyError, Unauthorized, Unavailable, UnsupportedMediaType
from .formdata import FormReader, MalformedForm, boundary_of, next_chunk
from .ingest import MAX_FORM_OVERHEAD, Ingest, Upload, media_type_allowed
from .lifecycle import ADMISSION
from .manifest import RequestInfo, write_manifest
from .metrics import CURRENT_UPLOAD, METRICS, UploadStats
from .notify.delivery import Notifier
from .notify.event import recording_stored

__all__ = [
    "ROUTE_INGESTS",
    "ROUTE_NOTIFIERS",
    "RouteIngests",
    "RouteNotifiers",
    "error_middleware",
    "expect_handler",
    "guard_middleware",
    "ingest_for",
    "health",
    "post_recording",
    "put_recording",
]

log = structlog.get_logger("streamproxy.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

INGEST = web.AppKey("ingest", Ingest)


class RouteIngests:
    """The ingest of each upload route that is not the default one (``--config`` routes)."""

    def __init__(self) -> None:
        self._by_route: dict[AbstractRoute, Ingest] = {}

    def add(self, route: AbstractRoute, ingest: Ingest) -> None:
        """Serve ``route`` with ``ingest`` (its storage, key template, options)."""
        self._by_route[route] = ingest

    def get(self, route: AbstractRoute) -> Ingest | None:
        """Return the ingest of ``route``, if it has its own."""
        return self._by_route.get(route)


ROUTE_INGESTS = web.AppKey("route_ingests", RouteIngests)


class RouteNotifiers:
    """The notifier and targets of each upload route that sends ``recording.stored`` events, by its ingest."""

    def __init__(self) -> None:
        self._by_ingest: dict[Ingest, tuple[Notifier, tuple[str, ...]]] = {}

    def add(self, ingest: Ingest, notifier: Notifier, targets: tuple[str, ...]) -> None:
        """Send an event to ``targets`` through ``notifier`` for every upload ``ingest`` stores."""
        self._by_ingest[ingest] = (notifier, targets)

    def get(self, ingest: Ingest) -> tuple[Notifier, tuple[str, ...]] | None:
        """Return the notifier and targets of the route that ``ingest`` serves, if it has targets."""
        return self._by_ingest.get(ingest)


ROUTE_NOTIFIERS = web.AppKey("route_notifiers", RouteNotifiers)


def ingest_for(request: web.Request) -> Ingest:
    """Return the ingest that serves the matched route: its own, else the default route's."""
    routes = request.app.get(ROUTE_INGESTS)
    own = routes.get(request.match_info.route) if routes is not None else None
    return own if own is not None else request.app[INGEST]


def _json_error(error: StreamproxyError) -> web.Response:
    response = web.json_response(error.to_json(), status=error.status)
    if isinstance(error, Unavailable):
        response.headers["Retry-After"] = str(error.retry_after)
        if error.code in ("draining", "shutdown"):
            response.force_close()  # Connection: close, so the client's next request finds another instance
    if isinstance(error, Unauthorized):
        for challenge in error.challenges:
            response.headers.add("WWW-Authenticate", challenge)
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
        except ConnectionError:
            # The client is gone. Answering anyway lets aiohttp drop the connection quietly;
            # raising would make it log the lost connection as a server error with a traceback.
            response = web.json_response(
                {"status": "failure", "error": "client_disconnected", "message": "the client closed the connection"},
                status=400,
            )
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


def _report(
    request: web.Request,
    *,
    outcome: str,
    error: StreamproxyError | None,
    started: float,
    stats: UploadStats,
    upload: Upload | None = None,
    cancelled: str = "",
) -> None:
    """Write the one log line of an upload request and count it."""
    elapsed = time.monotonic() - started
    size = upload.received.size if upload else stats.bytes  # what the client sent
    code = error.code if error else cancelled
    emit = log.warning if error is not None and error.status >= 500 else log.info
    emit(
        "upload",
        outcome=outcome,
        client=client_address(request),
        method=request.method,
        key=upload.stored.key if upload else stats.key,
        bytes=size,
        parts=upload.stored.parts if upload else stats.parts,
        retries=stats.retries,
        duration_s=round(elapsed, 3),
        mib_per_s=round(size / elapsed / 2**20, 2) if size and elapsed > 0 else None,
        error=code or None,
        storage_code=getattr(error, "storage_code", None),
        message=error.message if error else None,
    )
    metrics = request.app.get(METRICS)
    if metrics is not None:
        metrics.record_upload(outcome, code, elapsed, size if upload else None)


def _precheck(request: web.Request) -> None:
    """Refuse what the headers alone decide, before a byte of the body is read."""
    request.app[ADMISSION].check()
    ingest = ingest_for(request)
    multipart = request.content_type.startswith("multipart/")
    limit = ingest.max_upload_bytes + (MAX_FORM_OVERHEAD if multipart else 0)
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(
            f"the request declares {request.content_length} bytes; the limit is {ingest.max_upload_bytes} bytes"
        )


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse requests the route's guard rejects (403, 401) before the handler reads the body; log them."""
    try:
        check_request(request)
    except StreamproxyError as exc:
        _report(request, outcome="failure", error=exc, started=time.monotonic(), stats=UploadStats())
        raise
    return await handler(request)


async def expect_handler(request: web.Request) -> web.Response | None:
    """Answer ``Expect: 100-continue`` with the failure instead, when the headers already decide it."""
    try:
        check_request(request)  # the middlewares have not run yet
        _precheck(request)
    except StreamproxyError as exc:
        _report(request, outcome="failure", error=exc, started=time.monotonic(), stats=UploadStats())
        return _json_error(exc)
    await _default_expect_handler(request)
    return None


async def health(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def post_recording(request: web.Request) -> web.Response:
    """``POST /recordings``: multipart/form-data, or a raw body with ``?filename=``."""
    return await _run(request, lambda: _post(request, ingest_for(request)))


async def _post(request: web.Request, ingest: Ingest) -> Upload:
    if request.content_type == "multipart/form-data":
        return await _multipart(request, ingest)
    filename = request.query.get("filename")
    if request.content_type.startswith("multipart/"):
        raise UnsupportedMediaType(f"{request.content_type} is not accepted; send multipart/form-data")
    if media_type_allowed(request.content_type, ingest.accept_types) or not request.content_type:
        if filename is None:
            raise BadRequest("a raw upload needs ?filename=NAME (or use PUT /recordings/NAME)", code="missing_field")
        return await _raw(request, ingest, filename)
    raise UnsupportedMediaType(
        f"{request.content_type!r} is not accepted: send multipart/form-data or a raw "
        f"{' or '.join(ingest.accept_types)} body"
    )


async def put_recording(request: web.Request) -> web.Response:
    """``PUT /recordings/{filename}``: the body is the recording."""
    return await _run(request, lambda: _put(request, ingest_for(request)))


async def _put(request: web.Request, ingest: Ingest) -> Upload:
    if request.content_type.startswith("multipart/"):
        raise UnsupportedMediaType("PUT takes the recording itself as the body, not a multipart form")
    return await _raw(request, ingest, request.match_info["filename"])


async def _multipart(request: web.Request, ingest: Ingest) -> Upload:
    try:
        reader = FormReader(request.content, boundary_of(request.headers.get("Content-Type", "")))
    except MalformedForm as exc:
        raise BadRequest(f"the multipart body is malformed ({exc})", code="malformed_body") from None
    return await ingest.multipart(reader)


async def _raw(request: web.Request, ingest: Ingest, filename: str) -> Upload:
    # One received chunk at a time, uncopied (readany() joins whatever is buffered).
    return await ingest.raw(
        lambda: next_chunk(request.content), filename=filename, content_type=request.content_type or None
    )


async def _run(request: web.Request, work: Callable[[], Awaitable[Upload]]) -> web.Response:
    started = time.monotonic()
    stats = UploadStats()
    token = CURRENT_UPLOAD.set(stats)
    received_at = datetime.now(UTC)
    outcome = "failure"
    cancelled = ""
    upload: Upload | None = None
    error: StreamproxyError | None = None
    admission = request.app[ADMISSION]
    ingest = ingest_for(request)
    manifest: str | None = None
    body: dict[str, Any] = {}
    try:
        _precheck(request)
        with admission:
            upload = await work()
            stored_at = datetime.now(UTC)
            if ingest.manifest:
                manifest = await write_manifest(ingest, upload, _request_info(request, received_at))
            body = _answer(upload, manifest if ingest.manifest else _NO_MANIFEST)
            notify = request.app[ROUTE_NOTIFIERS].get(ingest) if ROUTE_NOTIFIERS in request.app else None
            if notify is not None:
                # Into the outbox before the answer, still inside admission so the drain waits for it.
                # A failed outbox write is logged and counted there; the recording is stored either way.
                info = _request_info(request, received_at)
                await notify[0].record(_event(body, upload, info, stored_at), notify[1])
        outcome = "success"
    except StreamproxyError as exc:
        error = exc
        raise
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or not admission.stopped_by_shutdown(task):
            outcome, cancelled = "cancelled", "cancelled"
            raise
        # The drain deadline cancelled this upload; its writer is aborted. Tell the client to retry.
        task.uncancel()
        error = Unavailable(
            "the server shut down before the upload finished; nothing was stored", code="shutdown", retry_after=5
        )
        raise error from None
    except ConnectionError:
        outcome, cancelled = "cancelled", "client_disconnected"
        raise
    finally:
        CURRENT_UPLOAD.reset(token)
        _report(request, outcome=outcome, error=error, started=started, stats=stats, upload=upload, cancelled=cancelled)
    return web.json_response(body)


_NO_MANIFEST = object()  # the route writes no manifests: the answer has no "manifest" key


def _answer(upload: Upload, manifest: str | object | None) -> dict[str, Any]:
    """Build the success answer's body."""
    body: dict[str, Any] = {
        "status": "success",
        "url": upload.stored.url,
        "key": upload.stored.key,
        "size": upload.size,
        "sha256": upload.sha256,
        "checksum": upload.stored.checksum.as_json() if upload.stored.checksum is not None else None,
    }
    if upload.changed:  # the stored bytes are not the received ones: say what arrived too
        body["received"] = upload.received.to_json()
    body["audio"] = upload.audio_json
    if upload.stored.bucket is not None:
        body["bucket"] = upload.stored.bucket
    if manifest is not _NO_MANIFEST:
        body["manifest"] = manifest
    return body


def _event(body: dict[str, Any], upload: Upload, info: RequestInfo, stored_at: datetime) -> dict[str, Any]:
    """Build the ``recording.stored`` event of an answered upload (``url`` exactly as answered)."""
    return recording_stored(
        key=body["key"],
        url=body["url"],
        bucket=body.get("bucket"),
        size=body["size"],
        sha256=body["sha256"],
        checksum=body.get("checksum"),  # the store-verified checksum, where the answer reports one
        audio=body["audio"],
        fields=upload.fields,
        content_type=upload.content_type,
        client_address=info.client,
        request_id=info.request_id,
        received_at=info.received_at,
        stored_at=stored_at,
        manifest=body.get("manifest"),
    )


def _request_info(request: web.Request, received_at: datetime) -> RequestInfo:
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    return RequestInfo(
        client=client_address(request),
        user_agent=request.headers.get("User-Agent"),
        request_id=str(request_id) if request_id else None,
        received_at=received_at,
    )
