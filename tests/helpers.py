"""Request builders shared by the HTTP tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import aiohttp


def form(
    fields: Sequence[tuple[str, str | bytes]], *, file_field: str = "recording", content_type: str = "audio/wav"
) -> aiohttp.FormData:
    """A multipart form with the fields in the given order; the file field carries bytes."""
    data = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields:
        if name == file_field:
            data.add_field(name, value, filename="recording.wav", content_type=content_type)
        else:
            data.add_field(name, value)
    return data


async def chunks(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    """Yield ``data`` in pieces, so aiohttp sends it with chunked transfer encoding."""
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


def multipart_body(
    fields: Sequence[tuple[str, bytes]], *, boundary: str = "b0undary", file_field: str = "recording"
) -> bytes:
    """A hand-built multipart/form-data body (for malformed and truncated variants)."""
    out = bytearray()
    for name, value in fields:
        out += f"--{boundary}\r\n".encode()
        if name == file_field:
            out += f'Content-Disposition: form-data; name="{name}"; filename="r.wav"\r\n'.encode()
            out += b"Content-Type: audio/wav\r\n\r\n"
        else:
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


async def held_body(data: bytes, hold_at: int, release: asyncio.Event) -> AsyncIterator[bytes]:
    """Send ``data[:hold_at]``, wait for ``release``, then send the rest."""
    for start in range(0, hold_at, 256 * 1024):
        yield data[start : min(start + 256 * 1024, hold_at)]
    await release.wait()
    for start in range(hold_at, len(data), 256 * 1024):
        yield data[start : start + 256 * 1024]


async def put_recording(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    """PUT a recording; return the status and JSON answer, or -1 and the error if the connection broke."""
    try:
        async with session.put(url, data=body, headers={"Content-Type": "audio/wav"}) as resp:
            return resp.status, await resp.json()
    except aiohttp.ClientError as exc:
        return -1, repr(exc)


async def until(condition: Callable[[], bool], seconds: float = 30) -> None:
    """Poll ``condition`` until it holds; fail the test after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)
