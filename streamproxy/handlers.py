"""HTTP in, JSON out: the upload routes, their guard middleware, and the mapping of errors to responses.

Each upload path is one ``UploadRoute``: its ingest (storage, key template, options), its guard,
its manifests and its notifier, with the POST, PUT and ``Expect: 100-continue`` handlers as its
methods. ``make_app`` adds them to the application in order, the default route (``/recordings``)
first; ``UploadRoutes`` (the app key ``UPLOAD_ROUTES``) finds the one a request matched, so the
guard middleware can refuse a request before its body is read.

This module never imports boto: storage errors arrive as ``streamproxy.errors`` exceptions.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute, _default_expect_handler

from .appkeys import ADMISSION, METRICS, UPLOAD_ROUTES
from .auth import Guard
from .errors import BadRequest, PayloadTooLarge, StreamproxyError, Unauthorized, Unavailable, UnsupportedMediaType
from .ingest import MAX_FORM_OVERHEAD, Ingest, Upload, media_type_allowed
from .manifest import Manifests, RequestInfo
from .metrics import CURRENT_UPLOAD, UploadStats
from .notify.delivery import Notifier
from .notify.event import recording_stored

__all__ = ["UploadRoute", "UploadRoutes", "error_middleware", "guard_middleware", "health"]

log = structlog.get_logger("streamproxy.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class UploadRoutes:
    """The upload routes of the application, in the order they were added (the default one first)."""

    def __init__(self) -> None:
        self._by_route: dict[AbstractRoute, UploadRoute] = {}
        self._routes: list[UploadRoute] = []

    def add(self, app: web.Application, route: UploadRoute) -> None:
        """Serve ``POST route.path`` and ``PUT route.path/{filename}`` with ``route``."""
        self._routes.append(route)
        for added in (
            app.router.add_post(route.path, route.post, expect_handler=route.expect),
            app.router.add_put(route.path + "/{filename}", route.put, expect_handler=route.expect),
        ):
            self._by_route[added] = route

    def of(self, request: web.Request) -> UploadRoute | None:
        """Return the upload route ``request`` matched, if it matched one (the probes are not)."""
        return self._by_route.get(request.match_info.route)

    def __iter__(self) -> Iterator[UploadRoute]:
        return iter(self._routes)


@dataclass(frozen=True, eq=False)
class UploadRoute:
    """One upload path: what stores its uploads, who may use it, and what follows a stored upload."""

    path: str
    ingest: Ingest
    guard: Guard
    manifests: Manifests | None = None  # None: the route writes no manifests, the answer has no "manifest"
    notifier: Notifier | None = None  # sends ``recording.stored`` to ``notify_targets``
    notify_targets: tuple[str, ...] = ()

    async def post(self, request: web.Request) -> web.Response:
        """``POST {path}``: multipart/form-data, or a raw body with ``?filename=``."""
        return await self._run(request, lambda: self._post(request))

    async def put(self, request: web.Request) -> web.Response:
        """``PUT {path}/{filename}``: the body is the recording."""
        return await self._run(request, lambda: self._put(request))

    async def expect(self, request: web.Request) -> web.Response | None:
        """Answer ``Expect: 100-continue`` with the failure instead, when the headers already decide it."""
        try:
            self.guard.check(request)  # the middlewares have not run yet
            self._precheck(request)
        except StreamproxyError as exc:
            _report(request, self.guard, _Attempt(error=exc))
            return _json_error(exc)
        await _default_expect_handler(request)
        return None

    def _precheck(self, request: web.Request) -> None:
        """Refuse what the headers alone decide, before a byte of the body is read."""
        request.app[ADMISSION].check()
        limit = self.ingest.max_upload_bytes
        if request.content_type.startswith("multipart/"):
            limit += MAX_FORM_OVERHEAD
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(
                f"the request declares {request.content_length} bytes; "
                f"the limit is {self.ingest.max_upload_bytes} bytes"
            )

    async def _post(self, request: web.Request) -> Upload:
        ingest = self.ingest
        if request.content_type == "multipart/form-data":
            try:
                reader = await request.multipart()
            except (KeyError, ValueError, AssertionError) as exc:
                raise BadRequest(f"the multipart body is malformed ({exc})", code="malformed_body") from None
            return await ingest.multipart(reader)
        filename = request.query.get("filename")
        if request.content_type.startswith("multipart/"):
            raise UnsupportedMediaType(f"{request.content_type} is not accepted; send multipart/form-data")
        if media_type_allowed(request.content_type, ingest.accept_types) or not request.content_type:
            if filename is None:
                raise BadRequest(
                    "a raw upload needs ?filename=NAME (or use PUT /recordings/NAME)", code="missing_field"
                )
            return await self._raw(request, filename)
        raise UnsupportedMediaType(
            f"{request.content_type!r} is not accepted: send multipart/form-data or a raw "
            f"{' or '.join(ingest.accept_types)} body"
        )

    async def _put(self, request: web.Request) -> Upload:
        if request.content_type.startswith("multipart/"):
            raise UnsupportedMediaType("PUT takes the recording itself as the body, not a multipart form")
        return await self._raw(request, request.match_info["filename"])

    async def _raw(self, request: web.Request, filename: str) -> Upload:
        return await self.ingest.raw(
            request.content.readany, filename=filename, content_type=request.content_type or None
        )

    async def _run(self, request: web.Request, work: Callable[[], Awaitable[Upload]]) -> web.Response:
        attempt = _Attempt()
        token = CURRENT_UPLOAD.set(attempt.stats)
        received_at = datetime.now(UTC)
        admission = request.app[ADMISSION]
        body: dict[str, Any] = {}
        try:
            self._precheck(request)
            with admission:
                attempt.upload = upload = await work()
                stored_at = datetime.now(UTC)
                body = _answer(upload)
                if self.manifests is not None:
                    info = _request_info(request, self.guard, received_at)
                    body["manifest"] = await self.manifests.write(upload, info, self.ingest.tags_for(upload.fields))
                if self.notifier is not None:
                    # Into the outbox before the answer, still inside admission so the drain waits for it.
                    # A failed outbox write is logged and counted there; the recording is stored either way.
                    info = _request_info(request, self.guard, received_at)
                    await self.notifier.record(_event(body, upload, info, stored_at), self.notify_targets)
            attempt.outcome = "success"
        except StreamproxyError as exc:
            attempt.error = exc
            raise
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or not admission.stopped_by_shutdown(task):
                attempt.outcome = attempt.cancelled = "cancelled"
                raise
            # The drain deadline cancelled this upload; its writer is aborted. Tell the client to retry.
            task.uncancel()
            attempt.error = Unavailable(
                "the server shut down before the upload finished; nothing was stored", code="shutdown", retry_after=5
            )
            raise attempt.error from None
        except ConnectionError:
            attempt.outcome, attempt.cancelled = "cancelled", "client_disconnected"
            raise
        finally:
            CURRENT_UPLOAD.reset(token)
            _report(request, self.guard, attempt)
        return web.json_response(body)


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


@dataclass
class _Attempt:
    """What one upload request came to, for its log line and its metrics."""

    started: float = field(default_factory=time.monotonic)
    stats: UploadStats = field(default_factory=UploadStats)
    outcome: str = "failure"
    error: StreamproxyError | None = None
    upload: Upload | None = None
    cancelled: str = ""  # "cancelled" or "client_disconnected": the request ended without an answer


def _report(request: web.Request, guard: Guard, attempt: _Attempt) -> None:
    """Write the one log line of an upload request and count it."""
    outcome, error, stats, upload = attempt.outcome, attempt.error, attempt.stats, attempt.upload
    elapsed = time.monotonic() - attempt.started
    size = upload.received.size if upload else stats.bytes  # what the client sent
    code = error.code if error else attempt.cancelled
    emit = log.warning if error is not None and error.status >= 500 else log.info
    emit(
        "upload",
        outcome=outcome,
        client=guard.client_address(request),
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


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse requests the route's guard rejects (403, 401) before the handler reads the body; log them.

    Routes that are not upload routes (``/healthz`` and the other probes) have no guard: they stay open.
    """
    route = request.app[UPLOAD_ROUTES].of(request) if UPLOAD_ROUTES in request.app else None
    if route is not None:
        try:
            route.guard.check(request)
        except StreamproxyError as exc:
            _report(request, route.guard, _Attempt(error=exc))
            raise
    return await handler(request)


async def health(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


def _answer(upload: Upload) -> dict[str, Any]:
    """Build the success answer's body (the route adds ``manifest`` when it writes manifests)."""
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


def _request_info(request: web.Request, guard: Guard, received_at: datetime) -> RequestInfo:
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    return RequestInfo(
        client=guard.client_address(request),
        user_agent=request.headers.get("User-Agent"),
        request_id=str(request_id) if request_id else None,
        received_at=received_at,
    )
