"""WAV facts through HTTP: the `audio` answer, the stored `audio` metadata or tag, and --require-audio."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.audio_tools import big_wav, sox_file, wave_file
from tests.helpers import (
    PART,
    chunks,
    form,
    fs_settings,
    incomplete_uploads,
    objects,
    payload,
    s3_settings,
    sha256,
    upload_form,
)


def stored_audio(s3: Any, bucket: str, key: str) -> str:
    """The `audio` fact of an object: metadata if written whole, else the tag."""
    meta = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
    if "audio" in meta:
        return str(meta["audio"])
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}
    return tags["audio"]


async def test_sox_mulaw_upload_answers_and_stores_facts(client_for, moto_endpoint, bucket, s3, tmp_path) -> None:
    """A mu-law recording from sox: `audio` in the answer, the same facts as the object's `audio` metadata."""
    data = sox_file(tmp_path, "call.wav", "-r", "8000", "-c", "1", "-e", "mu-law", "-b", "8", seconds=2.25)
    client = await client_for(s3_settings(moto_endpoint, bucket))
    resp = await client.post("/recordings", data=form([("filename", "call-1"), ("recording", data)]))
    body = await resp.json()
    assert resp.status == 200, body
    assert body["audio"] == {
        "format": "mulaw",
        "channels": 1,
        "sample_rate": 8000,
        "bits_per_sample": 8,
        "duration_seconds": 2.25,
    }
    assert stored_audio(s3, bucket, "rec/call-1.wav") == (
        "format=mulaw channels=1 sample_rate=8000 bits_per_sample=8 duration_seconds=2.25"
    )


@pytest.mark.parametrize("order", ["filename_first", "file_first"])
async def test_multipart_sized_wav_facts_travel_as_tag_or_metadata(
    client_for, moto_endpoint, bucket, s3, order
) -> None:
    """A WAV of several parts: a tag after a direct multipart upload, metadata after a staged copy."""
    size = 2 * PART + 1000
    data = big_wav(size)
    client = await client_for(s3_settings(moto_endpoint, bucket))
    body = await upload_form(client, "long", data, order)
    seconds = round((size - 44) / 8000, 3)
    assert body["audio"]["duration_seconds"] == seconds and body["audio"]["format"] == "mulaw"
    assert stored_audio(s3, bucket, "rec/long.wav").endswith(f"duration_seconds={seconds}")
    assert objects(s3, bucket)["rec/long.wav"] == data


async def test_not_audio_is_audio_null(client_for, moto_endpoint, bucket, s3) -> None:
    """Bytes of no known format are stored as they are, with `audio: null` and no `audio` metadata."""
    client = await client_for(s3_settings(moto_endpoint, bucket))
    resp = await client.put("/recordings/odd", data=b"%PDF-1.4\n" + payload(300), headers={"Content-Type": "audio/x-x"})
    body = await resp.json()
    assert resp.status == 200 and body["audio"] is None
    head = s3.head_object(Bucket=bucket, Key="rec/odd.wav")
    assert (
        "audio" not in head["Metadata"] and head["ContentType"] == "audio/x-x"
    )  # unknown bytes keep the client's type


async def test_mp3_gets_the_facts_of_its_first_frame(client_for, moto_endpoint, bucket, s3) -> None:
    """MP3 (ID3 tag, then frames) is stored unchanged as audio/mpeg, with format, channels and rate known."""
    frame = bytes([0xFF, 0xFB, 0x90, 0x44]) + bytes(413)  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz, joint stereo
    client = await client_for(s3_settings(moto_endpoint, bucket, key_template="{filename}{ext}"))
    resp = await client.put("/recordings/song", data=frame * 20, headers={"Content-Type": "audio/mpeg"})
    body = await resp.json()
    assert resp.status == 200 and body["key"] == "rec/song.mp3", body
    assert body["audio"] == {
        "format": "mp3",
        "channels": 2,
        "sample_rate": 44100,
        "bits_per_sample": None,
        "duration_seconds": None,
    }
    assert s3.head_object(Bucket=bucket, Key="rec/song.mp3")["ContentType"] == "audio/mpeg"


@pytest.mark.parametrize("size", [100, 3 * PART + 5])
@pytest.mark.parametrize("kind", ["raw", "form"])
async def test_require_audio_refuses_other_bytes_with_415(client_for, moto_endpoint, bucket, s3, size, kind) -> None:
    """--require-audio with --raw-audio none: 415 not_audio from the first bytes; nothing stored, no upload left."""
    client = await client_for(s3_settings(moto_endpoint, bucket, require_audio=True))
    data = payload(size)
    if kind == "raw":
        resp = await client.put("/recordings/x", data=chunks(data), headers={"Content-Type": "audio/wav"})
    else:
        resp = await client.post("/recordings", data=form([("filename", "x"), ("recording", data)]))
    body = await resp.json()
    assert resp.status == 415, body
    assert body["error"] == "not_audio" and "no audio header" in body["message"]
    assert objects(s3, bucket) == {} and incomplete_uploads(s3, bucket) == []


async def test_require_audio_accepts_wavs_and_refuses_truncated_headers(client_for, moto_endpoint, bucket, s3) -> None:
    """A real WAV passes --require-audio; a body that ends inside the header does not."""
    client = await client_for(s3_settings(moto_endpoint, bucket, require_audio=True))
    good = wave_file(channels=2, frames=400)
    resp = await client.put("/recordings/good", data=good, headers={"Content-Type": "audio/wav"})
    assert resp.status == 200 and (await resp.json())["audio"]["channels"] == 2
    short = await client.put("/recordings/short", data=good[:30], headers={"Content-Type": "audio/wav"})
    assert short.status == 415 and "ends inside" in (await short.json())["message"]
    assert set(objects(s3, bucket)) == {"rec/good.wav"}


async def test_filesystem_answers_audio_and_refuses_non_wav(client_for, tmp_path: Path) -> None:
    """The filesystem sink gives the same answer; --require-audio leaves no file, temporary or not."""
    root = tmp_path / "rec"
    client = await client_for(fs_settings(root, require_audio=True))
    data = wave_file(rate=16000, frames=16000)
    resp = await client.put("/recordings/fs-1", data=data, headers={"Content-Type": "audio/wav"})
    body = await resp.json()
    assert resp.status == 200 and body["sha256"] == sha256(data)
    assert body["audio"] == {
        "format": "pcm",
        "channels": 1,
        "sample_rate": 16000,
        "bits_per_sample": 16,
        "duration_seconds": 1.0,
    }
    bad = await client.put("/recordings/fs-2", data=payload(2 * PART), headers={"Content-Type": "audio/wav"})
    assert bad.status == 415
    assert sorted(p.name for p in root.rglob("*")) == ["fs-1.wav"]
