"""The store-neutral upload suite, run against moto and every configured S3 implementation.

Each case states the outcome streamproxy promises on every store: where a store lacks a feature,
the expectation is the documented adaptation (docs/storage-compatibility.md) or a clear refusal,
never a silent difference. Recordings are small (240 KB for a single PUT, 6 or 12 MiB for the
multipart paths at ``--part-size 5MiB``) to keep the suite fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest

from streamproxy.config import MIB
from streamproxy.errors import ConfigError
from streamproxy.sinks.s3.probe import capability_rows
from tests.compat.stores import MEASURED, Area
from tests.helpers import PART, form, multipart_body, payload, sha256

pytestmark = pytest.mark.compat

SMALL = payload(240 * 1000, seed=11)  # one part: a single PutObject
TWO_PARTS = payload(PART + MIB, seed=12)  # the smallest multipart upload
MULTI = payload(12 * MIB, seed=13)  # three parts, the last one short


async def _store_one(client: Any, name: str, data: bytes) -> dict[str, Any]:
    resp = await client.post("/recordings", data=form([("filename", name), ("recording", data)]))
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200, body
    return body


def _assert_stored(area: Area, key: str, data: bytes, answer: dict[str, Any]) -> None:
    stored = area.objects()
    assert key in stored, sorted(stored)
    assert sha256(stored[key]) == sha256(data) == answer["sha256"]
    assert answer["size"] == len(data) and answer["key"] == key


async def test_single_put(client_for, area: Area) -> None:
    """A recording smaller than one part is stored byte-exact."""
    client = await client_for(area.settings())
    answer = await _store_one(client, "call-1", SMALL)
    _assert_stored(area, f"{area.prefix}call-1.wav", SMALL, answer)


async def test_multipart(client_for, area: Area) -> None:
    """A 12 MiB recording (three parts) is stored byte-exact, by a server that probed the store at start."""
    client = await client_for(area.settings(probe=True))
    answer = await _store_one(client, "call-2", MULTI)
    _assert_stored(area, f"{area.prefix}call-2.wav", MULTI, answer)
    assert area.uploads() in ([], None)


@pytest.mark.parametrize("data", [SMALL, TWO_PARTS], ids=["small", "two-parts"])
async def test_file_before_name(client_for, area: Area, data: bytes) -> None:
    """The file arrives before `filename`: staged, moved to its key, and no staging object is left."""
    client = await client_for(area.settings())
    resp = await client.post("/recordings", data=form([("recording", data), ("filename", "late")]))
    answer = await resp.json()
    assert resp.status == 200, answer
    key = f"{area.prefix}late.wav"
    _assert_stored(area, key, data, answer)
    assert set(area.objects()) == {key}
    assert area.uploads() in ([], None)


async def test_raw_put(client_for, area: Area) -> None:
    """`PUT /recordings/{filename}` with the recording as the body."""
    client = await client_for(area.settings())
    resp = await client.put("/recordings/raw-1", data=SMALL, headers={"Content-Type": "audio/wav"})
    answer = await resp.json()
    assert resp.status == 200, answer
    _assert_stored(area, f"{area.prefix}raw-1.wav", SMALL, answer)


@pytest.mark.parametrize("second", [SMALL, TWO_PARTS], ids=["small", "two-parts"])
@pytest.mark.parametrize("first", [SMALL, TWO_PARTS], ids=["first-small", "first-two-parts"])
async def test_the_same_name_twice_keeps_the_first(client_for, area: Area, first: bytes, second: bytes) -> None:
    """A second upload with the same filename is refused with 409 and the first recording stays byte-exact."""
    client = await client_for(area.settings())
    await _store_one(client, "dup", first)
    resp = await client.post("/recordings", data=form([("filename", "dup"), ("recording", second)]))
    body = await resp.json()
    assert (resp.status, body["error"]) == (409, "exists"), body
    stored = area.objects()
    key = f"{area.prefix}dup.wav"
    expected = {key}
    if len(first) > PART and not MEASURED[area.store.name].tagging:
        # no tags there: a multipart recording's sha256 lives in the sidecar, which must stay the first's too
        expected.add(f"{key}.sha256")
        assert stored[f"{key}.sha256"].decode().split()[0] == sha256(first)
    assert set(stored) == expected
    assert sha256(stored[key]) == sha256(first)
    assert area.uploads() in ([], None)


async def test_the_same_name_twice_file_first_keeps_the_first(client_for, area: Area) -> None:
    """The same on the file-before-name path, where the final write is a server-side move."""
    client = await client_for(area.settings())
    await _store_one(client, "dup", SMALL)
    resp = await client.post("/recordings", data=form([("recording", TWO_PARTS), ("filename", "dup")]))
    body = await resp.json()
    assert (resp.status, body["error"]) == (409, "exists"), body
    stored = area.objects()
    assert set(stored) == {f"{area.prefix}dup.wav"}  # no staging object either
    assert sha256(stored[f"{area.prefix}dup.wav"]) == sha256(SMALL)


async def _vanish(port: int, head: bytes, body: bytes) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body)
    await writer.drain()
    await asyncio.sleep(0.3)  # let the first part reach the store
    writer.transport.abort()


@pytest.mark.parametrize("shape", ["raw", "file_first"])
async def test_client_disconnect_leaves_nothing(client_for, area: Area, shape: str) -> None:
    """A client vanishing after the first part: no object, and no incomplete upload where the store lists them."""
    client = await client_for(area.settings())
    if shape == "raw":
        body = MULTI
        head = f"PUT /recordings/gone HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: {len(body)}"
    else:
        body = multipart_body([("recording", MULTI), ("filename", b"gone")])
        head = (
            "POST /recordings HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b0undary\r\n"
            f"Content-Length: {len(body)}"
        )
    await _vanish(client.port, f"{head}\r\n\r\n".encode(), body[: PART + MIB])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not area.objects() and not area.uploads():
            break
        await asyncio.sleep(0.2)
    assert area.objects() == {}
    assert area.uploads() in ([], None)
    ok = await _store_one(client, "after", SMALL)  # and the server still serves
    assert ok["key"] == f"{area.prefix}after.wav"


@pytest.mark.parametrize("mode", ["md5", "crc32", "crc32c", "crc64nvme", "sha256", "none", "auto"])
async def test_checksum_modes(client_for, area: Area, mode: str) -> None:
    """Each `--checksum` the store accepts stores byte-exact on both paths; one it lacks is refused at start."""
    settings = area.settings(checksum=mode)
    if mode not in ("none", "auto") and mode not in MEASURED[area.store.name].accepted_checksums:
        with pytest.raises(ConfigError, match=f"--checksum {mode}: .* does not take it") as refused:
            await client_for(settings)
        assert area.objects() == {}, refused.value
        return
    client = await client_for(settings)
    for name, data in (("small", SMALL), ("two", TWO_PARTS)):
        answer = await _store_one(client, f"{mode}-{name}", data)
        _assert_stored(area, f"{area.prefix}{mode}-{name}.wav", data, answer)


async def test_presigned_url_downloads_the_recording(client_for, area: Area) -> None:
    """`--url-mode presigned`: the answer's link downloads exactly the stored bytes, without credentials."""
    client = await client_for(area.settings(url_mode="presigned", presign_expires=600))
    answer = await _store_one(client, "linked", SMALL)

    def download() -> bytes:
        with urllib.request.urlopen(answer["url"], timeout=30) as got:
            return bytes(got.read())

    assert await asyncio.to_thread(download) == SMALL


