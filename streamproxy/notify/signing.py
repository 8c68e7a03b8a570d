"""Webhook signatures: ``Streamproxy-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">``.

The scheme the large webhook senders use: the timestamp is inside the signed bytes, so a receiver
that checks it against its clock (``verify``'s ``tolerance``) rejects replays of an old delivery,
and ``Streamproxy-Delivery`` (the event id) lets it drop a retry it already processed. Every
attempt is signed afresh with its own ``t``.

The secret is registered with ``streamproxy.redact`` when a ``Signer`` is made, so it cannot show
up in a log line; it is never part of an error message either.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from ..redact import remember_secret

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "Signer",
    "signature",
    "verify",
]

SIGNATURE_HEADER = "Streamproxy-Signature"
EVENT_HEADER = "Streamproxy-Event"
DELIVERY_HEADER = "Streamproxy-Delivery"
DEFAULT_TOLERANCE = 300  # seconds a receiver should accept between ``t`` and its own clock


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """Return the ``Streamproxy-Signature`` value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify(
    secret: str, header: str, body: bytes, *, tolerance: float = DEFAULT_TOLERANCE, now: float | None = None
) -> bool:
    """Tell whether ``header`` is a valid signature of ``body`` made within ``tolerance`` seconds of ``now``."""
    items = [item.partition("=") for item in header.split(",")]
    stamps = [value for name, _, value in items if name.strip() == "t"]
    macs = [value.strip() for name, _, value in items if name.strip() == "v1"]
    if len(stamps) != 1 or not stamps[0].strip().isdigit() or not macs:
        return False
    timestamp = int(stamps[0])
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = _mac(secret, timestamp, body)
    return any(hmac.compare_digest(expected, mac) for mac in macs)


class Signer:
    """Signs webhook bodies with the configured secret (``--notify-secret``)."""

    def __init__(self, secret: str) -> None:
        self._secret = secret
        remember_secret(secret)

    def __repr__(self) -> str:
        return "Signer([redacted])"

    def headers(self, body: bytes, *, event: str, event_id: str, now: float | None = None) -> dict[str, str]:
        """Return the headers of one delivery attempt: type, id for idempotency, and a fresh signature."""
        timestamp = int(time.time() if now is None else now)
        return {
            "Content-Type": "application/json",
            EVENT_HEADER: event,
            DELIVERY_HEADER: event_id,
            SIGNATURE_HEADER: signature(self._secret, body, timestamp),
        }
