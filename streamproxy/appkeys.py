"""Every typed key of the aiohttp application, in one place.

The keys name what ``app.make_app`` puts into the application and what handlers, probes and the
drain read back. The value types are imported for the type checker only: the modules that define
them read these keys at run time, so importing them here would make a cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .connections import ConnectionStats
    from .handlers import UploadRoutes
    from .lifecycle import Admission, Readiness
    from .metrics import Metrics
    from .notify.service import NotifyHub
    from .parts import BufferPool
    from .sinks import Sink

__all__ = ["ADMISSION", "CONNECTIONS", "METRICS", "NOTIFY", "POOL", "READINESS", "SINK", "UPLOAD_ROUTES"]

SINK: web.AppKey[Sink] = web.AppKey("sink")  # the default route's sink
POOL: web.AppKey[BufferPool] = web.AppKey("pool")  # the part buffers every route shares
ADMISSION: web.AppKey[Admission] = web.AppKey("admission")  # uploads in flight, and the drain's hold on them
READINESS: web.AppKey[Readiness] = web.AppKey("readiness")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
CONNECTIONS: web.AppKey[ConnectionStats] = web.AppKey("connections")
NOTIFY: web.AppKey[NotifyHub] = web.AppKey("notify")  # only when some route sends notifications
UPLOAD_ROUTES: web.AppKey[UploadRoutes] = web.AppKey("upload_routes")
