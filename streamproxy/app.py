"""make_app(settings, sink): routes, middlewares, typed app keys, and the sink's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

from aiohttp import web
from prometheus_client import CollectorRegistry

from .audio import TRANSCODED_FORMATS, load_encoders
from .audio.stream import AudioPolicy
from .auth import GUARDS, Guard, Guards
from .config import Settings
from .connections import CONNECTIONS, ConnectionStats
from .errors import ConfigError
from .handlers import (
    INGEST,
    ROUTE_INGESTS,
    ROUTE_NOTIFIERS,
    RouteIngests,
    RouteNotifiers,
    error_middleware,
    expect_handler,
    guard_middleware,
    health,
    post_recording,
    put_recording,
)
from .ingest import Ingest
from .lifecycle import ADMISSION, NOTIFY, READINESS, Admission, Readiness, readyz
from .metrics import METRICS, InstrumentedSink, Metrics, metrics_endpoint
from .notify.metrics import NotifyCollector
from .notify.service import NotifyHub
from .openapi import serve_openapi
from .parts import BufferPool
from .routes import route_settings
from .sinks import Sink
from .wiring import build_notify_hub, build_sink

__all__ = ["POOL", "SINK", "make_app"]

SINK = web.AppKey("sink", Sink)
POOL = web.AppKey("pool", BufferPool)


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
    if hasattr(sink, "observe"):  # the S3 sink reports every call it makes
        sink.observe = metrics.observe_s3
    app[SINK] = sink
    app[POOL] = pool
    app[ADMISSION] = admission
    app[METRICS] = metrics
    app[CONNECTIONS] = ConnectionStats()
    metrics.track_connections(app[CONNECTIONS], settings.max_connections)
    app[READINESS] = Readiness(sink, admission, metrics)
    app[INGEST] = _ingest(settings, sink, pool, metrics)
    app[GUARDS] = Guards()
    sinks = [sink]
    app[ROUTE_INGESTS] = RouteIngests()
    routes = [(route, route_settings(settings, route)) for route in settings.routes]
    hub = build_notify_hub(settings, tuple(own for _, own in routes))
    if hub is not None:
        app[NOTIFY] = hub
        app[ROUTE_NOTIFIERS] = RouteNotifiers()
        metrics.registry.register(NotifyCollector(hub.stats))
        _notify_route(hub, app[ROUTE_NOTIFIERS], app[INGEST], sink, settings)
    for route, own in routes:
        route_sink = build_sink(own)
        if hasattr(route_sink, "observe"):
            route_sink.observe = metrics.observe_s3
        sinks.append(route_sink)
        ingest = _ingest(own, route_sink, pool, metrics)
        if hub is not None:
            _notify_route(hub, app[ROUTE_NOTIFIERS], ingest, route_sink, own)
        route_guard = Guard.from_settings(own)  # its own tokens only: no other route's token opens it
        for added in (
            app.router.add_post(route.path, post_recording, expect_handler=expect_handler),
            app.router.add_put(route.path + "/{filename}", put_recording, expect_handler=expect_handler),
        ):
            app[ROUTE_INGESTS].add(added, ingest)
            app[GUARDS].protect(added, route_guard)

    async def sink_lifetime(app: web.Application) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for each in sinks:
                await each.start()
                stack.push_async_callback(each.close)
            if hub is not None:
                await hub.start()  # resumes every outbox: leftovers of crashed or stopped servers
                stack.push_async_callback(hub.close)
            yield

    app.cleanup_ctx.append(sink_lifetime)
    guard = Guard.from_settings(settings)
    for default in (
        app.router.add_post("/recordings", post_recording, expect_handler=expect_handler),
        app.router.add_put("/recordings/{filename}", put_recording, expect_handler=expect_handler),
    ):
        app[GUARDS].protect(default, guard)
    app.router.add_get("/healthz", health)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/openapi.json", serve_openapi)
    return app


def _ingest(settings: Settings, sink: Sink, pool: BufferPool, metrics: Metrics) -> Ingest:
    """Build the ingest of one upload route; the buffer budget and the metrics are shared by all routes."""
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
        manifest=settings.manifest,
        manifest_sink=sink,
    )
    ingest.on_manifest_failure = metrics.manifest_failures.inc
    return ingest


def _notify_route(hub: NotifyHub, notifiers: RouteNotifiers, ingest: Ingest, sink: Sink, settings: Settings) -> None:
    """Send ``recording.stored`` events for the route that ``ingest`` serves, through its sink's outbox."""
    if not settings.notify_targets:
        return
    notifier = hub.notifier_for(sink)
    if notifier is None:
        raise ConfigError(f"--notify-*: {sink.description} cannot hold a notification outbox")
    notifiers.add(ingest, notifier, settings.notify_targets)
