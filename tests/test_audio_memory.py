"""A 4-hour µ-law call (115 MB, the platform's longest Call Recording) keeps the server's RSS flat.

The server runs as a subprocess with its real defaults (raw µ-law becomes WAV), storing into
moto; the part 1 of the upload is held until the end for its header, and the answer's sha256 of
the stored object needs the object read back, so this covers both extra costs of the WAV path.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from streamproxy.wav import g711_header
from tests.servers import rss_kib, streamproxy_server

MIB = 1024 * 1024
SECONDS = 4 * 3600
SIZE = SECONDS * 8000  # 115,200,000 bytes of µ-law
BUDGET = 64 * MIB


async def _call(raw: Any, stored: Any) -> AsyncIterator[bytes]:
    block = bytes(range(256)) * 4096  # 1 MiB of every µ-law value
    stored.update(g711_header("mulaw", SIZE))
    sent = 0
    while sent < SIZE:
        chunk = sent.to_bytes(8, "big") + block[8 : min(MIB, SIZE - sent)]
        raw.update(chunk)
        stored.update(chunk)
        sent += len(chunk)
        yield chunk


@pytest.mark.slow
async def test_four_hour_mulaw_call_stays_under_the_budget(moto_endpoint: str, s3: Any, bucket: str) -> None:
    """Stored as WAV (part 1 held to the end, the rest read back for the sha256): peak RSS within the budget."""
    args = ["--storage", f"s3://{bucket}/", "--s3-endpoint-url", moto_endpoint, "--max-buffer-bytes", "64MiB"]
    with streamproxy_server(args, raw_bytes=False) as (proc, base):
        idle = rss_kib(proc.pid, "VmRSS") * 1024
        raw, stored = hashlib.sha256(), hashlib.sha256()
        async with aiohttp.ClientSession() as session:
            resp = await session.put(
                f"{base}/recordings/call-4h.ul", data=_call(raw, stored), headers={"Content-Type": "audio/basic"}
            )
            body = await resp.json()
        peak = rss_kib(proc.pid) * 1024
    assert resp.status == 200, body
    assert body["key"] == "call-4h.wav" and body["audio"]["duration_seconds"] == SECONDS
    assert body["received"] == {"size": SIZE, "sha256": raw.hexdigest(), "format": "mulaw"}
    assert body["size"] == SIZE + 58 and body["sha256"] == stored.hexdigest()
    head = s3.head_object(Bucket=bucket, Key="call-4h.wav")
    assert head["ContentLength"] == SIZE + 58 and head["ContentType"] == "audio/wav"
    first = s3.get_object(Bucket=bucket, Key="call-4h.wav", Range="bytes=0-57")["Body"].read()
    assert first == g711_header("mulaw", SIZE)
    print(f"idle RSS {idle / MIB:.1f} MiB, peak RSS {peak / MIB:.1f} MiB for a 4-hour µ-law call ({SIZE} bytes)")
    assert peak < idle + BUDGET, f"peak {peak / MIB:.1f} MiB exceeds idle {idle / MIB:.1f} MiB + 64 MiB budget"
