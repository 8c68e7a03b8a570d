"""make_app(settings, sink): the upload routes, the probes, the middlewares, and the sinks' lifetime.

The default upload route (flags and ``STREAMPROXY_*``, at ``routes.DEFAULT_PATH``) is the first
``UploadRoute``; every ``[[route]]`` of ``--config`` follows with its own settings. The app keys
are in appkeys.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

from aiohttp import web
from prometheus_client import CollectorRegistry

from .appkeys import ADMISSION, CONNECTIONS, METRICS, NOTIFY, POOL, READINESS, SINK, UPLOAD_ROUTES
from .audio import TRANSCODED_FORMATS, load_encoders
from .audio.stream import AudioPolicy
from .auth import Guard
from .config import Settings
from .connections import ConnectionStats
from .errors import ConfigError
from .handlers import UploadRoute, UploadRoutes, error_middleware, guard_middleware, health
from .ingest import Ingest
from .lifecycle import Admission, Readiness, readyz
from .manifest import Manifests
from .metrics import InstrumentedSink, Metrics, metrics_endpoint
from .notify.metrics import NotifyCollector
from .notify.service import NotifyHub
from .openapi import serve_openapi
from .parts import BufferPool
from .routes import DEFAULT_PATH, route_settings
from .sinks import Observable, Sink
from .wiring import build_notify_hub, build_sink

__all__ = ["make_app"]


def make_app(
    settings: Settings, sink: Sink | None = None, *, registry: CollectorRegistry | None = None
) -> web.Application:
    """Build the application; ``sink`` defaults to the one ``settings.storage`` names.

    Metrics go to ``registry`` (a fresh one by default, never prometheus-client's global registry).
    """
    sink = sink if sink is not None else build_sink(settings)
    app = web.Application(middlewares=[error_middleware, guard_middleware])
    pool = BufferPool(settings.part_size, settings.max_buffer_bytes)
    admission = Admission(settings.max_concurrent_uploads)
    metrics = Metrics(registry if registry is not None else CollectorRegistry(auto_describe=True))
    metrics.track(
        in_flight=lambda: admission.in_flight,
        buffer_in_use=lambda: pool.bytes_in_use,
        buffer_capacity=pool.capacity * pool.part_size,
    )
    app[SINK] = sink
    app[POOL] = pool
    app[ADMISSION] = admission
    app[METRICS] = metrics
    app[CONNECTIONS] = ConnectionStats()
    metrics.track_connections(app[CONNECTIONS], settings.max_connections)
    app[READINESS] = Readiness(sink, admission, metrics)
    # The default route first, then each [[route]] with its own settings and its own sink.
    routes = [(DEFAULT_PATH, settings, sink)]
    for route in settings.routes:
        own = route_settings(settings, route)
        routes.append((route.path, own, build_sink(own)))
    hub = build_notify_hub(settings, tuple(own for _, own, _ in routes[1:]))
    if hub is not None:
        app[NOTIFY] = hub
        metrics.registry.register(NotifyCollector(hub.stats))
    app[UPLOAD_ROUTES] = UploadRoutes()
    for path, own, route_sink in routes:
        if isinstance(route_sink, Observable):  # the S3 sink reports every call it makes
            route_sink.observe = metrics.observe_s3
        upload_route = _upload_route(path, own, route_sink, pool=pool, metrics=metrics, hub=hub)
        app[UPLOAD_ROUTES].add(app, upload_route)

    async def sink_lifetime(app: web.Application) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for _, _, each in routes:
                await each.start()
                stack.push_async_callback(each.close)
            if hub is not None:
                await hub.start()  # resumes every outbox: leftovers of crashed or stopped servers
                stack.push_async_callback(hub.close)
            yield

    app.cleanup_ctx.append(sink_lifetime)
    app.router.add_get("/healthz", health)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/openapi.json", serve_openapi)
    return app


def _upload_route(
    path: str, settings: Settings, sink: Sink, *, pool: BufferPool, metrics: Metrics, hub: NotifyHub | None
) -> UploadRoute:
    """Build one upload route; the buffer budget, the metrics and the notification hub are shared by all."""
    ingest = Ingest(
        InstrumentedSink(sink, metrics),
        pool,
        prefix=settings.storage.prefix,
        key_template=settings.key_template,
        max_upload_bytes=settings.max_upload_bytes,
        read_timeout=settings.read_timeout,
        file_field=settings.file_field,
        accept_types=settings.accept_types,
        max_upload_seconds=settings.max_upload_seconds,
        audio=AudioPolicy(
            raw_audio=settings.raw_audio,
            store_format=settings.store_format,
            require_audio=settings.require_audio,
            bitrate=settings.audio_bitrate,
            encoders=load_encoders() if settings.store_format in TRANSCODED_FORMATS else None,
        ),
        tag_fields=settings.tag_fields,
    )
    # Manifests go through the bare sink: they are not recordings, so they must not count as uploads.
    manifests = Manifests(sink, pool, metrics.manifest_failures.inc) if settings.manifest else None
    notifier = None
    if hub is not None and settings.notify_targets:
        notifier = hub.notifier_for(sink)  # events go through the outbox of the route's own sink
        if notifier is None:
            raise ConfigError(f"--notify-*: {sink.description} cannot hold a notification outbox")
    return UploadRoute(
        path,
        ingest,
        Guard.from_settings(settings),  # its own tokens only: no other route's token opens it
        manifests,
        notifier,
        settings.notify_targets if notifier is not None else (),
    )
