"""/healthz and /readyz: readiness follows storage through a short cached probe, and drops while draining."""

from __future__ import annotations

import asyncio
import shutil
import time

from streamproxy.app import make_app
from streamproxy.appkeys import ADMISSION
from streamproxy.lifecycle import Admission, Readiness
from streamproxy.sinks.memory import MemorySink
from tests.helpers import fs_settings, s3_settings
from tests.servers import free_port


async def test_ready_when_the_bucket_answers(client_for, moto_endpoint, bucket) -> None:
    """A reachable bucket: /healthz and /readyz are 200, and the gauge says so."""
    client = await client_for(s3_settings(moto_endpoint, bucket))
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}
    assert "streamproxy_storage_ready 1.0" in await (await client.get("/metrics")).text()


async def test_not_ready_without_the_bucket(client_for, moto_endpoint, s3) -> None:
    """A missing bucket is a 503 naming the S3 error."""
    client = await client_for(s3_settings(moto_endpoint, "bucket-that-is-missing"))
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503 and body["error"] == "storage_unavailable" and "NoSuchBucket" in body["message"]
    assert "streamproxy_storage_ready 0.0" in await (await client.get("/metrics")).text()


async def test_not_ready_when_storage_is_unreachable(client_for, bucket) -> None:
    """Nothing listens at the endpoint: 503 within the probe's short timeout."""
    settings = s3_settings(f"http://127.0.0.1:{free_port()}", bucket, s3_max_attempts=1)
    client = await client_for(settings)
    started = time.monotonic()
    resp = await client.get("/readyz")
    assert resp.status == 503 and (await resp.json())["error"] == "storage_unavailable"
    assert time.monotonic() - started < 5


async def test_filesystem_readiness_follows_the_directory(client_for, tmp_path) -> None:
    """The filesystem probe passes on a writable directory and fails once it is gone."""
    ok = await client_for(fs_settings(tmp_path / "ok"))
    assert (await ok.get("/readyz")).status == 200
    root = tmp_path / "gone"
    client = await client_for(fs_settings(root))  # starting creates the directory
    shutil.rmtree(root)
    root.write_text("not a directory")
    resp = await client.get("/readyz")
    assert resp.status == 503 and "not a directory" in (await resp.json())["message"]


class CountingSink(MemorySink):
    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.probes = 0
        self.delay = delay

    async def probe(self) -> None:
        self.probes += 1
        await asyncio.sleep(self.delay)
        await super().probe()


async def test_probe_is_cached_and_shared() -> None:
    """Concurrent checks share one probe; a result is reused for the TTL, then probed again."""
    sink = CountingSink(delay=0.05)
    readiness = Readiness(sink, Admission(1), ttl=0.3)
    assert await asyncio.gather(*(readiness.check() for _ in range(10))) == [None] * 10
    assert sink.probes == 1
    sink.reachable = False
    assert await readiness.check() is None  # still within the TTL
    assert sink.probes == 1
    await asyncio.sleep(0.35)
    assert "unreachable" in (await readiness.check() or "")
    assert sink.probes == 2


async def test_a_hanging_probe_times_out() -> None:
    """A probe that does not answer makes the instance unready after the probe timeout."""
    readiness = Readiness(CountingSink(delay=30), Admission(1), timeout=0.2)
    started = time.monotonic()
    assert "did not answer" in (await readiness.check() or "")
    assert time.monotonic() - started < 1


async def test_draining_is_not_ready_and_refuses_uploads(aiohttp_client, tmp_path) -> None:
    """While draining, /readyz is 503 and a new upload gets 503 draining with Retry-After; /healthz stays 200."""
    sink = MemorySink()
    client = await aiohttp_client(make_app(fs_settings(tmp_path), sink))
    assert (await client.get("/readyz")).status == 200
    client.server.app[ADMISSION].draining = True
    ready = await client.get("/readyz")
    assert ready.status == 503 and (await ready.json())["error"] == "draining"
    upload = await client.put("/recordings/late", data=b"abc", headers={"Content-Type": "audio/wav"})
    assert upload.status == 503 and upload.headers["Retry-After"] == "5"
    assert (await upload.json())["error"] == "draining"
    assert (await client.get("/healthz")).status == 200
    assert sink.objects == {}
