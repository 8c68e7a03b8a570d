"""The durable outbox: pending events, their leases and the dead letters, as objects in the sink's storage.

Layout under ``<prefix>.streamproxy-outbox/`` (see ``streamproxy.sinks.outbox`` for the store)::

    pending/<ms>-<event id>.<t>.json   one event for one target (t: ``target_key`` of the target)
    lease/<same name>                  who is delivering it, or until when it backs off
    dead/<same name>                   a final failure, kept for ``streamproxy notify``

Names start with the creation time in milliseconds, zero-padded, so a listing is oldest first and
the age of the oldest pending event is the first name of the first page.

One object per event *and target*: a webhook's success or dead letter never rewrites the state
of a queue that has not answered yet, and every object has exactly one lease.

A lease is a ``put_new``: whoever creates ``lease/<name>`` delivers, and nobody else touches the
event until the lease's ``until``. After a failed attempt the holder rewrites its lease with the
time of the next attempt and the attempt count, so the backoff is shared by every server and
survives restarts. An expired lease is deleted and created again; two servers that do that in
the same instant can both deliver once, which at-least-once allows (receivers deduplicate by id).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..sinks.outbox import OutboxStore

__all__ = ["DEAD", "LEASE", "PENDING", "Lease", "Outbox", "Record", "created_at_of", "target_key", "target_key_of"]

PENDING = "pending/"
LEASE = "lease/"
DEAD = "dead/"
PAGE = 100  # names held per listing page: memory does not grow with the number of pending events


def target_key(spec: str) -> str:
    """Return a short, name-safe key of a target spec, so a scan can tell an event's target from its name alone."""
    return hashlib.sha256(spec.encode("utf-8")).hexdigest()[:12]


def target_key_of(name: str) -> str:
    """Return the ``target_key`` encoded in an outbox name (``""`` if the name has none)."""
    parts = name.rsplit(".", 2)
    return parts[1] if len(parts) == 3 else ""


def created_at_of(name: str) -> float:
    """Return the creation time (Unix seconds) encoded at the start of an outbox name."""
    stamp = name.rpartition("/")[2].partition("-")[0]
    return int(stamp) / 1000 if stamp.isdigit() else 0.0


@dataclass(frozen=True)
class Record:
    """One pending delivery: an event for one target."""

    name: str
    target: str
    event: dict[str, Any]
    created_at: float
    dead: dict[str, Any] | None = None

    def to_bytes(self) -> bytes:
        """Serialize for storage."""
        document: dict[str, Any] = {"target": self.target, "created_at": self.created_at, "event": self.event}
        if self.dead is not None:
            document["dead"] = self.dead
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, name: str, data: bytes) -> Record:
        """Parse a stored record (``ValueError`` if it is not one)."""
        document = json.loads(data)
        if not isinstance(document, dict) or not isinstance(document.get("event"), dict):
            raise ValueError(f"outbox entry {name} is not an event record")
        return cls(
            name=name,
            target=str(document["target"]),
            event=document["event"],
            created_at=float(document.get("created_at", created_at_of(name))),
            dead=document.get("dead"),
        )


@dataclass(frozen=True)
class Lease:
    """The right to deliver ``name`` until ``until``; ``attempts`` failed before this one."""

    name: str
    owner: str
    until: float
    attempts: int = 0
    last_error: str | None = None

    def to_bytes(self) -> bytes:
        """Serialize for storage."""
        return json.dumps(
            {"owner": self.owner, "until": self.until, "attempts": self.attempts, "last_error": self.last_error}
        ).encode("utf-8")

    @classmethod
    def from_bytes(cls, name: str, data: bytes) -> Lease:
        """Parse a stored lease; an unreadable one counts as expired with no attempts."""
        try:
            document = json.loads(data)
            return cls(
                name,
                str(document["owner"]),
                float(document["until"]),
                int(document.get("attempts", 0)),
                document.get("last_error"),
            )
        except (ValueError, KeyError, TypeError):
            return cls(name, "", 0.0)