async def test_manifest(client_for, area: Area) -> None:
    """`--manifest`: `<key>.json` beside the recording, describing it."""
    client = await client_for(area.settings(manifest=True))
    answer = await _store_one(client, "audited", SMALL)
    key = f"{area.prefix}audited.wav"
    assert answer["manifest"] == f"{key}.json"
    stored = area.objects()
    manifest = json.loads(stored[f"{key}.json"])
    assert manifest["sha256"] == sha256(SMALL) == sha256(stored[key])
    assert manifest["key"] == key and manifest["size"] == len(SMALL)


async def test_readyz(client_for, area: Area) -> None:
    """/readyz is 200 on every store (it must use a call the store has), after a probe at start."""
    client = await client_for(area.settings(probe=True))
    resp = await client.get("/readyz")
    assert resp.status == 200, await resp.text()


def _cli(area: Area, *args: str) -> subprocess.CompletedProcess[str]:
    where = ("--storage", area.storage, "--s3-endpoint-url", area.store.endpoint)
    return subprocess.run(
        [sys.executable, "-m", "streamproxy", *args, *where],
        capture_output=True,
        text=True,
        env={**os.environ, **area.store.env()},
        timeout=120,
        check=False,
    )


PROTECTION = {"moto": "store-enforced", "ceph": "best-effort", "swift": "store-enforced", "s3rver": "best-effort"}


