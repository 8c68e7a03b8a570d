"""--manifest: `<key>.json` beside each stored recording, matching the upload; none for a failed one."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from tests.audio_tools import big_wav, wave_file
from tests.helpers import (
    KMS_KEY,
    PART,
    form,
    fs_settings,
    incomplete_uploads,
    md5_checksum,
    objects,
    payload,
    s3_settings,
    sha256,
)


def _parse_time(text: str) -> datetime:
    assert text.endswith("Z")
    return datetime.fromisoformat(text[:-1] + "+00:00")


@pytest.mark.parametrize("size", [100, 3 * PART + 5])
async def test_manifest_matches_the_upload(client_for, moto_endpoint, bucket, s3, size) -> None:
    """Every documented field, including text fields sent after the file, the client and the request id."""
    client = await client_for(s3_settings(moto_endpoint, bucket, manifest=True))
    data = wave_file(frames=size // 2) if size < PART else big_wav(size)
    before = datetime.now(UTC).replace(microsecond=0)
    fields: list[tuple[str, str | bytes]] = [
        ("caller", "+49 30 123"),
        ("filename", "call-5"),
        ("recording", data),
        ("agent", "Zoë"),
        ("note", "after the file"),
    ]
    resp = await client.post(
        "/recordings", data=form(fields), headers={"User-Agent": "FuseREST/2.1", "X-Request-ID": "req-42"}
    )
    body = await resp.json()
    assert resp.status == 200, body
    assert body["manifest"] == "rec/call-5.wav.json"
    head = s3.head_object(Bucket=bucket, Key="rec/call-5.wav.json")
    assert head["ContentType"] == "application/json"
    manifest = json.loads(objects(s3, bucket)["rec/call-5.wav.json"])
    received, completed = _parse_time(manifest.pop("received_at")), _parse_time(manifest.pop("completed_at"))
    assert before <= received <= completed <= datetime.now(UTC)
    assert manifest.pop("streamproxy_version")
    assert manifest == {
        "manifest_version": 1,
        "key": "rec/call-5.wav",
        "bucket": bucket,
        "storage": f"s3://{bucket}/rec/",
        "size": len(data),
        "sha256": sha256(data),
        "received": {"size": len(data), "sha256": sha256(data), "format": "wav"},  # a WAV is stored unchanged
        "content_type": "audio/wav",
        "part_size": PART,
        "parts": 1 if size < PART else 4,
        "audio": body["audio"],
        "fields": {"caller": "+49 30 123", "filename": "call-5", "agent": "Zoë", "note": "after the file"},
        "client": {"address": "127.0.0.1", "user_agent": "FuseREST/2.1"},
        "request_id": "req-42",
        "checksum": body["checksum"],
    }
    assert body["checksum"] == md5_checksum(data, PART)  # --checksum auto on a store never probed: MD5
    assert manifest["audio"]["format"] == ("pcm" if size < PART else "mulaw")
    assert set(objects(s3, bucket)) == {"rec/call-5.wav", "rec/call-5.wav.json"}


async def test_manifest_gets_the_recordings_encryption_retention_and_tags(
    client_for,
    recorder,
    locked_bucket,
    s3,
) -> None:
    """The manifest's PutObject carries the same SSE, storage class, Object Lock and tags as the recording."""
    settings = s3_settings(
        recorder.url,
        locked_bucket,
        manifest=True,
        sse="aws:kms",
        sse_kms_key_id=KMS_KEY,
        storage_class="GLACIER_IR",
        object_lock_mode="COMPLIANCE",
        object_lock_days=30,
        tags=(("team", "ivr"),),
        tag_fields=("call_id",),
    )
    client = await client_for(settings)
    resp = await client.post(
        "/recordings", data=form([("recording", payload(2 * PART)), ("filename", "m"), ("call_id", "c-1")])
    )
    assert resp.status == 200, await resp.text()
    [recording] = recorder.final_writes("rec/m.wav")
    [manifest] = recorder.final_writes("rec/m.wav.json")
    assert manifest.operation == "PutObject"
    for name in (
        "x-amz-server-side-encryption",
        "x-amz-server-side-encryption-aws-kms-key-id",
        "x-amz-storage-class",
        "x-amz-object-lock-mode",
    ):
        assert manifest.headers[name] == recording.headers[name], name
    assert dict(parse_qsl(manifest.headers["x-amz-tagging"])) == {"team": "ivr", "call_id": "c-1"}
    head = s3.head_object(Bucket=locked_bucket, Key="rec/m.wav.json")
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ServerSideEncryption"] == "aws:kms"


