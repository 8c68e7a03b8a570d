"""Manifests: ``<key>.json`` beside each stored recording, an audit record of the upload.

A manifest is written only after the recording is stored complete, through the same sink (so the
same encryption, storage class, retention and tags apply). If writing it fails, the recording
stays stored and the upload still succeeds: the failure is logged (``manifest_failed``), counted
once (the metric ``streamproxy_manifest_failures_total``, through ``Manifests.on_failure``), and the
answer's ``manifest`` is ``null``. A route that writes manifests holds one ``Manifests``; the
upload route (handlers.py) calls it after the upload, so ``Ingest`` knows nothing of manifests. The schema is
documented in docs/configuration.md; ``MANIFEST_VERSION`` changes when a field changes meaning.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from . import __version__
from .ingest import Upload
from .parts import BufferPool
from .sinks import Completion, ObjectSpec, Sink

__all__ = ["MANIFEST_SUFFIX", "MANIFEST_VERSION", "Manifests", "RequestInfo", "build_manifest", "manifest_key"]

log = structlog.get_logger("streamproxy.manifest")

MANIFEST_SUFFIX = ".json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class RequestInfo:
    """What the HTTP layer knows about the request behind an upload."""

    client: str | None
    user_agent: str | None
    request_id: str | None
    received_at: datetime


def manifest_key(key: str) -> str:
    """Return the key of the manifest that describes the recording at ``key``."""
    return key + MANIFEST_SUFFIX


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_manifest(
    upload: Upload, info: RequestInfo, *, part_size: int, storage: str, completed_at: datetime
) -> dict[str, object]:
    """Return the manifest document of a stored upload."""
    return {
        "manifest_version": MANIFEST_VERSION,
        "key": upload.stored.key,
        "bucket": upload.stored.bucket,
        "storage": storage,
        "size": upload.size,
        "sha256": upload.sha256,
        "received": upload.received.to_json(),
        "checksum": upload.stored.checksum.as_json() if upload.stored.checksum is not None else None,
        "content_type": upload.content_type,
        "part_size": part_size,
        "parts": upload.stored.parts,
        "audio": upload.audio_json,
        "fields": dict(upload.fields),
        "client": {"address": info.client, "user_agent": info.user_agent},
        "request_id": info.request_id,
        "received_at": _utc(info.received_at),
        "completed_at": _utc(completed_at),
        "streamproxy_version": __version__,
    }


def _no_count() -> None:
    pass


@dataclass(frozen=True)
class Manifests:
    """Writes the manifests of one route.

    ``sink`` is the route's own sink, not the metrics wrapper: a manifest is not a recording and must
    not count as an upload.
    """

    sink: Sink
    pool: BufferPool
    on_failure: Callable[[], None] = _no_count  # the one count of manifests not written

    async def write(self, upload: Upload, info: RequestInfo, tags: Mapping[str, str]) -> str | None:
        """Store the manifest beside the recording; return its key, or ``None`` if that failed (logged, counted)."""
        key = manifest_key(upload.stored.key)
        document = build_manifest(
            upload,
            info,
            part_size=self.pool.part_size,
            storage=self.sink.description,
            completed_at=datetime.now(UTC),
        )
        data = json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"
        try:
            if len(data) > self.pool.part_size:  # text fields are capped far below a part; never expected
                raise ValueError(f"the manifest is {len(data)} bytes, more than one part")
            async with await self.sink.open(ObjectSpec(key, "application/json", tags=tags)) as writer:
                part = await self.pool.acquire()
                part.data[: len(data)] = data
                part.length = len(data)
                await writer.write(part, last=True)
                await writer.complete(Completion(tags=tags))
        except Exception as exc:
            # The recording is stored: the client gets its success, the operator a log line and a count.
            self.on_failure()
            log.error("manifest_failed", key=key, recording=upload.stored.key, error=str(exc) or type(exc).__name__)
            return None
        return key
