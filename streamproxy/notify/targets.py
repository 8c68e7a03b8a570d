"""Where events go: webhooks over aiohttp's client, SQS queues and SNS topics over aiobotocore.

A target is named by a spec string stored with each pending event, so a restarted server (or
another one sharing the bucket) delivers to the target the event was made for:

* ``webhook:<url>``: an HTTP POST of the event, signed (``streamproxy.notify.signing``);
* ``sqs:<queue url>``: ``SendMessage`` (FIFO queues get the event id as group and deduplication id);
* ``sns:<topic arn>``: ``Publish``.

``send`` returns when the target accepted the event and raises ``DeliveryFailed`` otherwise; its
``final`` says whether retrying can help. The rule of the issue: a 4xx answer other than 408 and
429 is final (the receiver refuses this event and will keep refusing it), so are 3xx redirects
(a moved webhook needs its URL fixed; the dead letter can then be retried); everything else
(5xx, 408, 429, timeouts, refused connections, throttling) is retried. The same rule applies to
the HTTP status of an SQS/SNS error, except that throttling codes are always retried.

SQS and SNS use the same credential chain as S3 (environment, ``~/.aws``, instance roles), the
region in the queue URL or topic ARN, and botocore's ``AWS_ENDPOINT_URL_SQS`` /
``AWS_ENDPOINT_URL_SNS`` for a custom endpoint (or ``endpoint_urls`` here).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from .event import encode_event, ping_event
from .signing import Signer

__all__ = [
    "MIN_SECRET_CHARS",
    "DeliveryFailed",
    "Ping",
    "QueueTarget",
    "Target",
    "Targets",
    "WebhookTarget",
    "check_target",
    "parse_spec",
    "ping",
    "spec_for_url",
]

_RETRIED_4XX = (408, 429)
_THROTTLING = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "TooManyRequestsException",
}
_SQS_REGION = re.compile(r"^https?://sqs[.-]([a-z0-9-]+)\.amazonaws\.com", re.IGNORECASE)


class DeliveryFailed(Exception):
    """An attempt failed; ``final`` when retrying the same event cannot succeed."""

    def __init__(self, message: str, *, final: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.final = final
        self.status = status


def _final_status(status: int) -> bool:
    return 300 <= status < 500 and status not in _RETRIED_4XX


MIN_SECRET_CHARS = 16  # the rule of auth tokens: long enough not to be guessed, short enough to type


def check_target(spec: str) -> str | None:
    """Return why ``spec`` is not a usable target, or ``None`` (for config validation; never echoes secrets)."""
    try:
        kind, address = parse_spec(spec)
    except ValueError as exc:
        return str(exc)
    if kind == "webhook":
        parts = urlsplit(address)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "--notify-url must be an http:// or https:// URL with a host"
    elif kind == "sqs" and not address.startswith(("https://", "http://")):
        return "--notify-sqs must be a queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)"
    elif kind == "sns" and not address.startswith("arn:"):
        return "--notify-sns must be a topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"
    return None


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``kind:address`` and check the kind (``ValueError`` for anything else)."""
    kind, sep, address = spec.partition(":")
    if not sep or kind not in ("webhook", "sqs", "sns") or not address:
        raise ValueError(f"{spec!r} is not a notification target (webhook:URL, sqs:QUEUE_URL or sns:TOPIC_ARN)")
    return kind, address


def spec_for_url(url: str) -> str:
    """Return the spec of a webhook URL."""
    return f"webhook:{url}"


class Target(Protocol):
    """One destination of events."""

    spec: str

    async def send(self, event: Mapping[str, Any]) -> None:
        """Deliver ``event`` once, or raise ``DeliveryFailed``."""


class WebhookTarget:
    """POST the event to ``url`` with the signature headers; 2xx is success."""

    def __init__(self, url: str, session: aiohttp.ClientSession, signer: Signer | None) -> None:
        self.url = url
        self.spec = spec_for_url(url)
        self._session = session
        self._signer = signer

    async def send(self, event: Mapping[str, Any]) -> None:
        """One POST; redirects are not followed (a signed body must go where it was configured to go)."""
        body = encode_event(event)
        if self._signer is not None:
            headers = self._signer.headers(body, event=str(event["event"]), event_id=str(event["id"]))
        else:
            headers = {"Content-Type": "application/json"}
        try:
            async with self._session.post(self.url, data=body, headers=headers, allow_redirects=False) as response:
                await response.read()  # let the connection be reused
                if 200 <= response.status < 300:
                    return
                raise DeliveryFailed(
                    f"the webhook answered {response.status}",
                    final=_final_status(response.status),
                    status=response.status,
                )
        except aiohttp.ClientError as exc:
            raise DeliveryFailed(f"the webhook is unreachable ({type(exc).__name__})", final=False) from None


