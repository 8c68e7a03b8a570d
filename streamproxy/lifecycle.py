"""Readiness and shutdown: the cached storage probe behind ``/readyz``, and serving with a graceful drain.

Shutdown on SIGTERM or SIGINT, in order:

1. readiness turns false and new uploads are refused with ``503 draining`` and ``Retry-After``,
   while the listening socket stays open (load balancers need a moment to notice readiness);
2. uploads in flight may finish for up to ``--shutdown-timeout`` seconds;
3. uploads still receiving bytes then are cancelled: the ingest path aborts their writers (no
   object, no incomplete multipart upload, no temporary file) and the client gets ``503 shutdown``.
   Uploads already completing in storage are left to finish, for up to ``ABORT_GRACE`` seconds;
4. notification deliveries in flight (``streamproxy.notify``) may finish within what is left of
   ``--shutdown-timeout``; the rest stay in the outbox, their leases handed back;
5. the listener and connections close, the sink closes, and the process exits 0.

A second signal during step 2 skips the rest of the wait. aiohttp's own ``run_app`` is not used:
on SIGTERM it closes the listening socket first, so new uploads would meet a refused connection
instead of a 503, and it gives handlers its timeout twice (once to finish, once after cancelling).
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import time
from contextvars import ContextVar, Token
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import structlog
from aiohttp import web

from .appkeys import ADMISSION, CONNECTIONS, METRICS, NOTIFY, READINESS
from .connections import READ_BUFSIZE, ConnectionLimits, ConnectionStats, GuardedSite
from .errors import StreamproxyError, Unavailable
from .metrics import Metrics
from .sinks import Sink

__all__ = [
    "ABORT_GRACE",
    "CURRENT_TICKET",
    "PROBE_TIMEOUT",
    "PROBE_TTL",
    "Admission",
    "AdmissionTicket",
    "Readiness",
    "mark_completing",
    "readyz",
    "serve",
]

log = structlog.get_logger("streamproxy.lifecycle")

PROBE_TTL = 5.0  # seconds a probe result is reused: orchestrators probe every few seconds, per replica
PROBE_TIMEOUT = 2.0
ABORT_GRACE = 10.0  # after the drain deadline: time for aborts and completing uploads to finish
_RUNNER_SHUTDOWN = 2.0  # what aiohttp then still waits for: responses being written, idle connections


@dataclass
class AdmissionTicket:
    """One admitted upload, as the drain sees it.

    ``completing`` is set by ingest just before ``Writer.complete()``: from then on the drain leaves
    the upload to finish (cancelling it could abort an object the store has just made whole).
    """

    completing: bool = False


CURRENT_TICKET: ContextVar[AdmissionTicket | None] = ContextVar("streamproxy_admission", default=None)


def mark_completing() -> None:
    """Tell the drain that the current upload has all its bytes and is completing in storage."""
    ticket = CURRENT_TICKET.get()
    if ticket is not None:
        ticket.completing = True


class Admission:
    """Counts uploads in flight and refuses new ones beyond the limit (503 with Retry-After).

    It also drives the drain at shutdown: ``draining`` refuses new uploads, ``wait_idle`` lets
    those in flight finish, and ``stop_remaining`` cancels the rest; the ingest path aborts their
    writers (shielded) before the cancellation leaves it, and ``_run`` answers them 503 ``shutdown``.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.draining = False
        self._tasks: dict[asyncio.Task[Any], AdmissionTicket] = {}
        self._tokens: dict[asyncio.Task[Any] | None, Token[AdmissionTicket | None]] = {}
        self._stopped: set[asyncio.Task[Any]] = set()

    def check(self) -> None:
        """Raise 503 if a new upload would not be admitted now."""
        if self.draining:
            raise Unavailable("the server is shutting down; retry on another instance", code="draining", retry_after=5)
        if self.in_flight >= self.limit:
            raise Unavailable(f"{self.limit} uploads are already in progress; retry shortly", retry_after=1)

    def __enter__(self) -> Admission:
        self.check()
        self.in_flight += 1
        ticket = AdmissionTicket()
        task = asyncio.current_task()
        self._tokens[task] = CURRENT_TICKET.set(ticket)  # one per task: uploads enter and leave in any order
        if task is not None:
            self._tasks[task] = ticket
        return self

    def __exit__(self, *exc: object) -> None:
        self.in_flight -= 1
        task = asyncio.current_task()
        CURRENT_TICKET.reset(self._tokens.pop(task))
        if task is not None:
            self._tasks.pop(task, None)

    async def wait_idle(self, seconds: float, interrupt: asyncio.Event | None = None) -> bool:
        """Wait until no upload is in flight (True), or for at most ``seconds`` or until ``interrupt`` (False)."""
        deadline = asyncio.get_running_loop().time() + seconds
        while self.in_flight:
            if asyncio.get_running_loop().time() >= deadline or (interrupt is not None and interrupt.is_set()):
                return False
            await asyncio.sleep(0.05)
        return True

    def stop_remaining(self) -> int:
        """Cancel every upload still receiving bytes; return how many.

        An upload whose bytes have all arrived and that is completing in storage is left to finish:
        cancelling it could abort an object the store has just made whole, and answer failure for it.
        """
        stopped = 0
        for task, ticket in self._tasks.items():
            if ticket.completing:
                continue
            self._stopped.add(task)
            task.cancel()
            stopped += 1
        return stopped

    def stopped_by_shutdown(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` was cancelled by ``stop_remaining`` (and forget it)."""
        if task in self._stopped:
            self._stopped.discard(task)
            return True
        return False


@dataclass(eq=False)
class Readiness:
    """Answer "can this instance take uploads?" from a storage probe cached for ``ttl`` seconds."""

    sink: Sink
    admission: Admission
    metrics: Metrics | None = None
    _: KW_ONLY
    ttl: float = PROBE_TTL
    timeout: float = PROBE_TIMEOUT
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)
    _checked: float = field(default=float("-inf"), init=False, repr=False)
    _problem: str | None = field(default=None, init=False, repr=False)
    _ever_checked: bool = field(default=False, init=False, repr=False)

    @property
    def storage(self) -> str:
        """The storage this instance writes to."""
        return self.sink.description

    async def check(self) -> str | None:
        """Return ``None`` when ready, else the reason (draining, or the storage problem)."""
        if self.admission.draining:
            return "the server is shutting down"
        async with self._lock:  # one probe at a time; concurrent callers share its result
            if time.monotonic() - self._checked >= self.ttl:
                problem = await self._probe()
                if problem is None and (self._problem is not None or not self._ever_checked):
                    log.info("storage_ready", storage=self.sink.description)
                elif problem is not None and problem != self._problem:
                    log.warning("storage_not_ready", storage=self.sink.description, problem=problem)
                self._problem, self._checked, self._ever_checked = problem, time.monotonic(), True
                if self.metrics is not None:
                    self.metrics.storage_ready.set(1 if problem is None else 0)
            return self._problem

    async def _probe(self) -> str | None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.sink.probe()
        except TimeoutError:
            return f"storage did not answer within {self.timeout:g} seconds"
        except StreamproxyError as exc:
            return exc.message
        return None


async def readyz(request: web.Request) -> web.Response:
    """``GET /readyz``: 200 when storage is reachable and the server is not draining, else 503."""
    problem = await request.app[READINESS].check()
    if problem is None:
        return web.json_response({"status": "ok"})
    code = "draining" if request.app[ADMISSION].draining else "storage_unavailable"
    return web.json_response({"status": "failure", "error": code, "message": problem}, status=503)


_UNLIMITED = ConnectionLimits(header_timeout=0, max_connections=0)


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    shutdown_timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    limits: ConnectionLimits = _UNLIMITED,
    keepalive_timeout: float = 75.0,
) -> None:
    """Serve ``app`` (HTTPS with ``ssl_context``) until SIGTERM or SIGINT, then drain as the module docstring says.

    Connections pass through the guard of connections.py (``limits``); aiohttp closes kept-alive
    connections idle for ``keepalive_timeout`` seconds.
    """
    admission = app[ADMISSION]
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=_RUNNER_SHUTDOWN,
        keepalive_timeout=keepalive_timeout,
        read_bufsize=READ_BUFSIZE,
    )
    await runner.setup()
    try:
        site = GuardedSite(
            runner, host, port, limits, stats=app.get(CONNECTIONS, ConnectionStats()), ssl_context=ssl_context
        )
        await site.start()
        log.info("listening", host=host, port=port, tls=ssl_context is not None, storage=app[READINESS].storage)
        stop, hurry = asyncio.Event(), asyncio.Event()
        received: list[str] = []

        def on_signal(sig: signal.Signals) -> None:
            received.append(sig.name)
            (hurry if stop.is_set() else stop).set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        await stop.wait()
        await _drain(app, admission, received[0], shutdown_timeout, hurry)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().remove_signal_handler(sig)
        await runner.cleanup()
    log.info("stopped")


async def _drain(app: web.Application, admission: Admission, reason: str, seconds: float, hurry: asyncio.Event) -> None:
    admission.draining = True
    metrics = app.get(METRICS)
    if metrics is not None:
        metrics.draining.set(1)
    started = time.monotonic()
    log.info("draining", signal=reason, in_flight=admission.in_flight, shutdown_timeout=seconds)
    try:
        await _drain_uploads(admission, seconds, hurry, started)
    finally:
        # After the uploads, whose answers may still add events: deliveries in flight get what is
        # left of --shutdown-timeout; what they cannot finish stays in the outbox for the next start.
        hub = app.get(NOTIFY)
        if hub is not None:
            cut = await hub.drain(max(0.0, seconds - (time.monotonic() - started)))
            log.info("notify_drained", cut_off=cut)


async def _drain_uploads(admission: Admission, seconds: float, hurry: asyncio.Event, started: float) -> None:
    if await admission.wait_idle(seconds, interrupt=hurry):
        log.info("drained", seconds=round(time.monotonic() - started, 3))
        return
    stopped = admission.stop_remaining()
    log.warning(
        "drain_deadline", in_flight=admission.in_flight, aborting=stopped, completing=admission.in_flight - stopped
    )
    if not await admission.wait_idle(ABORT_GRACE):
        log.error("drain_incomplete", in_flight=admission.in_flight, hint="run streamproxy sweep")
    else:
        log.info("drained", seconds=round(time.monotonic() - started, 3), aborted=stopped)
