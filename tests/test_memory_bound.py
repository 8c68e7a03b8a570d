"""Memory stays bounded: a 512 MiB upload streamed from a generator never grows the server past its budget."""

from __future__ import annotations

import hashlib
from typing import Any

import aiohttp
import pytest

from tests.servers import rss_kib, streamproxy_server

MIB = 1024 * 1024
SIZE = 512 * MIB
BUDGET = 64 * MIB


async def _generate(hasher: Any) -> Any:
    block = hashlib.sha256(b"seed").digest() * (MIB // 32)
    for index in range(SIZE // MIB):
        chunk = index.to_bytes(8, "big") + block[8:]
        hasher.update(chunk)
        yield chunk


@pytest.mark.slow
async def test_512_mib_upload_stays_under_the_budget(moto_endpoint: str, s3: Any, bucket: str) -> None:
    """Peak RSS of the server process stays below its idle RSS plus --max-buffer-bytes."""
    args = ["--storage", f"s3://{bucket}/", "--s3-endpoint-url", moto_endpoint, "--max-buffer-bytes", "64MiB"]
    with streamproxy_server(args) as (proc, base):
        idle = rss_kib(proc.pid, "VmRSS") * 1024
        sent = hashlib.sha256()
        async with aiohttp.ClientSession() as session:
            resp = await session.put(
                f"{base}/recordings/long-call", data=_generate(sent), headers={"Content-Type": "audio/wav"}
            )
            body = await resp.json()
        peak = rss_kib(proc.pid) * 1024
    assert resp.status == 200, body
    assert body["size"] == SIZE and body["sha256"] == sent.hexdigest()
    head = s3.head_object(Bucket=bucket, Key="long-call.wav")
    assert head["ContentLength"] == SIZE
    print(f"idle RSS {idle / MIB:.1f} MiB, peak RSS {peak / MIB:.1f} MiB for a {SIZE // MIB} MiB upload")
    assert peak < idle + BUDGET, f"peak {peak / MIB:.1f} MiB exceeds idle {idle / MIB:.1f} MiB + 64 MiB budget"
