"""The events streamproxy sends: ``recording.stored`` after every stored upload, and ``ping`` from ``check``.

An event is one JSON object. Its ``id`` is made once, when the event is put into the outbox, and
stays the same across retries, restarts and servers, so a receiver deduplicates by it (delivery is
at least once). The JSON Schema of both events is ``components.schemas.RecordingStoredEvent`` and
``PingEvent`` in ``streamproxy/openapi.json``, which also lists them under ``webhooks``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "EVENT_PING",
    "EVENT_STORED",
    "Checksum",
    "encode_event",
    "new_event_id",
    "ping_event",
    "recording_stored",
    "utc_text",
]

EVENT_STORED = "recording.stored"
EVENT_PING = "ping"

Checksum = Mapping[str, str]
"""The checksum the store verified, as the answer's ``checksum`` reports it:
``{"algorithm": "md5" | "crc32" | ..., "type": "FULL_OBJECT" | "COMPOSITE", "value": "<as the store shows it>"}``."""


def new_event_id() -> str:
    """Return a fresh event id: ``evt_`` and 32 hex digits (a random UUID)."""
    return f"evt_{uuid.uuid4().hex}"


def utc_text(moment: datetime) -> str:
    """``2026-11-29T12:00:00.123Z``: the timestamp format of events and manifests."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def recording_stored(
    *,
    key: str,
    url: str,
    size: int,
    sha256: str,
    received_at: datetime,
    stored_at: datetime,
    bucket: str | None = None,
    checksum: Checksum | None = None,
    audio: Mapping[str, object] | None = None,
    fields: Mapping[str, str] | None = None,
    content_type: str | None = None,
    client_address: str | None = None,
    request_id: str | None = None,
    manifest: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """Return the ``recording.stored`` event of one stored upload (``url`` exactly as the answer gave it)."""
    return {
        "event": EVENT_STORED,
        "id": event_id or new_event_id(),
        "bucket": bucket,
        "key": key,
        "url": url,
        "size": size,
        "sha256": sha256,
        "checksum": dict(checksum) if checksum is not None else None,
        "audio": dict(audio) if audio is not None else None,
        "content_type": content_type,
        "fields": dict(fields or {}),
        "client_address": client_address,
        "request_id": request_id,
        "received_at": utc_text(received_at),
        "stored_at": utc_text(stored_at),
        "manifest": manifest,
    }


def ping_event(now: datetime | None = None) -> dict[str, Any]:
    """Return a ``ping`` event: ``check`` sends it so a receiver's reachability and signature check are tested."""
    return {"event": EVENT_PING, "id": new_event_id(), "sent_at": utc_text(now or datetime.now(UTC))}


def encode_event(event: Mapping[str, Any]) -> bytes:
    """Encode the body sent for ``event``: compact UTF-8 JSON (the signature covers exactly these bytes)."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
