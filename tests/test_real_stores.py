"""The adaptations against the real Ceph RGW 16, Swift + s3api and s3rver: nothing replaced, every size stored.

The stores run on loopback (tests/stores/*.sh; CI starts them in .ci/run) and are found through
``COMPAT_<NAME>_URL`` (e.g. ``COMPAT_CEPH_URL=http://127.0.0.1:7480``). Locally an unconfigured store
is skipped; with ``CI`` set it fails. The sink is given the capabilities the probe measures on
each store (``tests.store_profiles``; the compatibility suite checks that the probe finds exactly
those), so these cases test the writer's adaptation to the real store's behaviour.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from streamproxy.config import Settings
from streamproxy.sinks.s3 import STAGING_DIR
from streamproxy.wiring import build_s3_sink
from tests.helpers import PART, form, payload, s3_settings
from tests.store_profiles import CAPABILITIES

BUCKET = "rec"
CREDENTIALS = {
    "ceph": ("INTEROPKEY", "INTEROPSECRET"),
    "swift": ("test:tester", "testing"),
    "s3rver": ("S3RVER", "S3RVER"),
}
PROFILE = {"ceph": "ceph16", "swift": "swift", "s3rver": "s3rver"}


class Area:
    """One store, a prefix of its own, and a plain client to inspect it."""

    def __init__(self, name: str, endpoint: str) -> None:
        self.name = name
        self.endpoint = endpoint
        self.prefix = f"s3adapt/{uuid.uuid4().hex[:12]}/"
        key, secret = CREDENTIALS[name]
        self.s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            config=Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                s3={"addressing_style": "path"},
            ),
        )

    def settings(self, **overrides: Any) -> Settings:
        return s3_settings(self.endpoint, BUCKET, prefix=self.prefix, **overrides)

    def objects(self) -> dict[str, bytes]:
        listing = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=self.prefix).get("Contents", [])
        return {
            o["Key"].removeprefix(self.prefix): self.s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
            for o in listing
        }

    def clear(self) -> None:
        for o in self.s3.list_objects_v2(Bucket=BUCKET, Prefix=self.prefix).get("Contents", []):
            self.s3.delete_object(Bucket=BUCKET, Key=o["Key"])


def _area(name: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Area]:
    variable = f"COMPAT_{name.upper()}_URL"
    endpoint = os.environ.get(variable, "").strip().rstrip("/")
    if not endpoint:
        reason = f"{name} is not configured: start it with tests/stores/{name}.sh and set {variable}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must run every store)")
        pytest.skip(reason)
    key, secret = CREDENTIALS[name]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    area = Area(name, endpoint)
    yield area
    area.clear()


@pytest.fixture
def ceph(no_real_aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Area]:
    yield from _area("ceph", monkeypatch)


@pytest.fixture
def swift(no_real_aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Area]:
    yield from _area("swift", monkeypatch)


@pytest.fixture
def s3rver(no_real_aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Area]:
    yield from _area("s3rver", monkeypatch)


async def _client(client_for: Any, area: Area, **overrides: Any) -> Any:
    settings = area.settings(**overrides)
    sink = build_s3_sink(settings)
    sink.capabilities = CAPABILITIES[PROFILE[area.name]]
    return await client_for(settings, sink)


async def _post(client: Any, name: str, data: bytes, *, file_first: bool = False) -> tuple[int, dict[str, Any]]:
    fields: list[tuple[str, str | bytes]] = [("filename", name), ("recording", data)]
    resp = await client.post("/recordings", data=form(fields[::-1] if file_first else fields))
    return resp.status, await resp.json()


async def _same_name_twice(client_for: Any, area: Area, size: int, file_first: bool) -> None:
    client = await _client(client_for, area)
    first, second = payload(size, seed=size), payload(size, seed=size + 1)
    status, body = await _post(client, "dup", first, file_first=file_first)
    assert status == 200, body
    status, body = await _post(client, "dup", second, file_first=file_first)
    assert (status, body["error"]) == (409, "exists"), body
    stored = area.objects()
    assert stored["dup.wav"] == first
    assert not [k for k in stored if STAGING_DIR in k]


SIZES = [240 * 1000, 2 * PART + 7]


@pytest.mark.parametrize("file_first", [False, True], ids=["name-first", "file-first"])
@pytest.mark.parametrize("size", SIZES, ids=["one-part", "three-parts"])
async def test_ceph_keeps_the_first_recording_of_a_name(client_for, ceph: Area, size: int, file_first: bool) -> None:
    await _same_name_twice(client_for, ceph, size, file_first)


@pytest.mark.parametrize("file_first", [False, True], ids=["name-first", "file-first"])
@pytest.mark.parametrize("size", SIZES, ids=["one-part", "three-parts"])
async def test_swift_keeps_the_first_recording_of_a_name(client_for, swift: Area, size: int, file_first: bool) -> None:
    await _same_name_twice(client_for, swift, size, file_first)


@pytest.mark.parametrize("size", [1, 240 * 1000, PART, PART + 1, 3 * PART + 5])
async def test_every_size_stores_on_swift(client_for, swift: Area, size: int) -> None:
    client = await _client(client_for, swift, manifest=True)
    data = payload(size, seed=size)
    status, body = await _post(client, f"call-{size}", data)
    assert status == 200, body
    stored = swift.objects()
    assert stored[f"call-{size}.wav"] == data
    assert body["manifest"] == f"{swift.prefix}call-{size}.wav.json" and f"call-{size}.wav.json" in stored
    assert body["checksum"]["algorithm"] == "md5"
    if size > PART:  # Swift has no tagging: the sidecar
        line = f"{hashlib.sha256(data).hexdigest()}  call-{size}.wav\n".encode()
        assert stored[f"call-{size}.wav.sha256"] == line


async def test_raw_put_stores_on_swift(client_for, swift: Area) -> None:
    client = await _client(client_for, swift)
    resp = await client.put("/recordings/raw", data=b"raw recording", headers={"Content-Type": "audio/wav"})
    assert resp.status == 200, await resp.text()
    assert swift.objects() == {"raw.wav": b"raw recording"}


@pytest.mark.parametrize("size", SIZES, ids=["one-part", "three-parts"])
async def test_file_before_name_works_on_s3rver(client_for, s3rver: Area, size: int) -> None:
    client = await _client(client_for, s3rver)
    data = payload(size, seed=size)
    status, body = await _post(client, "late", data, file_first=True)
    assert status == 200, body
    assert s3rver.objects() == {"late.wav": data}
    assert body["checksum"] is None  # s3rver verifies no checksum, so none is claimed


async def test_s3rver_keeps_the_first_recording_of_a_name(client_for, s3rver: Area) -> None:
    await _same_name_twice(client_for, s3rver, 2 * PART + 7, file_first=True)
