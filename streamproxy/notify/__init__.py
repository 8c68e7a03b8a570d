"""Completion notifications: a signed ``recording.stored`` event per stored upload, delivered at least once.

* ``event``: the event documents and their encoding;
* ``signing``: the ``Streamproxy-Signature`` scheme;
* ``outbox``: pending events, leases and dead letters as objects in the sink's own storage
  (through the ``streamproxy.sinks.outbox`` capability);
* ``targets``: webhook, SQS and SNS;
* ``delivery``: the ``Notifier`` that writes the outbox before the answer and delivers it in the
  background with backoff, leases and a drain.

Nothing here imports aiohttp's web layer; the HTTP handlers call ``Notifier.record``.
"""

from __future__ import annotations

from .delivery import DeliveryPolicy, Notifier, NotifyStats
from .event import EVENT_PING, EVENT_STORED, encode_event, new_event_id, ping_event, recording_stored
from .outbox import Outbox
from .signing import Signer, signature, verify
from .targets import DeliveryFailed, Targets

__all__ = [
    "EVENT_PING",
    "EVENT_STORED",
    "DeliveryFailed",
    "DeliveryPolicy",
    "Notifier",
    "NotifyStats",
    "Outbox",
    "Signer",
    "Targets",
    "encode_event",
    "new_event_id",
    "ping_event",
    "recording_stored",
    "signature",
    "verify",
]
