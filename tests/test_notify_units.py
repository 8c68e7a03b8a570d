"""Notifications, below the HTTP layer: event schema, signatures, the outbox stores and their leases."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from streamproxy.errors import BadRequest
from streamproxy.notify import Signer, encode_event, ping_event, recording_stored, signature, verify
from streamproxy.notify.outbox import DEAD, LEASE, PENDING, Lease, Outbox, target_key, target_key_of
from streamproxy.redact import REDACTED, scrub
from streamproxy.sinks.fs import FileSink
from streamproxy.sinks.memory import MemorySink
from streamproxy.sinks.outbox import OUTBOX_DIR, OutboxCapable, OutboxStore
from streamproxy.wiring import build_sink
from tests.helpers import s3_settings

SECRET = "whsec-0123456789abcdef-test"
DOC_URI = "urn:streamproxy:openapi"
DOC: dict[str, Any] = json.loads(files("streamproxy").joinpath("openapi.json").read_text("utf-8"))
REGISTRY: Registry[Any] = Registry().with_resource(
    DOC_URI, Resource.from_contents(DOC, default_specification=DRAFT202012)
)


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"{DOC_URI}#/components/schemas/{name}"}, registry=REGISTRY)


def stored_event(**overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    args: dict[str, Any] = {
        "key": "rec/call-7.wav",
        "url": "file:///srv/rec/call-7.wav",
        "size": 48044,
        "sha256": hashlib.sha256(b"x").hexdigest(),
        "received_at": now - timedelta(seconds=1),
        "stored_at": now,
        "fields": {"filename": "call-7", "caller": "+4930123"},
        "content_type": "audio/wav",
        "client_address": "127.0.0.1",
        "request_id": "abc123",
    }
    args.update(overrides)
    return recording_stored(**args)


# --- the event and its schema ----------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {
            "bucket": "b",
            "checksum": {"algorithm": "md5", "type": "FULL_OBJECT", "value": "1B2M2Y8AsgTpgAmY7PhCfg=="},
            "manifest": "rec/x.json",
        },
        {
            "audio": {
                "format": "pcm",
                "channels": 1,
                "sample_rate": 8000,
                "bits_per_sample": 16,
                "duration_seconds": 1.5,
            },
            "fields": {},
            "client_address": None,
            "request_id": None,
        },
    ],
)
def test_events_validate_against_the_published_schema(overrides: dict[str, Any]) -> None:
    event = stored_event(**overrides)
    validator("RecordingStoredEvent").validate(json.loads(encode_event(event)))
    assert event["event"] == "recording.stored"
    assert event["id"].startswith("evt_") and len(event["id"]) == 36


def test_the_schema_refuses_what_is_not_an_event() -> None:
    check = validator("RecordingStoredEvent")
    event = stored_event()
    for broken in (
        {k: v for k, v in event.items() if k != "id"},
        {**event, "size": "48044"},
        {**event, "received_at": "yesterday"},
        {**event, "surprise": 1},
    ):
        assert list(check.iter_errors(broken)), broken


def test_ping_validates_and_ids_are_unique() -> None:
    ping = ping_event()
    validator("PingEvent").validate(ping)
    assert len({stored_event()["id"] for _ in range(100)}) == 100


def test_the_webhooks_section_points_at_the_schemas() -> None:
    hooks = DOC["webhooks"]
    body = hooks["recording.stored"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/RecordingStoredEvent"}
    assert {p["name"] for p in hooks["recording.stored"]["post"]["parameters"]} == {
        "Streamproxy-Event",
        "Streamproxy-Delivery",
        "Streamproxy-Signature",
    }


# --- signatures --------------------------------------------------------------------------------


def test_signature_is_the_hmac_of_timestamp_dot_body() -> None:
    body = encode_event(stored_event())
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature(SECRET, body, 1700000000) == f"t=1700000000,v1={expected}"


def test_verify_accepts_fresh_and_refuses_tampered_old_or_foreign() -> None:
    body = encode_event(stored_event())
    now = 1_800_000_000.0
    header = Signer(SECRET).headers(body, event="recording.stored", event_id="evt_x", now=now)["Streamproxy-Signature"]
    assert verify(SECRET, header, body, now=now + 10)
    assert not verify(SECRET, header, body + b" ", now=now)
    assert not verify(SECRET, header, body, now=now + 301)  # a replay five minutes later
    assert not verify("another-secret-0123456789", header, body, now=now)
    assert not verify(SECRET, "v1=" + header.split("v1=")[1], body, now=now)
    assert not verify(SECRET, "", body, now=now)


def test_headers_name_the_event_and_the_delivery() -> None:
    headers = Signer(SECRET).headers(b"{}", event="recording.stored", event_id="evt_1", now=5)
    assert headers["Streamproxy-Event"] == "recording.stored"
    assert headers["Streamproxy-Delivery"] == "evt_1"
    assert headers["Content-Type"] == "application/json"


def test_the_secret_never_reaches_a_log_line() -> None:
    signer = Signer(SECRET)
    assert SECRET not in repr(signer)
    assert scrub(f"configured with {SECRET}") == f"configured with {REDACTED}"


# --- the outbox stores (a contract over both implementations) ----------------------------------


async def test_s3_outbox_objects_sit_under_the_prefix(moto_endpoint: str, bucket: str, s3: Any) -> None:
    sink = build_sink(s3_settings(moto_endpoint, bucket, prefix="calls/"))
    await sink.start()
    try:
        assert isinstance(sink, OutboxCapable)
        store = sink.outbox_store()
        await store.put("pending/a.json", b"1")
        assert await store.put_new("lease/a.json", b"1")
        assert not await store.put_new("lease/a.json", b"2")
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
        assert keys == [f"calls/{OUTBOX_DIR}/lease/a.json", f"calls/{OUTBOX_DIR}/pending/a.json"]
        assert await store.get("lease/a.json") == b"1"
    finally:
        await sink.close()


async def test_store_put_get_delete(outbox_store: OutboxStore) -> None:
    assert await outbox_store.get("pending/a.json") is None
    await outbox_store.put("pending/a.json", b"one")
    await outbox_store.put("pending/a.json", b"two")
    assert await outbox_store.get("pending/a.json") == b"two"
    await outbox_store.delete("pending/a.json")
    await outbox_store.delete("pending/a.json")  # missing is fine
    assert await outbox_store.get("pending/a.json") is None


async def test_store_put_new_is_exclusive(outbox_store: OutboxStore) -> None:
    assert await outbox_store.put_new("lease/a", b"mine")
    assert not await outbox_store.put_new("lease/a", b"yours")
    assert await outbox_store.get("lease/a") == b"mine"


async def test_store_lists_in_order_page_by_page(outbox_store: OutboxStore) -> None:
    names = [f"pending/{i:05d}.json" for i in range(250)]
    for name in reversed(names):
        await outbox_store.put(name, b"x")
    await outbox_store.put("lease/00001.json", b"x")
    await outbox_store.put("dead/00002.json", b"x")
    seen: list[str] = []
    after = ""
    while True:
        page = await outbox_store.list("pending/", after=after, limit=100)
        assert len(page) <= 100
        seen += page
        if len(page) < 100:
            break
        after = page[-1]
    assert seen == names
    assert await outbox_store.list("lease/") == ["lease/00001.json"]
    assert await outbox_store.list("nothing/") == []


@pytest.mark.parametrize("name", ["../escape", "pending/../../x", ".hidden", "pending/.tmp", "/abs", "a//b", ""])
async def test_store_refuses_names_that_could_leave_the_outbox(outbox_store: OutboxStore, name: str) -> None:
    with pytest.raises(BadRequest):
        await outbox_store.put(name, b"x")


async def test_file_outbox_lives_beside_the_recordings_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = FileSink(tmp_path).outbox_store()
    await store.put("pending/a.json", b"1")
    assert await store.put_new("lease/a.json", b"1")
    assert not await store.put_new("lease/a.json", b"2")
    found = await asyncio.to_thread(lambda: [p for p in tmp_path.rglob("*") if p.is_file()])
    files_left = sorted(p.relative_to(tmp_path).as_posix() for p in found)
    assert files_left == [f"{OUTBOX_DIR}/lease/a.json", f"{OUTBOX_DIR}/pending/a.json"]


# --- the outbox: records, leases, dead letters --------------------------------------------------


async def test_outbox_writes_one_record_per_target_oldest_first() -> None:
    outbox = Outbox(MemorySink().outbox_store(), owner="a")
    first = await outbox.add(stored_event(), ["webhook:http://a/", "sqs:http://q"], now=1000.0)
    second = await outbox.add(stored_event(), ["webhook:http://a/"], now=1001.0)
    names = [name async for name in outbox.names(page=2)]
    assert names == [*sorted(r.name for r in first), second[0].name]  # oldest first
    assert [target_key_of(r.name) for r in first] == [target_key("webhook:http://a/"), target_key("sqs:http://q")]
    loaded = await outbox.load(first[1].name)
    assert loaded is not None and loaded.target == "sqs:http://q" and loaded.event == first[1].event
    again = await outbox.add(stored_event(), ["webhook:http://a/", "webhook:http://a/"], now=1002.0)
    assert len(again) == 1  # a target named twice gets the event once


async def test_lease_is_exclusive_until_it_expires_and_keeps_the_attempt_count() -> None:
    store = MemorySink().outbox_store()
    a, b = Outbox(store, owner="a"), Outbox(store, owner="b")
    (record,) = await a.add(stored_event(), ["webhook:http://x/"], now=100.0)
    lease = await a.acquire(record.name, now=100.0, seconds=10)
    assert isinstance(lease, Lease) and lease.owner == "a"
    assert await b.acquire(record.name, now=105.0, seconds=10) == 110.0
    deferred = await a.defer(lease, until=130.0, error="503")
    assert await b.acquire(record.name, now=120.0, seconds=10) == 130.0
    taken = await b.acquire(record.name, now=131.0, seconds=10)
    assert isinstance(taken, Lease) and taken.owner == "b" and taken.attempts == deferred.attempts == 1
    await b.delivered(taken)
    assert await store.list(PENDING) == [] and await store.list(LEASE) == []


async def test_dead_letters_can_be_retried_or_dropped() -> None:
    store = MemorySink().outbox_store()
    outbox = Outbox(store, owner="a")
    one, two = await outbox.add(stored_event(), ["webhook:http://x/", "webhook:http://y/"], now=1.0)
    for record in (one, two):
        lease = await outbox.acquire(record.name, now=2.0, seconds=10)
        assert isinstance(lease, Lease)
        await outbox.bury(lease, record, reason="the webhook answered 410", dead_at=3.0)
    assert await store.list(PENDING) == []
    dead = await outbox.load(one.name, DEAD)
    assert dead is not None and dead.dead == {"reason": "the webhook answered 410", "attempts": 1, "dead_at": 3.0}
    assert await outbox.retry(one.name)
    assert await outbox.drop(two.name)
    assert not await outbox.drop(two.name)
    assert [n async for n in outbox.names()] == [one.name]
    assert [n async for n in outbox.names(DEAD)] == []
    revived = await outbox.load(one.name)
    assert revived is not None and revived.dead is None and revived.event["id"] == one.event["id"]


async def test_orphan_leases_are_forgotten_once_expired() -> None:
    store = MemorySink().outbox_store()
    outbox = Outbox(store, owner="a")
    (record,) = await outbox.add(stored_event(), ["webhook:http://x/"], now=1.0)
    lease = await outbox.acquire(record.name, now=1.0, seconds=10)
    assert isinstance(lease, Lease)
    await store.delete(PENDING + record.name)  # a server stopped between its two deletes
    assert await outbox.forget_orphan_leases(now=5.0) == 0  # not expired yet
    assert await outbox.forget_orphan_leases(now=20.0) == 1
    assert await store.list(LEASE) == []
