"""Notifications delivered: a real aiohttp receiver on loopback that verifies every signature.

The policies here use backoffs of tens of milliseconds so an "outage" of a second or two covers
several attempts; the production defaults differ only in scale (docs/configuration.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry, generate_latest

from streamproxy.notify import DeliveryPolicy, Notifier, Outbox, Signer, Targets, recording_stored
from streamproxy.notify.metrics import NotifyCollector
from streamproxy.notify.outbox import DEAD, LEASE, PENDING
from streamproxy.notify.targets import ping
from streamproxy.sinks.memory import MemoryOutbox
from streamproxy.sinks.outbox import OutboxStore
from tests.receiver import Receiver

SECRET = "whsec-0123456789abcdef-test"
FAST = DeliveryPolicy(attempt_timeout=1.0, backoff_base=0.05, backoff_cap=0.2, poll_interval=0.1, lease_margin=1.0)


def event(n: int = 0) -> dict[str, Any]:
    now = datetime.now(UTC)
    return recording_stored(
        key=f"rec/call-{n}.wav",
        url=f"memory:///rec/call-{n}.wav",
        size=100 + n,
        sha256=hashlib.sha256(str(n).encode()).hexdigest(),
        received_at=now,
        stored_at=now,
        fields={"filename": f"call-{n}"},
    )


@pytest.fixture
async def receiver(aiohttp_server: Callable[..., Any]) -> Receiver:
    receiver = Receiver(SECRET)
    server: TestServer = await aiohttp_server(receiver.app(), host="127.0.0.1")
    receiver.url = str(server.make_url("/hook"))
    return receiver


@pytest.fixture
async def targets() -> AsyncIterator[Targets]:
    async with Targets(signer=Signer(SECRET), timeout=FAST.attempt_timeout) as targets:
        yield targets


async def until(condition: Callable[[], bool], within: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def running(notifier: Notifier) -> asyncio.Task[None]:
    return asyncio.create_task(notifier.run())


async def stop(notifier: Notifier, task: asyncio.Task[None]) -> None:
    await notifier.drain(2.0)
    await asyncio.wait_for(task, 5)


async def test_an_event_arrives_signed_and_leaves_the_outbox(receiver: Receiver, targets: Targets) -> None:
    store = MemoryOutbox()
    notifier = Notifier(Outbox(store, owner="a"), targets, FAST)
    sent = event(1)
    assert await notifier.record(sent, [f"webhook:{receiver.url}"])
    await receiver.wait_for(1)
    (got,) = receiver.received
    assert got.event == sent
    assert got.headers["Streamproxy-Event"] == "recording.stored"
    assert got.headers["Streamproxy-Delivery"] == sent["id"]
    assert got.headers["Streamproxy-Signature"].startswith("t=")
    assert receiver.rejected == []
    await until(lambda: notifier.stats.delivered == 1)
    assert store.objects == {}
    await notifier.drain(1)


async def test_receiver_down_then_back_every_event_arrives_with_its_id(receiver: Receiver, targets: Targets) -> None:
    store = MemoryOutbox()
    notifier = Notifier(Outbox(store, owner="a"), targets, FAST)
    task = await running(notifier)
    receiver.status = 503
    sent = [event(n) for n in range(20)]
    for item in sent:
        assert await notifier.record(item, [f"webhook:{receiver.url}"])
    await asyncio.sleep(1.5)  # the outage: the first attempts, then one probe per backoff period
    assert receiver.received == []
    assert notifier.stats.retried >= 20 + 3
    assert len(await store.list(PENDING)) == 20
    receiver.status = 200
    await receiver.wait_for(20)
    assert sorted(receiver.ids()) == sorted(e["id"] for e in sent)
    assert all(d.event == next(e for e in sent if e["id"] == d.event["id"]) for d in receiver.received)
    await until(lambda: not store.objects)
    await stop(notifier, task)
    assert notifier.stats.delivered == 20 and notifier.stats.dead == 0


async def test_a_down_target_gets_probes_not_an_attempt_per_event(receiver: Receiver, targets: Targets) -> None:
    store = MemoryOutbox()
    writer = Outbox(store, owner="w")
    for n in range(100):
        await writer.add(event(n), [f"webhook:{receiver.url}"], now=time.time())
    receiver.status = 503
    notifier = Notifier(Outbox(store, owner="a"), targets, FAST)
    task = await running(notifier)
    await asyncio.sleep(2.0)  # about ten backoff periods of at most 0.2 s
    refused = receiver.refused
    # one attempt per event and period would be ~1,000; the first scan's burst plus a probe per period is far less
    assert 10 < refused < 150, refused
    receiver.status = 200
    started = time.monotonic()
    await receiver.wait_for(100)
    assert time.monotonic() - started < 3  # the backlog follows the first successful probe
    await stop(notifier, task)
    assert max(receiver.attempts.values()) <= refused


@pytest.mark.parametrize("status", [408, 429, 500, 502])
async def test_retryable_answers_are_retried(receiver: Receiver, targets: Targets, status: int) -> None:
    store = MemoryOutbox()
    notifier = Notifier(Outbox(store, owner="a"), targets, FAST)
    task = await running(notifier)
    receiver.status = status
    await notifier.record(event(), [f"webhook:{receiver.url}"])
    await until(lambda: notifier.stats.retried >= 2)
    receiver.status = 200
    await receiver.wait_for(1)
    await stop(notifier, task)
    assert notifier.stats.dead == 0


@pytest.mark.parametrize("status", [400, 404, 410, 422, 301])
async def test_final_answers_become_dead_letters(receiver: Receiver, targets: Targets, status: int) -> None:
    store = MemoryOutbox()
    outbox = Outbox(store, owner="a")
    notifier = Notifier(outbox, targets, FAST)
    receiver.status = status
    sent = event()
    await notifier.record(sent, [f"webhook:{receiver.url}"])
    await until(lambda: notifier.stats.dead == 1)
    assert receiver.attempts[sent["id"]] == 1  # not retried
    assert await store.list(PENDING) == [] and await store.list(LEASE) == []
    (name,) = [n async for n in outbox.names(DEAD)]
    dead = await outbox.load(name, DEAD)
    assert dead is not None and dead.event == sent and str(status) in dead.dead["reason"]  # type: ignore[index]
    # the operator fixes the receiver and retries the dead letter: it arrives with its original id
    receiver.status = 200
    task = await running(notifier)
    assert await outbox.retry(name)
    notifier.wake()
    await receiver.wait_for(1)
    assert receiver.ids() == [sent["id"]]
    await stop(notifier, task)


async def test_an_attempt_is_bounded_by_the_timeout(receiver: Receiver) -> None:
    policy = DeliveryPolicy(
        attempt_timeout=0.3, backoff_base=0.05, backoff_cap=0.1, poll_interval=0.1, lease_margin=1.0
    )
    async with Targets(signer=Signer(SECRET), timeout=5) as targets:
        notifier = Notifier(Outbox(MemoryOutbox(), owner="a"), targets, policy)
        task = await running(notifier)
        receiver.delay = 2.0
        await notifier.record(event(), [f"webhook:{receiver.url}"])
        await until(lambda: notifier.stats.retried >= 1, within=3)
        receiver.delay = 0
        await receiver.wait_for(1)
        await stop(notifier, task)


async def test_an_unreachable_webhook_is_retried(targets: Targets, unused_tcp_port: int) -> None:
    store = MemoryOutbox()
    notifier = Notifier(Outbox(store, owner="a"), targets, FAST)
    await notifier.record(event(), [f"webhook:http://127.0.0.1:{unused_tcp_port}/hook"])
    await until(lambda: notifier.stats.retried == 1)
    assert len(await store.list(PENDING)) == 1 and notifier.stats.dead == 0
    await notifier.drain(1)


async def test_events_older_than_max_age_become_dead_letters(receiver: Receiver, targets: Targets) -> None:
    clock = [1_000_000.0]
    policy = DeliveryPolicy(max_age=60, attempt_timeout=1, backoff_base=0.01, backoff_cap=0.01, poll_interval=0.05)
    store = MemoryOutbox()
    notifier = Notifier(Outbox(store, owner="a"), targets, policy, clock=lambda: clock[0])
    receiver.status = 503
    await notifier.record(event(), [f"webhook:{receiver.url}"])
    await until(lambda: notifier.stats.retried == 1)
    clock[0] += 61
    await notifier.scan()
    await until(lambda: notifier.stats.dead == 1)
    assert await store.list(PENDING) == [] and len(await store.list(DEAD)) == 1
    await notifier.drain(1)


async def test_a_failing_outbox_is_counted_not_raised(targets: Targets) -> None:
    store = MemoryOutbox()
    store.failing = True
    notifier = Notifier(Outbox(store, owner="a"), targets, FAST)
    assert not await notifier.record(event(), ["webhook:http://127.0.0.1:9/hook"])
    assert notifier.stats.outbox_failures == 1


async def test_two_servers_sharing_an_outbox_deliver_each_event_once(
    receiver: Receiver, targets: Targets, outbox_store: OutboxStore
) -> None:
    store = outbox_store
    writer = Outbox(store, owner="crashed")
    sent = [event(n) for n in range(60)]
    for item in sent:  # left by a server that died before delivering anything
        await writer.add(item, [f"webhook:{receiver.url}"], now=time.time())
    one = Notifier(Outbox(store, owner="one"), targets, FAST)
    two = Notifier(Outbox(store, owner="two"), targets, FAST)
    tasks = [await running(one), await running(two)]
    await receiver.wait_for(60)
    await until(lambda: one.stats.delivered + two.stats.delivered == 60)
    await asyncio.sleep(0.5)  # a few more scans: nothing may arrive twice
    for notifier, task in zip((one, two), tasks, strict=True):
        await stop(notifier, task)
    assert sorted(receiver.ids()) == sorted(e["id"] for e in sent)
    assert max(receiver.attempts.values()) == 1
    assert one.stats.delivered > 0 and two.stats.delivered > 0  # both took part
    assert await store.list(PENDING) == [] and await store.list(LEASE) == []


async def test_drain_finishes_in_flight_deliveries_and_leaves_the_rest(receiver: Receiver) -> None:
    policy = DeliveryPolicy(attempt_timeout=5, backoff_base=0.05, backoff_cap=0.1, poll_interval=0.1, lease_margin=1.0)
    async with Targets(signer=Signer(SECRET), timeout=5) as targets:
        store = MemoryOutbox()
        notifier = Notifier(Outbox(store, owner="a"), targets, policy)
        receiver.delay = 0.3
        await notifier.record(event(1), [f"webhook:{receiver.url}"])
        await asyncio.sleep(0.1)
        assert await notifier.drain(2.0) == 0  # finished within the drain
        assert len(receiver.received) == 1

        receiver.delay = 3.0
        await notifier.record(event(2), [f"webhook:{receiver.url}"])  # drained: stays in the outbox
        assert len(await store.list(PENDING)) == 1

        again = Notifier(Outbox(store, owner="b"), targets, policy)
        await again.record(event(3), [f"webhook:{receiver.url}"])
        await asyncio.sleep(0.2)
        assert await again.drain(0.2) == 1  # cut off by the deadline
        assert len(await store.list(PENDING)) == 2
        assert await store.list(LEASE) == []  # handed back at once, not left to expire


async def test_a_scan_holds_one_page_however_many_events_wait(receiver: Receiver, targets: Targets) -> None:
    store = MemoryOutbox()
    largest = [0]
    real_list = store.list

    async def spying_list(prefix: str, *, after: str = "", limit: int = 100) -> list[str]:
        page = await real_list(prefix, after=after, limit=limit)
        largest[0] = max(largest[0], len(page))
        return page

    store.list = spying_list  # type: ignore[method-assign]
    writer = Outbox(store, owner="w")
    for n in range(1000):
        await writer.add(event(n), [f"webhook:{receiver.url}"], now=time.time() + n / 1000)
    notifier = Notifier(Outbox(store, owner="a"), targets, FAST)
    receiver.status = 503
    await notifier.scan()
    assert notifier.stats.pending == 1000
    assert largest[0] == 100
    assert 0 < notifier.peak_active <= FAST.concurrency
    assert notifier.stats.dead == 0
    await notifier.drain(2)


async def test_ping_reaches_a_receiver_signed_and_names_an_unreachable_one(
    receiver: Receiver, targets: Targets, unused_tcp_port: int
) -> None:
    dead_end = f"webhook:http://127.0.0.1:{unused_tcp_port}/hook"
    results = await ping(targets, [f"webhook:{receiver.url}", dead_end, "ftp:nowhere"])
    assert [r.problem is None for r in results] == [True, False, False]
    assert "unreachable" in (results[1].problem or "")
    (got,) = receiver.received
    assert got.event["event"] == "ping" and got.headers["Streamproxy-Event"] == "ping"
    assert receiver.rejected == []


async def test_metrics_sum_the_notifiers(receiver: Receiver, targets: Targets) -> None:
    registry = CollectorRegistry()
    one = Notifier(Outbox(MemoryOutbox(), owner="a"), targets, FAST)
    two = Notifier(Outbox(MemoryOutbox(), owner="b"), targets, FAST)
    registry.register(NotifyCollector(lambda: [one.stats, two.stats]))
    receiver.status = 503
    for notifier in (one, two):
        await notifier.record(event(), [f"webhook:{receiver.url}"])
    await until(lambda: one.stats.retried > 0 and two.stats.retried > 0)
    await asyncio.sleep(0.3)
    await one.scan()
    await two.scan()
    text = generate_latest(registry).decode()
    assert "streamproxy_notify_pending 2.0" in text
    assert "streamproxy_notify_retried_total" in text
    assert registry.get_sample_value("streamproxy_notify_retried_total") == one.stats.retried + two.stats.retried
    assert (registry.get_sample_value("streamproxy_notify_oldest_pending_seconds") or 0) > 0.2
    receiver.status = 200
    await one.scan()
    await two.scan()
    await until(lambda: one.stats.delivered == 1 and two.stats.delivered == 1)
    assert registry.get_sample_value("streamproxy_notify_delivered_total") == 2
    for notifier in (one, two):
        await notifier.drain(1)
