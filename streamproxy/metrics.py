"""Prometheus metrics on a registry owned by the app (never the global one), and the ``/metrics`` endpoint.

Every name starts with ``streamproxy_`` and ends in its unit. The per-upload figures that the
upload log line reports (bytes, parts, storage retries) are gathered in an ``UploadStats`` kept in
a context variable: the request task sets it, and the tasks it spawns (part uploads) inherit it,
so the sink's ``observe`` hook can add its retries to the upload that caused them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from . import __version__
from .appkeys import METRICS
from .connections import ConnectionStats
from .parts import PartBuffer
from .sinks import (
    AS_OPENED,
    Completion,
    HeaderPatching,
    HeadLast,
    HeadLastWriter,
    ObjectSpec,
    PatchingWriter,
    Sink,
    Stored,
    SweepItem,
    Writer,
    WriterBase,
)

__all__ = ["CURRENT_UPLOAD", "InstrumentedSink", "Metrics", "UploadStats", "metrics_endpoint"]

_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_S3_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_SIZE_BUCKETS = tuple(float(2**n) for n in range(10, 34, 2))  # 1 KiB .. 8 GiB


@dataclass
class UploadStats:
    """What one upload has done so far: its key once known, bytes and parts handed to storage, retries."""

    key: str | None = None
    bytes: int = 0
    parts: int = 0
    retries: int = 0


CURRENT_UPLOAD: ContextVar[UploadStats | None] = ContextVar("streamproxy_upload", default=None)


class Metrics:
    """The app's metrics, all registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.uploads = Counter(
            "streamproxy_uploads_total",
            "Upload requests by outcome (success, failure, cancelled) and error code ('' on success)",
            ["outcome", "error"],
            registry=r,
        )
        self.upload_duration = Histogram(
            "streamproxy_upload_duration_seconds",
            "Time from the request's arrival to the answer, by outcome",
            ["outcome"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.upload_size = Histogram(
            "streamproxy_upload_size_bytes", "Size of stored recordings", buckets=_SIZE_BUCKETS, registry=r
        )
        self.received_bytes = Counter(
            "streamproxy_received_bytes_total",
            "Recording bytes received and handed to storage (counted per part, failed uploads included)",
            registry=r,
        )
        self.aborted = Counter(
            "streamproxy_uploads_aborted_total",
            "Uploads that opened storage and were aborted (nothing of them remains)",
            registry=r,
        )
        self.manifest_failures = Counter(
            "streamproxy_manifest_failures_total",
            "Manifests (--manifest) not written although their recording was stored",
            registry=r,
        )
        self.in_flight = Gauge("streamproxy_uploads_in_flight", "Uploads being received right now", registry=r)
        self.buffer_in_use = Gauge(
            "streamproxy_buffer_in_use_bytes", "Part-buffer bytes held by uploads right now", registry=r
        )
        self.buffer_capacity = Gauge(
            "streamproxy_buffer_capacity_bytes", "The part-buffer budget (--max-buffer-bytes, whole parts)", registry=r
        )
        self.s3_duration = Histogram(
            "streamproxy_s3_request_duration_seconds",
            "Duration of one S3 call, botocore's retries included, by operation",
            ["operation"],
            buckets=_S3_BUCKETS,
            registry=r,
        )
        self.s3_retries = Counter(
            "streamproxy_s3_retries_total",
            "Retries botocore made inside S3 calls, by operation",
            ["operation"],
            registry=r,
        )
        self.draining = Gauge("streamproxy_draining", "1 while the server drains for shutdown", registry=r)
        self.storage_ready = Gauge(
            "streamproxy_storage_ready", "1 if the last readiness probe reached storage, else 0", registry=r
        )
        info = Gauge("streamproxy_build_info", "Always 1; the version is a label", ["version"], registry=r)
        info.labels(version=__version__).set(1)

    def track(
        self, *, in_flight: Callable[[], float], buffer_in_use: Callable[[], float], buffer_capacity: float
    ) -> None:
        """Read the gauges that mirror live state from their owners at scrape time."""
        self.in_flight.set_function(in_flight)
        self.buffer_in_use.set_function(buffer_in_use)
        self.buffer_capacity.set(buffer_capacity)

    def track_connections(self, stats: ConnectionStats, limit: int) -> None:
        """Export what the connection guard counts (``--max-connections`` is ``limit``; 0: no cap)."""
        Gauge("streamproxy_connections_open", "Client connections open right now", registry=self.registry).set_function(
            lambda: stats.open
        )
        Gauge(
            "streamproxy_connections_max",
            "The cap on open connections (--max-connections; 0: none)",
            registry=self.registry,
        ).set(limit)
        self.registry.register(_ConnectionCounters(stats))

    def observe_s3(self, operation: str, seconds: float, retries: int) -> None:
        """Record one S3 call (the ``S3Sink.observe`` hook) and add its retries to the current upload."""
        self.s3_duration.labels(operation=operation).observe(seconds)
        if retries:
            self.s3_retries.labels(operation=operation).inc(retries)
            stats = CURRENT_UPLOAD.get()
            if stats is not None:
                stats.retries += retries

    def record_upload(self, outcome: str, error: str, seconds: float, size: int | None) -> None:
        """Count one finished upload request."""
        self.uploads.labels(outcome=outcome, error=error).inc()
        self.upload_duration.labels(outcome=outcome).observe(seconds)
        if outcome == "success" and size is not None:
            self.upload_size.observe(size)


class _ConnectionCounters(Collector):
    """The guard's counts as counters, read at scrape time (the guard stays free of prometheus-client)."""

    def __init__(self, stats: ConnectionStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "streamproxy_connections_refused",
            "Connections refused with 503 busy because --max-connections were open",
            value=self._stats.refused,
        )
        yield CounterMetricFamily(
            "streamproxy_connections_header_timeouts",
            "Connections closed with 408 because their request head took longer than --header-timeout",
            value=self._stats.header_timeouts,
        )


class InstrumentedSink:
    """A sink wrapper that counts bytes, parts and aborts of every upload it opens."""

    def __init__(self, sink: Sink, metrics: Metrics) -> None:
        self._sink = sink
        self._metrics = metrics
        self.description = sink.description

    async def start(self) -> None:
        """Start the wrapped sink."""
        await self._sink.start()

    async def close(self) -> None:
        """Close the wrapped sink."""
        await self._sink.close()

    async def probe(self) -> None:
        """Probe the wrapped sink."""
        await self._sink.probe()

    async def sweep(self, older_than: float, *, dry_run: bool, now: float | None = None) -> list[SweepItem]:
        """Sweep the wrapped sink."""
        return await self._sink.sweep(older_than, dry_run=dry_run, now=now)

    async def open(self, spec: ObjectSpec) -> Writer:
        """Open an upload on the wrapped sink and count what happens to it."""
        writer = await self._sink.open(spec)
        stats = CURRENT_UPLOAD.get()
        if stats is not None:
            stats.key = spec.key
        # The audio stage asks for these optional capabilities by protocol: keep the inner writer's.
        if isinstance(writer, HeadLast):
            return _InstrumentedHeadLastWriter(writer, self._metrics)
        if isinstance(writer, HeaderPatching):
            return _InstrumentedPatchingWriter(writer, self._metrics)
        return _InstrumentedWriter(writer, self._metrics)


class _InstrumentedWriter(WriterBase):
    def __init__(self, writer: Writer, metrics: Metrics) -> None:
        self._writer = writer
        self._metrics = metrics
        self._stats = CURRENT_UPLOAD.get()
        self._ended = False

    def _count(self, length: int) -> None:
        self._metrics.received_bytes.inc(length)
        if self._stats is not None:
            self._stats.bytes += length
            self._stats.parts += 1

    async def write(self, part: PartBuffer, *, last: bool = False) -> None:
        self._count(part.length)
        await self._writer.write(part, last=last)

    async def complete(self, done: Completion = AS_OPENED) -> Stored:
        if self._stats is not None:
            self._stats.key = done.key or self._stats.key
        try:
            stored = await self._writer.complete(done)
        except BaseException:
            self._aborted()
            raise
        self._ended = True
        return stored

    async def abort(self) -> None:
        try:
            await self._writer.abort()
        finally:
            self._aborted()

    def _aborted(self) -> None:
        if not self._ended:
            self._ended = True
            self._metrics.aborted.inc()


class _InstrumentedHeadLastWriter(_InstrumentedWriter):
    def __init__(self, writer: HeadLastWriter, metrics: Metrics) -> None:
        super().__init__(writer, metrics)
        self._head_last = writer

    def defer_head(self) -> None:
        self._head_last.defer_head()

    async def write_head(self, part: PartBuffer) -> None:
        self._count(part.length)
        await self._head_last.write_head(part)


class _InstrumentedPatchingWriter(_InstrumentedWriter):
    def __init__(self, writer: PatchingWriter, metrics: Metrics) -> None:
        super().__init__(writer, metrics)
        self._patching = writer

    async def patch_header(self, header: bytes) -> None:
        await self._patching.patch_header(header)


async def metrics_endpoint(request: web.Request) -> web.Response:
    """``GET /metrics``: the app's registry in Prometheus' text format."""
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
