"""SQS and SNS targets through moto's server: the same event, the same id, as the webhook gets."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from streamproxy.notify import DeliveryPolicy, Notifier, Outbox, Targets, recording_stored
from streamproxy.notify.outbox import DEAD, PENDING
from streamproxy.sinks.memory import MemoryOutbox
from tests.helpers import queue_and_topic

FAST = DeliveryPolicy(attempt_timeout=5.0, backoff_base=0.05, backoff_cap=0.2, poll_interval=0.1)


def event() -> dict[str, Any]:
    now = datetime.now(UTC)
    return recording_stored(
        key="rec/call.wav",
        url="s3://b/rec/call.wav",
        bucket="b",
        size=10,
        sha256=hashlib.sha256(b"call").hexdigest(),
        received_at=now,
        stored_at=now,
        fields={"filename": "call"},
    )


@pytest.fixture
def sqs(moto_endpoint: str) -> Any:
    return boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def sns(moto_endpoint: str) -> Any:
    return boto3.client("sns", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
async def targets(moto_endpoint: str) -> AsyncIterator[Targets]:
    async with Targets(
        signer=None, timeout=5, region="us-east-1", endpoint_urls={"sqs": moto_endpoint, "sns": moto_endpoint}
    ) as targets:
        yield targets


def receive(sqs: Any, queue_url: str, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    waited = 0.0
    while len(messages) < count and waited < timeout:
        answer = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
        )
        messages += answer.get("Messages", [])
        waited += 1
    return messages


async def delivered(notifier: Notifier, count: int) -> None:
    for _ in range(500):
        if notifier.stats.delivered + notifier.stats.dead >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not delivered")


async def test_sqs_and_sns_receive_the_same_event(sqs: Any, sns: Any, targets: Targets) -> None:
    queue, fanout, topic = queue_and_topic(sqs, sns, "direct")

    store = MemoryOutbox()
    notifier = Notifier(Outbox(store, owner="a"), targets, FAST)
    sent = event()
    assert await notifier.record(sent, [f"sqs:{queue}", f"sns:{topic}"])
    await delivered(notifier, 2)
    assert notifier.stats.delivered == 2, notifier.stats
    assert await store.list(PENDING) == []

    (direct,) = await asyncio.to_thread(receive, sqs, queue, 1)
    assert json.loads(direct["Body"]) == sent
    assert direct["MessageAttributes"]["streamproxy-delivery"]["StringValue"] == sent["id"]
    assert direct["MessageAttributes"]["streamproxy-event"]["StringValue"] == "recording.stored"

    (through_sns,) = await asyncio.to_thread(receive, sqs, fanout, 1)
    envelope = json.loads(through_sns["Body"])  # SNS wraps the message in its own envelope
    assert envelope["TopicArn"] == topic
    assert json.loads(envelope["Message"]) == sent


async def test_a_fifo_queue_gets_the_event_id_as_deduplication_id(sqs: Any, targets: Targets) -> None:
    queue = sqs.create_queue(QueueName=f"fifo-{uuid.uuid4().hex[:12]}.fifo", Attributes={"FifoQueue": "true"})[
        "QueueUrl"
    ]
    notifier = Notifier(Outbox(MemoryOutbox(), owner="a"), targets, FAST)
    sent = event()
    await notifier.record(sent, [f"sqs:{queue}"])
    await delivered(notifier, 1)
    (message,) = await asyncio.to_thread(receive, sqs, queue, 1)
    assert json.loads(message["Body"])["id"] == sent["id"]


async def test_a_missing_queue_is_a_dead_letter(moto_endpoint: str, targets: Targets) -> None:
    store = MemoryOutbox()
    notifier = Notifier(Outbox(store, owner="a"), targets, FAST)
    await notifier.record(event(), [f"sqs:{moto_endpoint}/123456789012/no-such-queue-{uuid.uuid4().hex}"])
    await delivered(notifier, 1)
    assert notifier.stats.dead == 1
    assert len(await store.list(DEAD)) == 1
