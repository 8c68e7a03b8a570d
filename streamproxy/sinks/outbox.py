"""The storage side of the notification outbox: a tiny object store that a sink may offer.

Notifications (``streamproxy.notify``) must survive crashes and redeploys, so each pending event is
an object in the same storage as the recordings, under ``<prefix>.streamproxy-outbox/``. A sink
that can hold the outbox implements ``OutboxCapable``; its ``outbox_store()`` returns an
``OutboxStore`` rooted there. The interface is deliberately small so that S3, a directory and a
dict can all provide it with their native operations:

* ``put`` replaces, ``put_new`` creates only if the name is free (S3 ``If-None-Match: *``, a
  ``link(2)`` on a filesystem): the lease that keeps two servers from delivering one event at the
  same time is a ``put_new``;
* ``list`` pages in name order (``StartAfter``), so a caller holds one page however many events wait;
* ``get`` answers ``None`` and ``delete`` succeeds for a missing name: another server may have
  finished the event a moment ago, and that is not an error.

Names are relative, ``/``-separated, and made by streamproxy; ``check_name`` refuses anything that
could leave the outbox (names also come from ``streamproxy notify --drop NAME``).
"""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable

from ..errors import BadRequest

__all__ = ["OUTBOX_DIR", "OutboxCapable", "OutboxStore", "check_name"]

OUTBOX_DIR = ".streamproxy-outbox"
_NAME = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


def check_name(name: str) -> str:
    """Return ``name`` if it is a safe outbox name (no ``..``, no leading dot, no absolute path)."""
    if not _NAME.fullmatch(name) or any(segment.startswith(".") for segment in name.split("/")):
        raise BadRequest(f"{name!r} is not an outbox name", code="invalid_key")
    return name


class OutboxStore(Protocol):
    """Small objects under the outbox root; see the module docstring for the semantics."""

    description: str

    async def put(self, name: str, data: bytes, *, durable: bool = True) -> None:
        """Store ``data`` under ``name``, replacing what is there; durable when this returns (unless not ``durable``).

        ``durable=False`` lets a store skip its flush (``fsync``) for data that may be lost in a crash
        without harm, such as leases; the write must still be whole or absent.
        """

    async def put_new(self, name: str, data: bytes, *, durable: bool = True) -> bool:
        """Store ``data`` under ``name`` only if nothing is there; ``False`` if something was."""

    async def get(self, name: str) -> bytes | None:
        """Return the object under ``name``, or ``None`` if there is none."""

    async def delete(self, name: str) -> None:
        """Remove ``name``; a missing name is not an error."""

    async def list(self, prefix: str, *, after: str = "", limit: int = 100) -> list[str]:
        """Return up to ``limit`` names that start with ``prefix`` and sort after ``after``, in order."""


@runtime_checkable
class OutboxCapable(Protocol):
    """A sink that can hold the notification outbox in its own storage."""

    def outbox_store(self) -> OutboxStore:
        """Return the outbox store under this sink's prefix (``<prefix>.streamproxy-outbox/``)."""