class Outbox:
    """Pending events, leases and dead letters in one ``OutboxStore``; ``owner`` names this server."""

    def __init__(self, store: OutboxStore, *, owner: str) -> None:
        self.store = store
        self.owner = owner

    @property
    def description(self) -> str:
        """Where the outbox lives."""
        return self.store.description

    async def add(self, event: Mapping[str, Any], targets: Sequence[str], *, now: float) -> list[Record]:
        """Store ``event`` once per target; return the records (durable when this returns)."""
        stamp = f"{int(now * 1000):013d}-{event['id']}"
        unique = dict.fromkeys(targets)  # a target named twice still gets the event once
        records = [Record(f"{stamp}.{target_key(target)}.json", target, dict(event), now) for target in unique]
        for record in records:
            await self.store.put(PENDING + record.name, record.to_bytes())
        return records

    async def names(self, folder: str = PENDING, *, page: int = PAGE) -> AsyncIterator[str]:
        """Every name in ``folder`` (without the folder), oldest first, one page in memory at a time."""
        after = ""
        while True:
            found = await self.store.list(folder, after=after, limit=page)
            for full in found:
                yield full.removeprefix(folder)
            if len(found) < page:
                return
            after = found[-1]

    async def load(self, name: str, folder: str = PENDING) -> Record | None:
        """Return the record ``name`` in ``folder``, or ``None`` if it is gone."""
        data = await self.store.get(folder + name)
        return Record.from_bytes(name, data) if data is not None else None

    async def lease_of(self, name: str) -> Lease | None:
        """Return the current lease of ``name``, if any."""
        data = await self.store.get(LEASE + name)
        return Lease.from_bytes(name, data) if data is not None else None

    async def acquire(self, name: str, *, now: float, seconds: float) -> Lease | float:
        """Take the lease on ``name`` for ``seconds``; if someone holds it, return the time it ends instead."""
        current = await self.lease_of(name)
        attempts, last_error = 0, None
        if current is not None:
            if current.until > now:
                return current.until
            attempts, last_error = current.attempts, current.last_error
            await self.store.delete(LEASE + name)  # expired: its holder crashed, or its backoff is over
        lease = Lease(name, self.owner, now + seconds, attempts, last_error)
        # Leases need no flush: one lost in a crash only lets the event be tried a little earlier.
        if not await self.store.put_new(LEASE + name, lease.to_bytes(), durable=False):
            taken = await self.lease_of(name)
            return taken.until if taken is not None else now
        return lease

    async def defer(self, lease: Lease, *, until: float, error: str) -> Lease:
        """Keep the lease until the next attempt, counting the failed one (the backoff all servers see)."""
        deferred = Lease(lease.name, self.owner, until, lease.attempts + 1, error)
        await self.store.put(LEASE + lease.name, deferred.to_bytes(), durable=False)
        return deferred

    async def release(self, lease: Lease) -> None:
        """Give the lease up without an attempt (drain): another server may take the event at once."""
        await self.store.delete(LEASE + lease.name)

    async def delivered(self, lease: Lease) -> None:
        """Forget an event its target accepted (the event first, so it is never delivered again)."""
        await self.store.delete(PENDING + lease.name)
        await self.store.delete(LEASE + lease.name)

    async def bury(self, lease: Lease, record: Record, *, reason: str, dead_at: float) -> Record:
        """Move a final failure to ``dead/`` (written before the pending entry is removed)."""
        dead = Record(
            record.name,
            record.target,
            record.event,
            record.created_at,
            {"reason": reason, "attempts": lease.attempts + 1, "dead_at": dead_at},
        )
        await self.store.put(DEAD + record.name, dead.to_bytes())
        await self.store.delete(PENDING + record.name)
        await self.store.delete(LEASE + record.name)
        return dead

    async def retry(self, name: str) -> bool:
        """Put the dead letter ``name`` back into ``pending/`` with a fresh backoff; ``False`` if there is none."""
        dead = await self.load(name, DEAD)
        if dead is None:
            return False
        revived = Record(dead.name, dead.target, dead.event, dead.created_at)
        await self.store.put(PENDING + name, revived.to_bytes())
        await self.store.delete(LEASE + name)
        await self.store.delete(DEAD + name)
        return True

    async def drop(self, name: str) -> bool:
        """Delete the dead letter ``name`` for good; ``False`` if there is none."""
        if await self.store.get(DEAD + name) is None:
            return False
        await self.store.delete(DEAD + name)
        return True

    async def forget_orphan_leases(self, *, now: float) -> int:
        """Delete expired leases whose event is gone (a server stopped between the two deletes); return how many."""
        removed = 0
        async for name in self.names(LEASE):
            lease = await self.lease_of(name)
            if lease is None or lease.until > now:
                continue
            if await self.store.get(PENDING + name) is None:
                await self.store.delete(LEASE + name)
                removed += 1
        return removed
