"""Notifications as the server and the CLI use them: one ``NotifyHub`` per process, dead letters, checks.

The hub owns the targets' clients and one ``Notifier`` per outbox. Each upload route stores into
its own sink and keeps its events in that sink's outbox, so routes that share a storage prefix
share a notifier, and the leases keep routes, servers and processes from delivering twice.

What the rest of streamproxy needs, and nothing more:

* ``NotifyHub.notifier_for(sink)`` when the routes are built (``None`` for a sink without an
  outbox, which the wiring refuses at start when targets are configured);
* ``start()`` after the sinks started, ``drain(seconds)`` on SIGTERM, ``close()`` at the end;
* ``stats()`` for ``streamproxy.notify.metrics.NotifyCollector``;
* ``dead_letter_command`` for ``streamproxy notify``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import TextIO

import structlog

from ..sinks.outbox import OutboxCapable, OutboxStore
from .delivery import DeliveryPolicy, Notifier, NotifyStats
from .outbox import DEAD, Outbox
from .targets import Targets

__all__ = ["NotifyHub", "dead_letter_command"]

log = structlog.get_logger("streamproxy.notify")


class NotifyHub:
    """The process's notifiers, one per outbox, and the clients they share."""

    def __init__(self, targets: Targets, policy: DeliveryPolicy) -> None:
        self.targets = targets
        self.policy = policy
        self.owner = Notifier.new_owner()
        self._notifiers: dict[str, Notifier] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def notifier_for(self, sink: object) -> Notifier | None:
        """Return the notifier over ``sink``'s outbox (shared by routes on the same storage), or ``None``."""
        if not isinstance(sink, OutboxCapable):
            return None
        store = sink.outbox_store()
        notifier = self._notifiers.get(store.description)
        if notifier is None:
            notifier = Notifier(Outbox(store, owner=self.owner), self.targets, self.policy)
            self._notifiers[store.description] = notifier
        return notifier

    @property
    def notifiers(self) -> list[Notifier]:
        """Every notifier (one per outbox)."""
        return list(self._notifiers.values())

    def stats(self) -> list[NotifyStats]:
        """Return the stats of every notifier, for the metrics collector."""
        return [n.stats for n in self._notifiers.values()]

    async def start(self) -> None:
        """Resume every outbox: what crashed or stopped servers left is delivered from now on."""
        for notifier in self._notifiers.values():
            self._tasks.append(asyncio.create_task(notifier.run(), name=f"notify {notifier.outbox.description}"))
            log.info("notify_started", outbox=notifier.outbox.description)

    async def drain(self, seconds: float) -> int:
        """Let deliveries in flight finish within ``seconds``; return how many were cut off (they stay pending)."""
        cut = await asyncio.gather(*(n.drain(seconds) for n in self._notifiers.values()))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        return sum(cut)

    async def close(self) -> None:
        """Stop whatever still runs (without waiting) and close the clients."""
        if self._tasks:
            await self.drain(0)
        await self.targets.close()


async def dead_letter_command(
    store: OutboxStore, *, show: bool, retry: Sequence[str], drop: Sequence[str], out: TextIO, err: TextIO
) -> int:
    """``streamproxy notify``: list dead letters as JSON lines, retry or drop them by name (or ``all``).

    Returns the exit status: 0, or 1 if a named dead letter does not exist.
    """
    outbox = Outbox(store, owner="cli")
    status = 0
    if show:
        async for name in outbox.names(DEAD):
            record = await outbox.load(name, DEAD)
            if record is None:
                continue
            dead = record.dead or {}
            row = {
                "name": name,
                "id": record.event.get("id"),
                "event": record.event.get("event"),
                "key": record.event.get("key"),
                "target": record.target,
                "reason": dead.get("reason"),
                "attempts": dead.get("attempts"),
                "created_at": record.created_at,
                "dead_at": dead.get("dead_at"),
            }
            print(json.dumps(row, ensure_ascii=False), file=out)
    for given, act, verb in ((retry, outbox.retry, "retried"), (drop, outbox.drop, "dropped")):
        if list(given) == ["all"]:
            # One page at a time: acting removes the names from dead/, so the next page starts over.
            while page := [name.removeprefix(DEAD) for name in await store.list(DEAD, limit=100)]:
                for name in page:
                    await act(name)
                print(f"{verb} {len(page)} dead letters", file=err)
            continue
        for name in given:
            if await act(name):
                print(f"{verb} {name}", file=err)
            else:
                print(f"streamproxy: no dead letter named {name}", file=err)
                status = 1
    return status