async def test_failed_uploads_write_no_manifest(client_for, moto_endpoint, bucket, s3) -> None:
    """409, 415 and 400 answers leave neither recording nor manifest."""
    client = await client_for(s3_settings(moto_endpoint, bucket, manifest=True, require_audio=True))
    s3.put_object(Bucket=bucket, Key="rec/taken.wav", Body=b"old")
    cases: list[tuple[list[tuple[str, str | bytes]], int]] = [
        ([("filename", "taken"), ("recording", wave_file(frames=10))], 409),
        ([("filename", "notwav"), ("recording", payload(2 * PART))], 415),
        ([("filename", "../x"), ("recording", wave_file(frames=10))], 400),
    ]
    for fields, status in cases:
        resp = await client.post("/recordings", data=form(fields))
        assert resp.status == status, await resp.text()
    assert objects(s3, bucket) == {"rec/taken.wav": b"old"}
    assert incomplete_uploads(s3, bucket) == []


async def test_manifest_failure_keeps_the_recording_and_is_counted(client_for, moto_endpoint, bucket, s3) -> None:
    """If the manifest cannot be written, the stored recording is still a success; manifest is null and counted."""
    client = await client_for(s3_settings(moto_endpoint, bucket, manifest=True))
    s3.put_object(Bucket=bucket, Key="rec/dup.wav.json", Body=b"{}")  # the manifest's key is taken
    data = wave_file(frames=100)
    resp = await client.put("/recordings/dup", data=data, headers={"Content-Type": "audio/wav"})
    body = await resp.json()
    assert resp.status == 200, body
    assert body["status"] == "success" and body["manifest"] is None
    assert objects(s3, bucket) == {"rec/dup.wav": data, "rec/dup.wav.json": b"{}"}
    exposition = await (await client.get("/metrics")).text()
    assert "streamproxy_manifest_failures_total 1.0" in exposition  # counted once, in one place
    # the manifest is not a recording: neither its bytes nor its failed write count as an upload's
    assert f"streamproxy_received_bytes_total {float(len(data))}" in exposition
    assert "streamproxy_uploads_aborted_total 0.0" in exposition


async def test_no_manifest_key_without_the_flag(client_for, moto_endpoint, bucket, s3) -> None:
    """Without --manifest the answer has no `manifest` and nothing extra is written."""
    client = await client_for(s3_settings(moto_endpoint, bucket))
    resp = await client.put("/recordings/plain", data=b"x", headers={"Content-Type": "audio/wav"})
    assert "manifest" not in await resp.json()
    assert set(objects(s3, bucket)) == {"rec/plain.wav"}


def _read(path: Path) -> bytes:
    return path.read_bytes()


async def test_manifest_on_the_filesystem(client_for, tmp_path: Path) -> None:
    """The filesystem sink writes the manifest file beside the recording; a taken name is counted, not fatal."""
    client = await client_for(fs_settings(tmp_path, manifest=True))
    data = wave_file(frames=800)
    resp = await client.post("/recordings", data=form([("filename", "f-1"), ("recording", data), ("late", "yes")]))
    body = await resp.json()
    assert resp.status == 200 and body["manifest"] == "f-1.wav.json"
    manifest = json.loads(_read(tmp_path / "f-1.wav.json"))
    assert manifest["key"] == "f-1.wav" and manifest["bucket"] is None and manifest["sha256"] == sha256(data)
    assert manifest["fields"] == {"filename": "f-1", "late": "yes"} and manifest["audio"]["duration_seconds"] == 0.1
    (tmp_path / "f-2.wav.json").write_bytes(b"{}")
    resp = await client.put("/recordings/f-2", data=data, headers={"Content-Type": "audio/wav"})
    body = await resp.json()
    assert resp.status == 200 and body["manifest"] is None
    assert _read(tmp_path / "f-2.wav") == data and _read(tmp_path / "f-2.wav.json") == b"{}"
    assert "streamproxy_manifest_failures_total 1.0" in await (await client.get("/metrics")).text()
