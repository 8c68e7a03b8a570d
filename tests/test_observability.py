"""The upload log line, request ids on every line of a request, and the Prometheus metrics."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import urllib.request
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any

import prometheus_client
import pytest
import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streamproxy.app import make_app
from streamproxy.sinks.memory import MemorySink
from tests.helpers import PART, chunks, form, fs_settings, incomplete_uploads, payload, s3_settings, sha256
from tests.s3_proxy import S3Proxy
from tests.servers import streamproxy_server


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every structlog event, with the context variables merged in, as the JSON renderer would see it."""
    capture = structlog.testing.LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    yield capture.entries
    structlog.reset_defaults()


def events(entries: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in entries if e["event"] == name]


async def scrape(client: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_upload_line_carries_every_field(client_for, moto_endpoint, bucket, logs) -> None:
    """One `upload` line per upload: request id, client, key, bytes, parts, retries, duration, throughput, outcome."""
    client = await client_for(s3_settings(moto_endpoint, bucket))
    data = payload(3 * PART + 17)
    resp = await client.post(
        "/recordings", data=form([("filename", "c1"), ("recording", data)]), headers={"X-Request-ID": "ivr-42"}
    )
    assert resp.status == 200 and resp.headers["X-Request-ID"] == "ivr-42"
    (line,) = events(logs, "upload")
    assert line["request_id"] == "ivr-42"
    assert line["outcome"] == "success" and line["error"] is None
    assert line["client"] == "127.0.0.1"
    assert line["key"] == "rec/c1.wav"
    assert line["bytes"] == len(data) and line["parts"] == 4 and line["retries"] == 0
    assert line["duration_s"] > 0 and line["mib_per_s"] > 0
    assert line["log_level"] == "info"


async def test_upload_line_names_the_client_behind_a_trusted_proxy(client_for, tmp_path, logs) -> None:
    """Behind --trusted-proxy the line carries the X-Forwarded-For client; an untrusted header is ignored."""
    client = await client_for(fs_settings(tmp_path, trusted_proxy=("127.0.0.1/32",)))
    forwarded = {"X-Forwarded-For": "203.0.113.9", "Content-Type": "audio/wav"}
    assert (await client.put("/recordings/via-proxy", data=b"x", headers=forwarded)).status == 200
    direct = await client_for(fs_settings(tmp_path / "direct"))
    assert (await direct.put("/recordings/spoofed", data=b"x", headers=forwarded)).status == 200
    assert [line["client"] for line in events(logs, "upload")] == ["203.0.113.9", "127.0.0.1"]


async def test_request_id_is_generated_and_bound_to_sink_lines(client_for, moto_endpoint, s3, logs) -> None:
    """Without X-Request-ID one is generated; storage failures log the S3 code under the same id."""
    client = await client_for(s3_settings(moto_endpoint, "no-such-bucket-here"))
    resp = await client.put("/recordings/c2", data=b"abc", headers={"Content-Type": "audio/wav"})
    assert resp.status == 502
    request_id = resp.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    (failure,) = events(logs, "storage_error")
    assert failure["s3_code"] == "NoSuchBucket" and failure["operation"] == "PutObject"
    assert failure["request_id"] == request_id
    (line,) = events(logs, "upload")
    assert line["request_id"] == request_id
    assert (line["outcome"], line["error"], line["storage_code"]) == ("failure", "storage_failed", "NoSuchBucket")
    assert line["log_level"] == "warning"  # a 5xx: storage failed, not the client
    assert all(e["request_id"] == request_id for e in logs if e["event"] in ("upload", "storage_error"))


async def test_metrics_after_an_upload(client_for, moto_endpoint, bucket) -> None:
    """Counters, histograms and gauges describe a multipart upload exactly."""
    settings = s3_settings(moto_endpoint, bucket)
    client = await client_for(settings)
    data = payload(3 * PART + 17)
    resp = await client.post("/recordings", data=form([("filename", "m1"), ("recording", data)]))
    assert resp.status == 200
    m = await scrape(client)
    assert value(m, "streamproxy_uploads_total", outcome="success", error="") == 1
    assert value(m, "streamproxy_received_bytes_total") == len(data)
    assert value(m, "streamproxy_upload_duration_seconds_count", outcome="success") == 1
    assert value(m, "streamproxy_upload_size_bytes_sum") == len(data)
    assert value(m, "streamproxy_s3_request_duration_seconds_count", operation="UploadPart") == 4
    assert value(m, "streamproxy_s3_request_duration_seconds_count", operation="CreateMultipartUpload") == 1
    assert value(m, "streamproxy_s3_request_duration_seconds_count", operation="CompleteMultipartUpload") == 1
    assert value(m, "streamproxy_uploads_aborted_total") == 0
    assert value(m, "streamproxy_uploads_in_flight") == 0
    assert value(m, "streamproxy_buffer_in_use_bytes") == 0
    assert value(m, "streamproxy_buffer_capacity_bytes") == settings.max_buffer_bytes


async def test_failed_upload_is_counted_and_aborted(client_for, moto_endpoint, bucket, s3) -> None:
    """A streamed oversize upload counts as failure/too_large, as an aborted upload, and leaves nothing."""
    client = await client_for(s3_settings(moto_endpoint, bucket, max_upload_bytes=2 * PART))
    resp = await client.put("/recordings/big", data=chunks(payload(3 * PART)), headers={"Content-Type": "audio/wav"})
    assert resp.status == 413
    m = await scrape(client)
    assert value(m, "streamproxy_uploads_total", outcome="failure", error="too_large") == 1
    assert value(m, "streamproxy_uploads_aborted_total") == 1
    assert value(m, "streamproxy_received_bytes_total") >= PART
    assert value(m, "streamproxy_upload_size_bytes_count") == 0
    assert incomplete_uploads(s3, bucket) == []


async def test_busy_rejections_are_counted(client_for, tmp_path) -> None:
    """A 503 busy is an upload request too: it gets its line and its count."""
    client = await client_for(fs_settings(tmp_path, max_concurrent_uploads=1))

    async def slow() -> AsyncIterator[bytes]:
        yield b"x" * 1024
        await asyncio.sleep(0.5)
        yield b"y" * 1024

    first = asyncio.ensure_future(client.put("/recordings/a", data=slow(), headers={"Content-Type": "audio/wav"}))
    for _ in range(100):
        if value(await scrape(client), "streamproxy_uploads_in_flight") == 1:
            break
        await asyncio.sleep(0.01)
    m = await scrape(client)
    assert value(m, "streamproxy_uploads_in_flight") == 1
    second = await client.put("/recordings/b", data=b"z", headers={"Content-Type": "audio/wav"})
    assert second.status == 503 and second.headers["Retry-After"] == "1"
    assert (await first).status == 200
    m = await scrape(client)
    assert value(m, "streamproxy_uploads_total", outcome="failure", error="busy") == 1
    assert value(m, "streamproxy_uploads_total", outcome="success", error="") == 1


async def test_buffer_gauge_shows_bytes_held_mid_upload(client_for, tmp_path) -> None:
    """While an upload holds a part buffer, the gauge shows it; afterwards it is back to zero."""
    client = await client_for(fs_settings(tmp_path))
    gate = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield payload(PART + 1024)
        await gate.wait()
        yield b"end"

    upload = asyncio.ensure_future(client.put("/recordings/g", data=body(), headers={"Content-Type": "audio/wav"}))
    held = 0.0
    for _ in range(200):
        held = value(await scrape(client), "streamproxy_buffer_in_use_bytes")
        if held >= PART:
            break
        await asyncio.sleep(0.01)
    assert PART <= held <= 2 * PART
    gate.set()
    assert (await upload).status == 200
    assert value(await scrape(client), "streamproxy_buffer_in_use_bytes") == 0


async def test_registry_is_per_app_never_global(aiohttp_client, tmp_path) -> None:
    """Two apps in one process each count their own uploads; the global registry stays clean."""
    settings = fs_settings(tmp_path)
    mine = CollectorRegistry()
    first = await aiohttp_client(make_app(settings, MemorySink(), registry=mine))
    second = await aiohttp_client(make_app(settings, MemorySink()))
    assert (await first.put("/recordings/r", data=b"1", headers={"Content-Type": "audio/wav"})).status == 200
    assert mine.get_sample_value("streamproxy_uploads_total", {"outcome": "success", "error": ""}) == 1
    assert value(await scrape(second), "streamproxy_uploads_total", outcome="success", error="") == 0
    assert prometheus_client.REGISTRY.get_sample_value("streamproxy_uploads_total", {"outcome": "success"}) is None
    assert not [n for n in prometheus_client.REGISTRY._names_to_collectors if n.startswith("streamproxy")]


@pytest.fixture
async def flaky_s3(moto_endpoint: str) -> AsyncIterator[S3Proxy]:
    """The S3 proxy in front of moto, answering the first UploadPart with 503 SlowDown."""
    async with S3Proxy(moto_endpoint) as proxy:
        proxy.add("part", "503")
        yield proxy


async def test_retries_are_counted_per_upload(client_for, flaky_s3, bucket, s3, logs) -> None:
    """A throttled part is retried by botocore: the upload line and the metrics both show the retry."""
    client = await client_for(s3_settings(flaky_s3.url, bucket))
    data = payload(2 * PART + 5)
    resp = await client.put("/recordings/retried", data=data, headers={"Content-Type": "audio/wav"})
    assert resp.status == 200, await resp.text()
    assert flaky_s3.injected["part:503"] == 1
    assert sha256(s3.get_object(Bucket=bucket, Key="rec/retried.wav")["Body"].read()) == sha256(data)
    (line,) = events(logs, "upload")
    assert line["retries"] == 1 and line["parts"] == 3
    m = await scrape(client)
    assert value(m, "streamproxy_s3_retries_total", operation="UploadPart") == 1
    assert value(m, "streamproxy_s3_retries_total", operation="PutObject") == 0


async def test_client_disconnect_is_a_cancelled_upload(client_for, tmp_path, logs) -> None:
    """A client that vanishes mid-body: one `cancelled` line, counted and aborted, no error logged."""
    client = await client_for(fs_settings(tmp_path))
    _reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        b"PUT /recordings/gone HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nX-Request-ID: leg-2\r\n"
        b"Content-Length: 20000000\r\n\r\n" + payload(PART + 10)
    )
    await writer.drain()
    for _ in range(200):
        if value(await scrape(client), "streamproxy_received_bytes_total") >= PART:
            break
        await asyncio.sleep(0.01)
    writer.transport.abort()
    for _ in range(200):
        if events(logs, "upload"):
            break
        await asyncio.sleep(0.01)
    (line,) = events(logs, "upload")
    # aiohttp's test server cancels the handler of a lost connection (handler_cancellation=True);
    # `streamproxy serve` does not, and its read fails instead (see the subprocess test below).
    assert (line["outcome"], line["error"], line["request_id"]) == ("cancelled", "cancelled", "leg-2")
    assert line["key"] == "gone.wav" and line["bytes"] == PART
    assert not events(logs, "unhandled_error")
    m = await scrape(client)
    assert value(m, "streamproxy_uploads_total", outcome="cancelled", error="cancelled") == 1
    assert value(m, "streamproxy_uploads_aborted_total") == 1
    assert list(tmp_path.iterdir()) == []


