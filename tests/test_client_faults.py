"""Client faults: disconnects at every interesting byte offset, slow and stalled senders.

After each fault: no object, no incomplete multipart upload, every part buffer back in the pool
(``BufferPool.bytes_in_use == 0``), and the server still stores the next upload byte-exact.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from streamproxy.appkeys import POOL
from tests.helpers import PART, form, incomplete_uploads, multipart_body, objects, payload, s3_settings, sha256

DATA = payload(3 * PART + 1234, seed=3)  # four parts: the last one short


def _offsets(body: bytes, data: bytes, file_first: bool) -> dict[str, int]:
    """Byte offsets into ``body`` at which the client vanishes."""
    start = body.index(data[:64])
    end = start + len(data)
    cuts = {
        "headers_only": 0,
        "in_file_part_headers": start - 20,
        "first_byte": start + 1,
        "inside_first_part": start + PART // 2,
        "part_boundary_minus_1": start + PART - 1,
        "part_boundary": start + PART,
        "part_boundary_plus_1": start + PART + 1,
        "second_boundary": start + 2 * PART,
        "inside_last_part": start + 3 * PART + 600,
        "before_last_byte": end - 1,
        "after_last_byte": end,
        "inside_closing_boundary": end + 6,
        "before_final_crlf": len(body) - 2,
    }
    if not file_first:
        cuts["before_the_file"] = start - 120
    return cuts


async def _vanish(port: int, head: bytes, body: bytes) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body)
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.transport.abort()


async def _clean(client: Any, s3: Any, bucket: str, expected: set[str]) -> None:
    """Aborts finish after the disconnect: wait, then demand nothing left and every buffer returned."""
    pool = client.app[POOL]
    for _ in range(200):
        if not incomplete_uploads(s3, bucket) and pool.bytes_in_use == 0:
            break
        await asyncio.sleep(0.05)
    assert incomplete_uploads(s3, bucket) == []
    assert pool.bytes_in_use == 0
    assert set(objects(s3, bucket)) == expected


@pytest.mark.parametrize("order", ["filename_first", "file_first"])
async def test_disconnect_at_every_offset_leaves_nothing(client_for, moto_endpoint, bucket, s3, order) -> None:
    """A client vanishing anywhere in a multipart body: nothing stored, nothing open, the server keeps serving."""
    client = await client_for(s3_settings(moto_endpoint, bucket))
    fields = [("filename", b"gone"), ("caller", b"+4930"), ("recording", DATA)]
    if order == "file_first":
        fields = [("recording", DATA), ("caller", b"+4930"), ("filename", b"gone")]
    body = multipart_body(fields)
    head = (
        "POST /recordings HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b0undary\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    cuts = _offsets(body, DATA, order == "file_first")
    for name, cut in cuts.items():
        await _vanish(client.port, head, body[:cut])
        await _clean(client, s3, bucket, set())
        ok = await client.post("/recordings", data=form([("filename", f"after-{name}"), ("recording", b"ok")]))
        assert ok.status == 200, (name, await ok.text())
        s3.delete_object(Bucket=bucket, Key=f"rec/after-{name}.wav")
    complete = await client.post(
        "/recordings", data=body, headers={"Content-Type": "multipart/form-data; boundary=b0undary"}
    )
    assert complete.status == 200, await complete.text()
    await _clean(client, s3, bucket, {"rec/gone.wav"})
    assert sha256(objects(s3, bucket)["rec/gone.wav"]) == sha256(DATA)


async def test_raw_disconnect_at_every_offset_leaves_nothing(client_for, moto_endpoint, bucket, s3) -> None:
    """The same for a raw PUT with Content-Length, including one byte short of the end."""
    client = await client_for(s3_settings(moto_endpoint, bucket))
    head = f"PUT /recordings/gone HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: {len(DATA)}\r\n\r\n"
    for cut in (0, 1, PART - 1, PART, PART + 1, 2 * PART, 3 * PART + 600, len(DATA) - 1):
        await _vanish(client.port, head.encode(), DATA[:cut])
        await _clean(client, s3, bucket, set())
    ok = await client.put("/recordings/gone", data=DATA, headers={"Content-Type": "audio/wav"})
    assert ok.status == 200
    await _clean(client, s3, bucket, {"rec/gone.wav"})


async def test_slow_client_below_the_read_timeout_is_served(client_for, moto_endpoint, bucket, s3) -> None:
    """A client trickling bytes slower than the timeout would allow in one piece, but never silent that long."""
    client = await client_for(s3_settings(moto_endpoint, bucket, read_timeout=0.5))
    data = payload(PART + 4096, seed=5)

    async def trickle():
        step = len(data) // 8 + 1
        for start in range(0, len(data), step):
            yield data[start : start + step]
            await asyncio.sleep(0.3)

    resp = await client.put("/recordings/slow", data=trickle(), headers={"Content-Type": "audio/wav"})
    assert resp.status == 200, await resp.text()
    await _clean(client, s3, bucket, {"rec/slow.wav"})
    assert objects(s3, bucket)["rec/slow.wav"] == data


async def test_stalled_clients_cannot_keep_the_budget(client_for, moto_endpoint, bucket, s3) -> None:
    """Six clients stall mid-part with a budget of two parts: all get 408, every buffer returns, others are served."""
    client = await client_for(
        s3_settings(moto_endpoint, bucket, read_timeout=0.7, max_buffer_bytes=2 * PART, part_concurrency=1)
    )
    pool = client.app[POOL]
    peak = 0

    async def stall(seed: int):
        yield payload(PART + 100, seed=seed)  # one full part shipped, the next one held
        await asyncio.sleep(30)
        yield b"never"

    async def stalled(i: int) -> int:
        resp = await client.put(f"/recordings/stall-{i}", data=stall(i), headers={"Content-Type": "audio/wav"})
        assert (await resp.json())["error"] == "client_timeout"
        return resp.status

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, pool.bytes_in_use)
            await asyncio.sleep(0.01)

    watcher = asyncio.ensure_future(watch())
    started = time.monotonic()
    statuses = await asyncio.wait_for(asyncio.gather(*(stalled(i) for i in range(6))), 60)
    watcher.cancel()
    assert statuses == [408] * 6
    assert peak == 2 * PART, "the stalled uploads did hold the whole budget"
    assert time.monotonic() - started < 30
    await _clean(client, s3, bucket, set())
    data = payload(2 * PART + 1, seed=99)
    ok = await client.put("/recordings/healthy", data=data, headers={"Content-Type": "audio/wav"})
    assert ok.status == 200
    await _clean(client, s3, bucket, {"rec/healthy.wav"})