def test_check_tells_the_truth(area: Area) -> None:
    """`check --write-probe` at default flags: the measured table, the duplicate protection, a verdict of OK."""
    result = _cli(area, "check", "--write-probe")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.strip().splitlines()[-1].startswith("verdict: OK"), out
    expected = MEASURED[area.store.name]
    for feature, state, _ in capability_rows(expected):
        assert re.search(rf"^\s+{re.escape(feature)}\s+{state}\b", out, re.M), (feature, state, out)
    assert f"duplicate protection: {PROTECTION[area.store.name]}" in out
    assert area.objects() == {}
    if expected.abort_multipart:
        assert area.uploads() == []


def test_check_refuses_a_checksum_the_store_does_not_take(area: Area) -> None:
    """`check --checksum crc32` fails where serve would refuse to start, and names the reason."""
    result = _cli(area, "check", "--checksum", "crc32")
    if "crc32" in MEASURED[area.store.name].accepted_checksums:
        assert result.returncode == 0, result.stdout
        verified = "crc32" in MEASURED[area.store.name].checksums
        assert ("verified by the store" in result.stdout) is verified, result.stdout
        assert ("accepted but NOT verified" in result.stdout) is not verified, result.stdout
    else:
        assert result.returncode == 1, result.stdout
        assert "FAIL  checksum: --checksum crc32:" in result.stdout


def test_sweep_removes_old_leftovers(area: Area) -> None:
    """`sweep`: old staging objects go, and so do incomplete uploads where the store can list them."""
    staging = f"{area.prefix}.streamproxy-staging/left-behind"
    area.s3.put_object(Bucket=area.bucket, Key=staging, Body=b"x")
    upload = area.s3.create_multipart_upload(Bucket=area.bucket, Key=f"{area.prefix}interrupted.wav")["UploadId"]
    time.sleep(2.2)
    result = _cli(area, "sweep", "--older-than", "1s")
    assert result.returncode == 0, result.stdout + result.stderr
    assert area.objects() == {}, result.stdout
    if MEASURED[area.store.name].list_multipart_uploads:
        assert area.uploads() == [], result.stdout
        assert f"{area.prefix}interrupted.wav" in result.stdout
    else:
        assert "cannot list incomplete multipart uploads" in result.stdout
        assert "deploy/s3-lifecycle.json" in result.stdout
    assert upload


async def test_probe_finds_the_documented_capabilities(area: Area) -> None:
    """The probe finds exactly the matrix of docs/storage-compatibility.md, and removes what it wrote."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    from streamproxy.sinks.s3.probe import probe

    config = AioConfig(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"},
    )
    async with get_session().create_client(
        "s3", endpoint_url=area.store.endpoint, region_name="us-east-1", config=config
    ) as client:
        report = await probe(client, area.bucket, area.prefix)
    assert report.capabilities == MEASURED[area.store.name], report.evidence
    assert area.objects() == {}
    assert area.uploads() in ([], None)
    if area.store.name == "s3rver":  # no AbortMultipartUpload: the probe says what it could not remove
        assert len(report.leftovers) == 2 and all("incomplete upload" in left for left in report.leftovers)
    else:
        assert report.leftovers == []