def _scrape_url(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }


async def test_client_disconnect_under_serve(tmp_path) -> None:
    """Under `streamproxy serve` a lost client is `client_disconnected`: one JSON line, no traceback."""
    with streamproxy_server(["--storage", tmp_path.as_uri(), "--part-size", "5MiB"]) as (proc, base):
        port = int(base.rsplit(":", 1)[1])
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"PUT /recordings/gone HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nX-Request-ID: leg-3\r\n"
            b"Content-Length: 20000000\r\n\r\n" + payload(PART + 10)
        )
        await writer.drain()
        received = 0.0
        for _ in range(500):
            received = value(
                await asyncio.to_thread(_scrape_url, f"{base}/metrics"), "streamproxy_received_bytes_total"
            )
            if received:
                break
            await asyncio.sleep(0.01)
        assert received == PART
        writer.transport.abort()
        for _ in range(500):
            if not list(tmp_path.glob(".streamproxy-*")):
                break
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    assert proc.stderr is not None
    lines = [json.loads(x) for x in proc.stderr.read().decode().splitlines()]
    (line,) = [x for x in lines if x["event"] == "upload"]
    assert (line["outcome"], line["error"], line["request_id"]) == ("cancelled", "client_disconnected", "leg-3")
    assert line["key"] == "gone.wav" and line["bytes"] >= PART
    assert [x["event"] for x in lines if x["level"] in ("error", "warning")] == []
    assert list(tmp_path.iterdir()) == []
