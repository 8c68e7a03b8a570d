"""From settings to sinks: the one place that knows both the configuration and the sink classes.

``sinks`` import no configuration; this module hands them what they need.
"""

from __future__ import annotations

from .config import Settings
from .sinks import Sink
from .sinks.fs import FileSink
from .sinks.s3 import S3Options, S3Sink

__all__ = ["build_s3_sink", "build_sink"]


def build_s3_sink(settings: Settings) -> S3Sink:
    """Build the S3 sink for ``settings`` (an ``s3://`` storage; not started yet)."""
    return S3Sink(S3Options.from_settings(settings))


def build_sink(settings: Settings) -> Sink:
    """Build the sink that ``settings.storage`` names (not started yet)."""
    if settings.storage.scheme == "s3":
        return build_s3_sink(settings)
    return FileSink(settings.storage.path, overwrite=settings.overwrite)
