"""make_app(settings, sink): routes, middlewares, typed app keys, and the sink's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from .config import Settings
from .handlers import (
    ADMISSION,
    INGEST,
    Admission,
    error_middleware,
    expect_handler,
    health,
    post_recording,
    put_recording,
)
from .ingest import Ingest
from .parts import BufferPool
from .sinks import Sink, build_sink

__all__ = ["POOL", "SINK", "make_app"]

SINK = web.AppKey("sink", Sink)
POOL = web.AppKey("pool", BufferPool)


def make_app(settings: Settings, sink: Sink | None = None) -> web.Application:
    """Build the application; ``sink`` defaults to the one ``settings.storage`` names."""
    sink = sink if sink is not None else build_sink(settings)
    app = web.Application(middlewares=[error_middleware])
    pool = BufferPool(settings.part_size, settings.max_buffer_bytes)
    app[SINK] = sink
    app[POOL] = pool
    app[ADMISSION] = Admission(settings.max_concurrent_uploads)
    app[INGEST] = Ingest(
        sink,
        pool,
        prefix=settings.storage.prefix,
        key_template=settings.key_template,
        max_upload_bytes=settings.max_upload_bytes,
        read_timeout=settings.read_timeout,
        file_field=settings.file_field,
        accept_types=settings.accept_types,
    )

    async def sink_lifetime(app: web.Application) -> AsyncIterator[None]:
        await sink.start()
        yield
        await sink.close()

    app.cleanup_ctx.append(sink_lifetime)
    app.router.add_post("/recordings", post_recording, expect_handler=expect_handler)
    app.router.add_put("/recordings/{filename}", put_recording, expect_handler=expect_handler)
    app.router.add_get("/healthz", health)
    return app
