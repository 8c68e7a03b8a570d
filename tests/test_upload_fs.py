"""The filesystem default: same contract, exclusive creates, no temp file left behind."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from streamproxy.sinks.fs import TEMP_PREFIX
from tests.helpers import PART, chunks, form, fs_settings, payload, sha256, upload_form


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("size", [1, PART + 1, 3 * PART + 17])
@pytest.mark.parametrize("order", ["filename_first", "file_first"])
async def test_round_trip_to_files(client_for, tmp_path, size, order) -> None:
    """Recordings land as files with the exact bytes and a file:// URL."""
    client = await client_for(fs_settings(tmp_path))
    data = payload(size)
    body = await upload_form(client, "call-1", data, order)
    target = tmp_path / "call-1.wav"
    assert body["url"] == target.as_uri() and body["sha256"] == sha256(data) and "bucket" not in body
    assert files(tmp_path) == {"call-1.wav": data}
    assert oct(target.stat().st_mode & 0o777) == oct(0o640 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


async def test_exists_is_409_and_file_kept(client_for, tmp_path) -> None:
    """A second upload to the same name is refused; the first file is untouched, no temp file remains."""
    client = await client_for(fs_settings(tmp_path))
    first = await client.put("/recordings/same", data=b"first", headers={"Content-Type": "audio/wav"})
    assert first.status == 200
    second = await client.put("/recordings/same", data=payload(2 * PART), headers={"Content-Type": "audio/wav"})
    assert second.status == 409
    assert files(tmp_path) == {"same.wav": b"first"}


async def test_failures_leave_no_temp_files(client_for, tmp_path) -> None:
    """Oversize, empty and bad-name uploads leave the directory empty."""
    client = await client_for(fs_settings(tmp_path, max_upload_bytes=2 * PART))
    big = await client.put("/recordings/big", data=chunks(payload(3 * PART)), headers={"Content-Type": "audio/wav"})
    assert big.status == 413
    empty = await client.post("/recordings", data=form([("filename", "e"), ("recording", b"")]))
    assert empty.status == 400
    bad = await client.post("/recordings", data=form([("recording", b"abc"), ("filename", "../x")]))
    assert bad.status == 400
    await asyncio.sleep(0.05)
    assert files(tmp_path) == {}
    assert not list(tmp_path.rglob(f"{TEMP_PREFIX}*"))


async def test_key_template_with_directories(client_for, tmp_path) -> None:
    """A template with folders creates them under the root."""
    client = await client_for(fs_settings(tmp_path, key_template="{field:call_id}/{filename}.wav"))
    resp = await client.post("/recordings", data=form([("call_id", "c-9"), ("filename", "leg"), ("recording", b"x")]))
    assert resp.status == 200, await resp.text()
    assert files(tmp_path) == {"c-9/leg.wav": b"x"}
