"""Shared fixtures: no real AWS, one moto server on loopback, apps wired to S3, files or memory."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from moto.server import ThreadedMotoServer

from streamproxy.app import make_app
from streamproxy.config import Settings
from streamproxy.sinks import Sink
from streamproxy.sinks.fs import FileSink
from streamproxy.sinks.memory import MemorySink
from streamproxy.sinks.outbox import OutboxCapable, OutboxStore
from streamproxy.wiring import build_sink
from tests.helpers import TrackedMemorySink, s3_settings
from tests.s3_proxy import S3Proxy


@pytest.fixture(autouse=True)
def no_real_aws(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Strip every AWS_* and STREAMPROXY_* variable so no test can reach a real account or leak config."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "STREAMPROXY_")):
            monkeypatch.delenv(name)
    empty = tmp_path_factory.getbasetemp() / "no-aws-config"
    empty.touch()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never probe 169.254.169.254
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto S3 server on a free loopback port for the whole session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint: str, no_real_aws: None) -> Any:
    """A plain boto3 client for arranging and asserting on bucket contents."""
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3: Any) -> str:
    """A fresh bucket per test (moto's state is process-global)."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def locked_bucket(s3: Any) -> str:
    """A bucket created with Object Lock enabled (which also turns versioning on)."""
    name = f"lock-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


@pytest.fixture
def memory_sink() -> TrackedMemorySink:
    """An in-memory sink for storage-neutral HTTP cases (pass it to ``client_for``)."""
    return TrackedMemorySink()


@pytest.fixture(params=["file", "memory", "s3"])
async def outbox_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OutboxStore]:
    """The notification outbox of a started sink, in each kind of storage (several notifiers may share it)."""
    sink: Sink
    if request.param == "s3":
        bucket = request.getfixturevalue("bucket")
        sink = build_sink(s3_settings(request.getfixturevalue("moto_endpoint"), bucket))
    else:
        sink = FileSink(tmp_path) if request.param == "file" else MemorySink()
    await sink.start()
    assert isinstance(sink, OutboxCapable)
    yield sink.outbox_store()
    await sink.close()


@pytest.fixture
async def recorder(moto_endpoint: str) -> AsyncIterator[S3Proxy]:
    """The S3 proxy in front of moto, to assert on requests; point the sink's endpoint at ``recorder.url``."""
    async with S3Proxy(moto_endpoint) as proxy:
        yield proxy


@pytest.fixture
async def client_for(
    aiohttp_client: Callable[..., Any],
) -> AsyncIterator[Callable[[Settings, Sink | None], Any]]:
    """Start streamproxy with the given settings (and optional sink) and return a test client."""

    async def start(settings: Settings, sink: Sink | None = None) -> TestClient[web.Request, web.Application]:
        return await aiohttp_client(make_app(settings, sink))

    yield start
