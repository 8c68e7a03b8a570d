"""Graceful drain with real signals against a server subprocess.

On SIGTERM/SIGINT the server stops being ready and refuses new uploads with 503, lets uploads in
flight finish within --shutdown-timeout, aborts what is still open then, and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streamproxy.sinks.fs import TEMP_PREFIX
from tests.helpers import PART, held_body, incomplete_uploads, objects, payload, put_recording, sha256, until
from tests.servers import streamproxy_server

pytestmark = pytest.mark.slow


def _log_lines(proc: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    assert proc.stderr is not None
    return [json.loads(line) for line in proc.stderr.read().decode().splitlines() if line.startswith("{")]


async def _wait_exit(proc: subprocess.Popen[bytes], seconds: float) -> int:
    return await asyncio.to_thread(proc.wait, seconds)


async def test_sigterm_drains_finishes_in_flight_and_aborts_the_rest(moto_endpoint, bucket, s3) -> None:
    """In flight at SIGTERM: one upload finishes during the drain (stored whole), one is still open at the
    deadline (aborted: no object, no incomplete multipart upload); new uploads get 503; exit status 0."""
    args = [
        *("--storage", f"s3://{bucket}/rec/", "--s3-endpoint-url", moto_endpoint),
        *("--part-size", "5MiB", "--max-buffer-bytes", "40MiB", "--shutdown-timeout", "3s"),
    ]
    finishing, stuck = payload(2 * PART + 4321, seed=1), payload(3 * PART, seed=2)
    release_finishing, release_stuck = asyncio.Event(), asyncio.Event()
    with streamproxy_server(args) as (proc, base):
        async with aiohttp.ClientSession() as session:
            a = asyncio.ensure_future(
                put_recording(
                    session, f"{base}/recordings/finishing", held_body(finishing, PART + 100, release_finishing)
                )
            )
            b = asyncio.ensure_future(
                put_recording(session, f"{base}/recordings/stuck", held_body(stuck, 2 * PART + 100, release_stuck))
            )
            # Both are mid-upload with parts already in S3.
            await until(
                lambda: sorted(incomplete_uploads(s3, bucket)) == ["rec/finishing.wav", "rec/stuck.wav"], seconds=15
            )

            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await until(lambda: _status(f"{base}/readyz") == 503, seconds=5)
            async with session.get(f"{base}/readyz") as ready:
                assert (await ready.json())["error"] == "draining"
            async with session.put(f"{base}/recordings/late", data=b"late", headers={"Content-Type": "audio/wav"}) as r:
                assert r.status == 503 and r.headers["Retry-After"] == "5"
                assert (await r.json())["error"] == "draining"

            release_finishing.set()
            status_a, answer_a = await a
            assert status_a == 200, answer_a
            assert isinstance(answer_a, dict) and answer_a["sha256"] == sha256(finishing)

            status_b, answer_b = await asyncio.wait_for(b, 15)
            code = await _wait_exit(proc, 20)
            elapsed = time.monotonic() - signalled
            release_stuck.set()

    assert code == 0
    assert 3 <= elapsed < 3 + 10, elapsed
    assert status_b == 503 and isinstance(answer_b, dict) and answer_b["error"] == "shutdown", answer_b
    stored = objects(s3, bucket)
    assert set(stored) == {"rec/finishing.wav"}
    assert sha256(stored["rec/finishing.wav"]) == sha256(finishing)
    assert incomplete_uploads(s3, bucket) == []
    lines = _log_lines(proc)
    names = [line["event"] for line in lines]
    assert names.index("draining") < names.index("drain_deadline") < names.index("stopped")
    uploads = {line["key"] or line["error"]: line for line in lines if line["event"] == "upload"}
    assert uploads["rec/finishing.wav"]["outcome"] == "success"
    assert uploads["rec/stuck.wav"]["outcome"] == "failure" and uploads["rec/stuck.wav"]["error"] == "shutdown"
    assert uploads["rec/stuck.wav"]["bytes"] >= 2 * PART
    assert uploads["draining"]["outcome"] == "failure"
    deadline = next(line for line in lines if line["event"] == "drain_deadline")
    assert deadline["aborting"] == 1


def _status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_second_signal_cuts_the_drain_short_and_leaves_no_temp_file(tmp_path: Path) -> None:
    """Filesystem storage, SIGINT twice: the open upload is aborted at once, its temp file removed, exit 0."""
    root = tmp_path / "rec"
    release = asyncio.Event()
    with streamproxy_server(["--storage", root.as_uri(), "--shutdown-timeout", "60s"]) as (proc, base):
        async with aiohttp.ClientSession() as session:
            upload = asyncio.ensure_future(
                put_recording(session, f"{base}/recordings/open", held_body(payload(PART + 10), PART + 5, release))
            )
            await until(lambda: bool(list(root.glob(f"{TEMP_PREFIX}*"))), seconds=15)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGINT)
            await until(lambda: _status(f"{base}/readyz") == 503, seconds=5)
            proc.send_signal(signal.SIGINT)
            status, answer = await asyncio.wait_for(upload, 15)
            code = await _wait_exit(proc, 20)
            elapsed = time.monotonic() - signalled
            release.set()
    assert code == 0 and elapsed < 10
    assert status == 503 and isinstance(answer, dict) and answer["error"] == "shutdown"
    assert list(root.iterdir()) == []


async def test_idle_server_exits_at_once(tmp_path: Path) -> None:
    """Nothing in flight: SIGTERM ends the process promptly with status 0."""
    with streamproxy_server(["--storage", (tmp_path / "r").as_uri()]) as (proc, _):
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await _wait_exit(proc, 20)
    assert code == 0 and time.monotonic() - signalled < 5
    events = [line["event"] for line in _log_lines(proc)]
    assert "drained" in events and events[-1] == "stopped"
