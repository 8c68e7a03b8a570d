"""Delivering the outbox: a background task with exponential backoff, jitter, leases and a drain.

``Notifier`` is what the rest of streamproxy sees:

* ``record(event, targets)`` writes the event into the outbox (one object per target) and returns
  once that is durable; the upload's answer is sent after it. A failed write is logged
  (``notify_outbox_failed``), counted (``NotifyStats.outbox_failures``) and swallowed: the
  recording is stored, so the answer stays ``success``.
* Right after, the event is delivered in the background ("fast path"): this server creates the
  lease at once and tries each target. Under load the fast path is skipped once ``concurrency``
  deliveries are in flight; the scan picks those events up.
* ``run()`` scans ``pending/`` page by page every ``poll_interval`` (and when woken): events of
  crashed servers, events whose backoff is over, events retried with ``streamproxy notify``. At most
  ``concurrency`` deliveries run at once, and a scan holds one page of names, so memory does not
  grow with the number of pending events.
* ``drain(seconds)`` stops scanning and lets deliveries in flight finish for up to ``seconds``;
  the rest are cancelled and their leases released, so whatever remains stays in the outbox for
  the next server.

A target whose attempt failed is marked down: until it answers again it gets one probe per
backoff period (the first due event), not one attempt per pending event, and the backlog follows
at once when the probe succeeds.

Each attempt is bounded by ``attempt_timeout``. After the n-th failure the next attempt waits
``min(backoff_cap, backoff_base * 2**(n-1))``, the upper half of it drawn at random (jitter, so a
recovered receiver is not hit by every server at the same instant). A final failure (see
``streamproxy.notify.targets``) or an event older than ``max_age`` becomes a dead letter.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from .outbox import Lease, Outbox, Record, created_at_of, target_key, target_key_of
from .targets import DeliveryFailed, Targets

__all__ = ["DeliveryPolicy", "Notifier", "NotifyStats"]

log = structlog.get_logger("streamproxy.notify")

_HINTS = 10_000  # "not before" times remembered per event; beyond that the scan asks the store


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard and how long to try."""

    max_age: float = 7 * 24 * 3600.0
    attempt_timeout: float = 10.0
    backoff_base: float = 1.0
    backoff_cap: float = 3600.0
    poll_interval: float = 10.0
    concurrency: int = 16
    # A lease outlives its attempt by this much (default: one more attempt timeout), so an attempt
    # that overruns a little keeps it, and a server killed mid-attempt delays its event only so long.
    lease_margin: float | None = None

    @property
    def lease_seconds(self) -> float:
        """How long a lease for one attempt lasts."""
        margin = self.attempt_timeout if self.lease_margin is None else self.lease_margin
        return self.attempt_timeout + margin

    def backoff(self, attempts: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the ``attempts``-th failure: exponential, capped, the upper half jittered."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** max(0, attempts - 1))
        return float(ceiling / 2 + rng() * ceiling / 2)


@dataclass
class _Down:
    """A target whose last attempt failed: only one probe goes to it until it answers again.

    Without this, a receiver that is down for hours gets one attempt per pending event per
    backoff period; with it, one attempt per backoff period in all, and the whole backlog
    follows as soon as the probe succeeds.
    """

    failures: int = 0
    until: float = 0.0  # the next probe may start then
    probing: bool = False


@dataclass
class NotifyStats:
    """Counters and gauges for ``/metrics`` (``streamproxy.metrics`` reads them at scrape time)."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0
    outbox_failures: int = 0
    pending: int = 0
    oldest_pending_seconds: float = 0.0
    scans: int = 0


class Notifier:
    """Writes events into the outbox and delivers them (see the module docstring)."""

    def __init__(
        self,
        outbox: Outbox,
        targets: Targets,
        policy: DeliveryPolicy | None = None,
        *,
        stats: NotifyStats | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        self.targets = targets
        self.policy = policy or DeliveryPolicy()
        self.stats = stats or NotifyStats()
        self._clock = clock
        self._slots = asyncio.Semaphore(self.policy.concurrency)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._not_before: dict[str, float] = {}
        self._active = 0
        self.peak_active = 0  # most deliveries that ever ran at once (bounded by ``concurrency``)
        self._down: dict[str, _Down] = {}  # by target key: targets that failed their last attempt
        # Names a task of this process is working on: a later scan must not race it for the lease
        # (two tasks replacing the same expired lease could both believe they hold it).
        self._busy: set[str] = set()

    @staticmethod
    def new_owner() -> str:
        """Return a fresh identity for this server's leases."""
        return f"{uuid.uuid4().hex[:12]}"

    # --- writing ---------------------------------------------------------------------------------

    async def record(self, event: Mapping[str, Any], targets: Sequence[str]) -> bool:
        """Put ``event`` into the outbox for each target, then start delivering it; ``False`` if the write failed."""
        if not targets:
            return True
        try:
            records = await self.outbox.add(event, targets, now=self._clock())
        except Exception as exc:
            # The recording is stored and the client gets its success; this is the one place an
            # event can be lost, so it is loud: an error line and a counter that alerts watch.
            self.stats.outbox_failures += 1
            log.error(
                "notify_outbox_failed",
                event_id=event.get("id"),
                key=event.get("key"),
                outbox=self.outbox.description,
                error=str(exc) or type(exc).__name__,
            )
            return False
        for record in records:
            if self._stopping or len(self._in_flight) >= self.policy.concurrency:
                self._wake.set()  # leave it to the scan
                continue
            if target_key(record.target) in self._down:
                continue  # the target is down: the scan sends a probe, then the backlog
            self._busy.add(record.name)
            self._spawn(self._fast(record))
        return True

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _fast(self, record: Record) -> None:
        try:
            async with self._slots:
                try:
                    got = await self.outbox.acquire(record.name, now=self._clock(), seconds=self.policy.lease_seconds)
                except Exception as exc:
                    log.warning("notify_lease_failed", name=record.name, error=str(exc) or type(exc).__name__)
                    return
                if isinstance(got, Lease):
                    await self._attempt(got, record)
        finally:
            self._busy.discard(record.name)

    # --- scanning --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Scan and deliver until ``drain`` is called; storage errors only delay the next scan."""
        while not self._stopping:
            self._wake.clear()  # before the scan: a wake during the scan means "scan again"
            delay = self.policy.poll_interval
            try:
                due = await self.scan()
                delay = max(0.0, min(delay, due - self._clock()))
            except Exception as exc:
                log.warning("notify_scan_failed", outbox=self.outbox.description, error=str(exc) or type(exc).__name__)
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def scan(self) -> float:
        """Deliver every pending event that is due; return when the next one falls due (at most a poll away)."""
        now = self._clock()
        next_due = now + self.policy.poll_interval
        count, oldest = 0, None
        async for name in self.outbox.names():
            count += 1
            oldest = oldest if oldest is not None else created_at_of(name)
            if self._stopping or name in self._busy:
                continue  # keep counting; deliver nothing now, or leave it to the task that has it
            hint = self._not_before.get(name)
            if hint is not None and hint > now:
                next_due = min(next_due, hint)
                continue
            down = self._down.get(target_key_of(name))
            if down is not None and (down.probing or down.until > now):
                next_due = min(next_due, down.until if not down.probing else next_due)
                continue
            if down is not None:
                down.probing = True  # this event is the probe; the others wait for its outcome
            # The lease is taken inside the task: storage round trips overlap, up to ``concurrency``.
            await self._slots.acquire()
            self._busy.add(name)
            self._spawn(self._scanned(name, now))
        self.stats.pending = count
        # Hints past their time (and those of events other servers delivered) are dropped each scan.
        self._not_before = {name: until for name, until in self._not_before.items() if until > now}
        self.stats.oldest_pending_seconds = max(0.0, now - oldest) if oldest is not None else 0.0
        self.stats.scans += 1
        if self.stats.scans % 10 == 1:
            await self.outbox.forget_orphan_leases(now=now)
        return next_due

    async def _scanned(self, name: str, now: float) -> None:
        try:
            got = await self.outbox.acquire(name, now=now, seconds=self.policy.lease_seconds)
            if not isinstance(got, Lease):  # another server delivers it, or it backs off
                self._remember(name, got)
                down = self._down.get(target_key_of(name))
                if down is not None:
                    down.probing = False  # not the probe after all
                return
            record = await self.outbox.load(name)
            if record is None:  # delivered by another server between the listing and the lease
                await self.outbox.release(got)
                return
            await self._attempt(got, record)
        except Exception as exc:
            log.warning("notify_scan_item_failed", name=name, error=str(exc) or type(exc).__name__)
        finally:
            self._busy.discard(name)
            self._slots.release()

    def _remember(self, name: str, not_before: float) -> None:
        if name in self._not_before or len(self._not_before) < _HINTS:
            self._not_before[name] = not_before

    # --- one attempt -----------------------------------------------------------------------------

    async def _attempt(self, lease: Lease, record: Record) -> None:
        self._active += 1
        self.peak_active = max(self.peak_active, self._active)
        try:
            await self._try(lease, record)
        finally:
            self._active -= 1
            down = self._down.get(target_key(record.target))
            if down is not None:
                down.probing = False

    def _target_answered(self, target: str) -> None:
        """Mark the target up (it took an event, or refused one for good), so its backlog follows now."""
        if self._down.pop(target_key(target), None) is not None:
            log.info("notify_target_up", target=target)
            self._wake.set()

    def _target_failed(self, target: str) -> None:
        down = self._down.setdefault(target_key(target), _Down())
        down.failures += 1
        down.until = self._clock() + self.policy.backoff(down.failures)

    async def _try(self, lease: Lease, record: Record) -> None:
        event_id = record.event.get("id")
        now = self._clock()
        try:
            if now - record.created_at > self.policy.max_age:
                await self._bury(
                    lease, record, f"not delivered within {self.policy.max_age:g} seconds", lease.last_error
                )
                return
            try:
                target = await self.targets.get(record.target)
                async with asyncio.timeout(self.policy.attempt_timeout):
                    await target.send(record.event)
            except TimeoutError:
                failure = DeliveryFailed(f"no answer within {self.policy.attempt_timeout:g} seconds", final=False)
            except ValueError as exc:
                failure = DeliveryFailed(str(exc), final=True)
            except DeliveryFailed as exc:
                failure = exc
            else:
                self._target_answered(record.target)
                await self.outbox.delivered(lease)
                self._not_before.pop(lease.name, None)
                self.stats.delivered += 1
                log.info("notify_delivered", event_id=event_id, target=record.target, attempts=lease.attempts + 1)
                return
            if failure.final:
                self._target_answered(record.target)
                await self._bury(lease, record, failure.message, failure.message)
                return
            self._target_failed(record.target)
            delay = self.policy.backoff(lease.attempts + 1)
            deferred = await self.outbox.defer(lease, until=self._clock() + delay, error=failure.message)
            self._remember(lease.name, deferred.until)
            self.stats.retried += 1
            log.warning(
                "notify_retry",
                event_id=event_id,
                target=record.target,
                attempts=deferred.attempts,
                retry_in_s=round(delay, 3),
                error=failure.message,
            )
        except asyncio.CancelledError:
            # The drain deadline: hand the event back at once instead of leaving the lease to expire.
            await asyncio.shield(self._release_quietly(lease))
            raise
        except Exception as exc:
            # The outbox itself failed; the lease expires and the event is tried again.
            log.warning("notify_outbox_error", name=lease.name, error=str(exc) or type(exc).__name__)

    async def _bury(self, lease: Lease, record: Record, reason: str, last_error: str | None) -> None:
        await self.outbox.bury(lease, record, reason=reason, dead_at=self._clock())
        self._not_before.pop(lease.name, None)
        self.stats.dead += 1
        log.error(
            "notify_dead_letter",
            event_id=record.event.get("id"),
            target=record.target,
            name=record.name,
            reason=reason,
            last_error=last_error,
        )

    async def _release_quietly(self, lease: Lease) -> None:
        try:
            await self.outbox.release(lease)
        except Exception as exc:
            log.warning("notify_release_failed", name=lease.name, error=str(exc) or type(exc).__name__)

    # --- stopping --------------------------------------------------------------------------------

    def wake(self) -> None:
        """Scan now (an event was retried, or the fast path was skipped)."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        """Deliveries running now."""
        return len(self._in_flight)

    async def drain(self, seconds: float) -> int:
        """Stop scanning, let deliveries finish within ``seconds``, cancel the rest; return how many were cut off."""
        self._stopping = True
        self._wake.set()
        pending = set(self._in_flight)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return len(pending)
