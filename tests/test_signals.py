"""Process faults against the real CLI: SIGTERM with 20 uploads in flight, SIGKILL and `streamproxy sweep`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import aiohttp
import pytest

from tests.helpers import PART, held_body, incomplete_uploads, objects, payload, put_recording, sha256, until
from tests.servers import streamproxy_server

pytestmark = pytest.mark.slow


def _args(moto_endpoint: str, bucket: str, *extra: str) -> list[str]:
    return [
        *("--storage", f"s3://{bucket}/rec/", "--s3-endpoint-url", moto_endpoint),
        *("--part-size", "5MiB", "--max-buffer-bytes", "160MiB", "--part-concurrency", "1", *extra),
    ]


async def test_sigterm_with_20_uploads_in_flight(moto_endpoint, bucket, s3) -> None:
    """SIGTERM mid-way through 20 uploads: each is stored whole (drained) or aborted; none partial; exit 0."""
    uploads: dict[str, tuple[bytes, asyncio.Event]] = {}
    for i in range(20):
        size = [PART // 3, PART + 17, 2 * PART + 5, 3 * PART][i % 4] + i
        uploads[f"u{i:02d}"] = (payload(size, seed=100 + i), asyncio.Event())
    args = _args(moto_endpoint, bucket, "--shutdown-timeout", "4s", "--max-concurrent-uploads", "32")
    with streamproxy_server(args) as (proc, base):
        async with aiohttp.ClientSession() as session:
            tasks = {
                name: asyncio.ensure_future(
                    put_recording(session, f"{base}/recordings/{name}", held_body(data, len(data) - 1000, release))
                )
                for name, (data, release) in uploads.items()
            }
            multi = sum(1 for data, _ in uploads.values() if len(data) > PART + 1000)
            await until(lambda: len(incomplete_uploads(s3, bucket)) == multi)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            for name, (_, release) in uploads.items():  # half finish during the drain, half never do
                if int(name[1:]) % 2 == 0:
                    release.set()
            results = {name: await asyncio.wait_for(task, 30) for name, task in tasks.items()}
            code = await asyncio.to_thread(proc.wait, 30)
            for _, release in uploads.values():
                release.set()
    assert code == 0
    stored = objects(s3, bucket)
    completed = {name for name, (status, _) in results.items() if status == 200}
    assert completed == {name for name in uploads if int(name[1:]) % 2 == 0}, results
    for name, (status, answer) in results.items():
        data = uploads[name][0]
        if status == 200:
            assert answer["sha256"] == sha256(data) and sha256(stored[f"rec/{name}.wav"]) == sha256(data)
        else:
            assert f"rec/{name}.wav" not in stored
            assert status == -1 or answer["error"] == "shutdown", (name, status, answer)
    assert set(stored) == {f"rec/{name}.wav" for name in completed}
    assert incomplete_uploads(s3, bucket) == []


async def test_sigkill_leaves_uploads_that_sweep_removes(moto_endpoint, bucket, s3) -> None:
    """SIGKILL cannot clean up: incomplete uploads remain (named and late-name), `streamproxy sweep` removes them."""
    names = [f"k{i}" for i in range(5)]
    release = asyncio.Event()
    with streamproxy_server(_args(moto_endpoint, bucket)) as (proc, base):
        async with aiohttp.ClientSession() as session:
            tasks = [
                asyncio.ensure_future(
                    put_recording(
                        session,
                        f"{base}/recordings/{name}",
                        held_body(payload(3 * PART, seed=i), 2 * PART + 10, release),
                    )
                )
                for i, name in enumerate(names)
            ]
            form = aiohttp.FormData()
            form.add_field("recording", held_body(payload(3 * PART, seed=9), 2 * PART + 10, release), filename="r.wav")
            form.add_field("filename", "late")
            late = asyncio.ensure_future(session.post(f"{base}/recordings", data=form))
            await until(lambda: len(incomplete_uploads(s3, bucket)) == len(names) + 1)
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 10)
            release.set()
            results = await asyncio.gather(*tasks)
            late_outcome = (await asyncio.gather(late, return_exceptions=True))[0]
    assert all(status == -1 for status, _ in results), results
    assert isinstance(late_outcome, aiohttp.ClientError)
    left = incomplete_uploads(s3, bucket)
    assert sorted(k for k in left if "staging" not in k) == [f"rec/{n}.wav" for n in names]
    assert len(left) == len(names) + 1
    assert objects(s3, bucket) == {}

    command = [sys.executable, "-m", "streamproxy", "sweep", "--storage", f"s3://{bucket}/rec/"]
    swept = await asyncio.to_thread(
        subprocess.run,
        [*command, "--s3-endpoint-url", moto_endpoint, "--older-than", "1s"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=60,
        check=False,
    )
    assert swept.returncode == 0, swept.stderr
    assert f"summary: {len(names) + 1} found, {len(names) + 1} removed, 0 failed" in swept.stdout
    assert incomplete_uploads(s3, bucket) == []
    assert objects(s3, bucket) == {}
