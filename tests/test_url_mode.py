"""--url-mode: object URLs, SigV4 presigned links that download the exact bytes, s3:// URIs."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from streamproxy.cli import settings_from_args
from streamproxy.config import ConfigError
from tests.audio_tools import wave_file
from tests.helpers import PART, form, fs_settings, payload, s3_settings, sha256, upload_form


async def test_presigned_link_opens_with_curl(client_for, moto_endpoint, bucket) -> None:
    """The answer's link is a SigV4 presigned GET; curl downloads exactly the uploaded bytes."""
    client = await client_for(s3_settings(moto_endpoint, bucket, url_mode="presigned", presign_expires=3600))
    data = wave_file(frames=4000)
    resp = await client.post("/recordings", data=form([("filename", "call-9"), ("recording", data)]))
    body = await resp.json()
    assert resp.status == 200, body
    url = body["url"]
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{moto_endpoint}/{bucket}/rec/call-9.wav"
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["3600"]
    assert query["X-Amz-Signature"][0]
    curl = shutil.which("curl")
    assert curl is not None, "curl is required"
    proc = await asyncio.create_subprocess_exec(curl, "-sf", url, stdout=subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert out == data and body["sha256"] == sha256(out)


@pytest.mark.parametrize("order", ["filename_first", "file_first"])
async def test_presigned_link_of_a_multipart_upload(client_for, moto_endpoint, bucket, order) -> None:
    """Direct multipart and staged-copy uploads answer links that download the whole object."""
    client = await client_for(s3_settings(moto_endpoint, bucket, url_mode="presigned"))
    data = payload(2 * PART + 11)
    body = await upload_form(client, "long", data, order)
    assert parse_qs(urlsplit(body["url"]).query)["X-Amz-Expires"] == ["604800"]
    async with aiohttp.ClientSession() as session, session.get(body["url"]) as got:
        assert got.status == 200
        assert await got.read() == data


async def test_s3uri_mode(client_for, moto_endpoint, bucket) -> None:
    """s3uri answers s3://bucket/key."""
    client = await client_for(s3_settings(moto_endpoint, bucket, url_mode="s3uri"))
    resp = await client.put("/recordings/u", data=b"x", headers={"Content-Type": "audio/wav"})
    assert (await resp.json())["url"] == f"s3://{bucket}/rec/u.wav"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--storage", "s3://calls/", "--presign-expires", "604801"], "--presign-expires 604801"),
        (["--storage", "s3://calls/", "--presign-expires", "0"], "--presign-expires 0"),
        (["--storage", "s3://calls/", "--url-mode", "public"], "--url-mode 'public'"),
        (["--url-mode", "presigned"], "needs s3:// storage"),
        (["--url-mode", "s3uri"], "needs s3:// storage"),
    ],
)
def test_url_mode_validation(argv: list[str], needle: str) -> None:
    """More than 7 days, unknown modes, and presigned/s3uri on the filesystem are refused at start."""
    with pytest.raises(ConfigError, match=needle.replace("'", ".")):
        settings_from_args(["serve", *argv])


def test_presign_expires_takes_durations() -> None:
    """--presign-expires 7d is the maximum, 15m works too."""
    _, settings = settings_from_args(
        ["serve", "--storage", "s3://calls/", "--url-mode", "presigned", "--presign-expires", "7d"]
    )
    assert settings.presign_expires == 604800
    _, settings = settings_from_args(["serve", "--storage", "s3://calls/", "--presign-expires", "15m"])
    assert settings.presign_expires == 900


async def test_filesystem_object_mode_is_a_file_uri(client_for, tmp_path: Path) -> None:
    """The filesystem sink has one URL mode: a file:// URI of the stored file."""
    client = await client_for(fs_settings(tmp_path))
    resp = await client.put("/recordings/f", data=b"x", headers={"Content-Type": "audio/wav"})
    assert (await resp.json())["url"] == (tmp_path / "f.wav").as_uri()
