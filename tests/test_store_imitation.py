"""Whole uploads over HTTP into moto made to behave like Ceph 16, Swift and s3rver: no recording is lost or replaced.

The recorder proxy imitates each store's gaps (``tests.store_profiles.IMITATIONS``) and the sink is
given the capabilities the probe reports for it. The same cases against the real stores run in
tests/compat/ when those stores are configured.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from streamproxy.config import Settings
from streamproxy.errors import ConfigError
from streamproxy.sinks.s3 import STAGING_DIR
from streamproxy.wiring import build_s3_sink
from tests.helpers import PART, form, incomplete_uploads, objects, payload, s3_settings, sha256
from tests.s3_proxy import S3Proxy
from tests.store_profiles import CAPABILITIES, IMITATIONS

SIZES = [1000, PART, PART + 1, 2 * PART + 7]
Start = Callable[..., Any]


@pytest.fixture
def like(client_for, recorder: S3Proxy, bucket: str) -> Start:
    """Start streamproxy on moto behaving like ``store``, with the capabilities the probe finds there."""

    async def start(store: str, *, adapt: bool = True, **overrides: Any) -> Any:
        recorder.imitate = IMITATIONS[store]
        settings: Settings = s3_settings(recorder.url, bucket, **overrides)
        sink = build_s3_sink(settings)
        if adapt:
            sink.capabilities = CAPABILITIES[store]
        return await client_for(settings, sink)

    return start


async def _post(client: Any, name: str, data: bytes, *, file_first: bool = False) -> tuple[int, dict[str, Any]]:
    fields: list[tuple[str, str | bytes]] = [("filename", name), ("recording", data)]
    resp = await client.post("/recordings", data=form(fields[::-1] if file_first else fields))
    return resp.status, await resp.json()


def _staging_left(s3: Any, bucket: str) -> list[str]:
    return [k for k in objects(s3, bucket) if STAGING_DIR in k]


async def test_the_imitation_is_faithful_without_adaptation(like: Start, s3: Any, bucket: str) -> None:
    """Treated as S3, the imitated Ceph 16 replaces a recording: what the adaptation below prevents."""
    client = await like("ceph16", adapt=False)
    first, second = payload(2 * PART + 7, seed=1), payload(2 * PART + 7, seed=2)
    assert (await _post(client, "dup", first))[0] == 200
    assert (await _post(client, "dup", second))[0] == 200
    assert objects(s3, bucket)["rec/dup.wav"] == second


@pytest.mark.parametrize("file_first", [False, True], ids=["name-first", "file-first"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("store", ["ceph16", "swift", "s3rver"])
async def test_the_same_name_twice_keeps_the_first(
    like: Start, recorder: S3Proxy, s3: Any, bucket: str, store: str, size: int, file_first: bool
) -> None:
    client = await like(store)
    first, second = payload(size, seed=size), payload(size, seed=size + 1)
    status, body = await _post(client, "dup", first, file_first=file_first)
    assert status == 200, body
    status, body = await _post(client, "dup", second, file_first=file_first)
    assert (status, body["error"]) == (409, "exists"), body
    assert objects(s3, bucket)["rec/dup.wav"] == first
    assert not _staging_left(s3, bucket)
    if CAPABILITIES[store].abort_multipart:
        assert incomplete_uploads(s3, bucket) == []
    else:
        assert not [c for c in recorder.calls if c.operation == "AbortMultipartUpload"]


@pytest.mark.parametrize("size", [1, 1000, PART - 1, PART, PART + 1, 3 * PART + 5])
async def test_every_size_stores_on_swift(like: Start, recorder: S3Proxy, s3: Any, bucket: str, size: int) -> None:
    client = await like("swift", manifest=True)
    data = payload(size, seed=size)
    status, body = await _post(client, f"call-{size}", data)
    assert status == 200, body
    key = f"rec/call-{size}.wav"
    stored = objects(s3, bucket)
    assert stored[key] == data and body["sha256"] == sha256(data)
    assert body["manifest"] == f"{key}.json" and f"{key}.json" in stored  # a one-part upload too
    assert body["checksum"]["algorithm"] == "md5"  # the only checksum Swift verifies
    assert not [c for c in recorder.calls if c.operation == "PutObject" and "if-none-match" in c.headers]
    if size > PART:  # no tagging: sha256 and size in the sidecar
        assert stored[f"{key}.sha256"] == f"{hashlib.sha256(data).hexdigest()}  call-{size}.wav\n".encode()
    else:
        assert s3.head_object(Bucket=bucket, Key=key)["Metadata"]["sha256"] == sha256(data)
    assert incomplete_uploads(s3, bucket) == []


async def test_raw_put_on_swift(like: Start, s3: Any, bucket: str) -> None:
    client = await like("swift")
    resp = await client.put("/recordings/raw", data=b"raw bytes", headers={"Content-Type": "audio/wav"})
    assert resp.status == 200, await resp.text()
    assert objects(s3, bucket)["rec/raw.wav"] == b"raw bytes"


@pytest.mark.parametrize("size", [1000, 2 * PART + 7])
async def test_file_before_name_on_s3rver(like: Start, recorder: S3Proxy, s3: Any, bucket: str, size: int) -> None:
    client = await like("s3rver")
    data = payload(size, seed=size)
    status, body = await _post(client, "late", data, file_first=True)
    assert status == 200, body
    assert objects(s3, bucket) == {"rec/late.wav": data}
    assert body["checksum"] is None  # s3rver verifies no checksum: none is claimed
    operations = [c.operation for c in recorder.calls]
    assert "CopyObject" in operations and "UploadPartCopy" not in operations


async def test_concurrent_uploads_of_one_name_on_ceph16_store_one(like: Start, s3: Any, bucket: str) -> None:
    client = await like("ceph16")
    datas = [payload(2 * PART + 7, seed=seed) for seed in range(3)]
    results = await asyncio.gather(*(_post(client, "race", data) for data in datas))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 409, 409], results
    winner = next(data for data, (status, _) in zip(datas, results, strict=True) if status == 200)
    assert objects(s3, bucket) == {"rec/race.wav": winner}


async def test_require_conditional_writes_refuses_a_best_effort_store(bucket: str) -> None:
    settings = s3_settings("http://127.0.0.1:9", bucket, require_conditional_writes=True)
    sink = build_s3_sink(settings)
    with pytest.raises(ConfigError, match=r"--require-conditional-writes: .*CompleteMultipartUpload"):
        sink.capabilities = CAPABILITIES["ceph16"]
    sink.capabilities = CAPABILITIES["swift"]  # guards every final write itself: accepted
    assert sink.strategy.protection == "store-enforced"


def test_require_conditional_writes_contradicts_overwrite() -> None:
    with pytest.raises(ConfigError, match="--require-conditional-writes"):
        s3_settings("http://127.0.0.1:9", "calls", require_conditional_writes=True, overwrite=True)