class QueueTarget:
    """SendMessage to an SQS queue, or Publish to an SNS topic."""

    def __init__(self, kind: str, address: str, client: Any) -> None:
        self.kind = kind
        self.address = address
        self.spec = f"{kind}:{address}"
        self._aws = client

    async def send(self, event: Mapping[str, Any]) -> None:
        """One call, with the event type and id as message attributes (receivers may filter on them)."""
        body = encode_event(event).decode("utf-8")
        attributes = {
            "streamproxy-event": {"DataType": "String", "StringValue": str(event["event"])},
            "streamproxy-delivery": {"DataType": "String", "StringValue": str(event["id"])},
        }
        try:
            if self.kind == "sqs":
                args: dict[str, Any] = {"QueueUrl": self.address, "MessageBody": body, "MessageAttributes": attributes}
                if self.address.endswith(".fifo"):
                    args.update(MessageGroupId="streamproxy", MessageDeduplicationId=str(event["id"]))
                await self._aws.send_message(**args)
            else:
                args = {"TopicArn": self.address, "Message": body, "MessageAttributes": attributes}
                if self.address.endswith(".fifo"):
                    args.update(MessageGroupId="streamproxy", MessageDeduplicationId=str(event["id"]))
                await self._aws.publish(**args)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500))
            final = _final_status(status) and code not in _THROTTLING
            raise DeliveryFailed(f"{self.kind.upper()} answered {status} {code}", final=final, status=status) from None
        except BotoCoreError as exc:
            # Connection errors, timeouts, missing credentials: all may heal, none is the event's fault.
            raise DeliveryFailed(f"{self.kind.upper()} is unreachable ({type(exc).__name__})", final=False) from None


def _region_of(kind: str, address: str, default: str | None) -> str | None:
    if kind == "sns" and address.startswith("arn:"):
        parts = address.split(":")
        return parts[3] if len(parts) > 3 and parts[3] else default
    match = _SQS_REGION.match(address)
    return match.group(1) if match else default


class Targets:
    """Owns the HTTP session and the AWS clients, and gives a ``Target`` for each spec (cached).

    Use it as an async context manager: the clients close on exit.
    """

    def __init__(
        self,
        *,
        signer: Signer | None,
        timeout: float,
        region: str | None = None,
        endpoint_urls: Mapping[str, str] | None = None,
        ca_bundle: str | None = None,
    ) -> None:
        self.signer = signer
        self.timeout = timeout
        self.region = region
        self.endpoint_urls = dict(endpoint_urls or {})
        self.ca_bundle = ca_bundle
        self._stack = AsyncExitStack()
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[tuple[str, str | None], Any] = {}
        self._targets: dict[str, Target] = {}

    async def __aenter__(self) -> Targets:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session and the AWS clients."""
        self._targets.clear()
        self._clients.clear()
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        await self._stack.aclose()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # The attempt timeout is applied around the whole attempt by the deliverer too; this one
            # also ends a connection that hangs after the deliverer has given up on it.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def _queue_client(self, service: str, region: str | None) -> Any:
        client = self._clients.get((service, region))
        if client is None:
            config = AioConfig(
                connect_timeout=min(10.0, self.timeout),
                read_timeout=self.timeout,
                # One try per attempt: the outbox's backoff does the retrying, durably.
                retries={"total_max_attempts": 1, "mode": "standard"},
            )
            client = await self._stack.enter_async_context(
                get_session().create_client(
                    service,
                    region_name=region,
                    endpoint_url=self.endpoint_urls.get(service),
                    config=config,
                    verify=self.ca_bundle,
                )
            )
            self._clients[(service, region)] = client
        return client

    async def get(self, spec: str) -> Target:
        """Return the target named by ``spec`` (``ValueError`` if it names none)."""
        target = self._targets.get(spec)
        if target is None:
            kind, address = parse_spec(spec)
            if kind == "webhook":
                target = WebhookTarget(address, self._http(), self.signer)
            else:
                client = await self._queue_client(kind, _region_of(kind, address, self.region))
                target = QueueTarget(kind, address, client)
            self._targets[spec] = target
        return target


@dataclass(frozen=True)
class Ping:
    """What one target made of a ``ping`` event: ``problem`` is ``None`` when it accepted it."""

    target: str
    problem: str | None


async def ping(targets: Targets, specs: Sequence[str]) -> list[Ping]:
    """Send a signed ``ping`` event to each target once, each bounded by the targets' timeout."""
    results: list[Ping] = []
    for spec in specs:
        try:
            target = await targets.get(spec)
            async with asyncio.timeout(targets.timeout):
                await target.send(ping_event())
        except DeliveryFailed as exc:
            results.append(Ping(spec, exc.message))
        except TimeoutError:
            results.append(Ping(spec, f"no answer within {targets.timeout:g} seconds"))
        except ValueError as exc:
            results.append(Ping(spec, str(exc)))
        else:
            results.append(Ping(spec, None))
    return results
