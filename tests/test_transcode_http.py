"""Each transcoding --store-format through the server, on S3 (moto) and the filesystem.

Raw µ-law (the platform's Call Recording .UL) and a 48 kHz stereo WAV are sent as a client
would; the stored object must be what the answer says (size, sha256, extension, Content-Type),
decode with Debian's ffmpeg to the source's duration within 50 ms, and leave no upload behind.
Long cases span several parts, so the encoder's held header (MP3, FLAC) goes in front last: on S3
as part 1 uploaded at the end, on the filesystem patched in place.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.audio_tools import g711
from tests.helpers import (
    PART,
    audio_settings,
    chunks,
    form,
    incomplete_uploads,
    objects,
    payload,
    put_audio,
    send,
    sha256,
    stored,
)
from tests.transcode_tools import probe, sox_make

TOLERANCE = 0.050
EXTENSIONS = {"wav-pcm16": ".wav", "mp3": ".mp3", "opus": ".opus", "flac": ".flac"}
TYPES = {"wav-pcm16": "audio/wav", "mp3": "audio/mpeg", "opus": "audio/ogg", "flac": "audio/flac"}
CODECS = {"wav-pcm16": "pcm_s16le", "mp3": "mp3", "opus": "opus", "flac": "flac"}


def check(
    body: dict[str, Any], data: bytes, raw: bytes, fmt: str, seconds: float, tmp_path: Path, received: str = "mulaw"
) -> None:
    """The answer describes the stored object; Debian's ffmpeg decodes it to the source's duration."""
    assert body["status"] == "success", body
    assert body["key"].endswith(EXTENSIONS[fmt])
    assert body["size"] == len(data) and body["sha256"] == sha256(data)
    assert body["received"] == {"size": len(raw), "sha256": sha256(raw), "format": received}
    assert body["audio"]["duration_seconds"] == pytest.approx(seconds, abs=0.001)
    out = tmp_path / f"stored{EXTENSIONS[fmt]}"
    out.write_bytes(data)
    got = probe(out)
    assert got.codec == CODECS[fmt]
    assert abs(got.decoded_duration - seconds) <= TOLERANCE, f"{fmt}: decoded {got.decoded_duration} s of {seconds}"
    assert (body["audio"]["channels"], body["audio"]["sample_rate"]) == (got.channels, got.sample_rate)


@pytest.mark.parametrize("fmt", list(EXTENSIONS))
@pytest.mark.parametrize("sink", ["s3", "fs"])
@pytest.mark.parametrize("route", ["form_name_first", "form_file_first", "put"])
async def test_raw_mulaw_in_every_format(client_for, moto_endpoint, bucket, s3, tmp_path, sink, route, fmt) -> None:
    raw = g711(tmp_path, 5.0)
    client = await client_for(audio_settings(sink, moto_endpoint, bucket, tmp_path, store_format=fmt))
    resp = await send(client, route, raw)
    body = await resp.json()
    assert resp.status == 200, body
    data = stored(sink, s3, bucket, tmp_path, body["key"])
    check(body, data, raw, fmt, 5.0, tmp_path)
    if sink == "s3":
        assert s3.head_object(Bucket=bucket, Key=body["key"])["ContentType"] == TYPES[fmt]
        assert incomplete_uploads(s3, bucket) == []
        assert list(objects(s3, bucket)) == [body["key"]]
    else:
        assert [p.name for p in (tmp_path / "store").iterdir()] == [Path(body["key"]).name]


@pytest.mark.slow
@pytest.mark.parametrize(("fmt", "seconds", "bitrate"), [("flac", 1200.0, None), ("mp3", 800.0, 64_000)])
@pytest.mark.parametrize("sink", ["s3", "fs"])
async def test_long_call_spans_parts_with_the_header_put_in_front_last(
    client_for, moto_endpoint, bucket, s3, tmp_path, sink, fmt, seconds, bitrate
) -> None:
    """20 and 13 minutes of µ-law: more than a part of output; the held Info/STREAMINFO header is final."""
    raw = g711(tmp_path, seconds)
    settings = audio_settings(sink, moto_endpoint, bucket, tmp_path, store_format=fmt, audio_bitrate=bitrate)
    client = await client_for(settings)
    resp = await send(client, "form_file_first", raw)
    body = await resp.json()
    assert resp.status == 200, body
    data = stored(sink, s3, bucket, tmp_path, body["key"])
    assert len(data) > PART, "the case must span more than one part"
    check(body, data, raw, fmt, seconds, tmp_path)
    if sink == "s3":
        assert incomplete_uploads(s3, bucket) == []


@pytest.mark.parametrize("fmt", ["opus", "flac"])
async def test_stereo_wav_put(client_for, moto_endpoint, bucket, s3, tmp_path, fmt) -> None:
    """A 48 kHz stereo WAV (the Record module's kind of file, from another recorder) by raw PUT."""
    wav = sox_make(tmp_path / "in.wav", "-r", "48000", "-c", "2", "-b", "16", seconds=4.0).read_bytes()
    client = await client_for(audio_settings("s3", moto_endpoint, bucket, tmp_path, store_format=fmt))
    resp = await client.put("/recordings/meeting-3.wav", data=chunks(wav), headers={"Content-Type": "audio/wav"})
    body = await resp.json()
    assert resp.status == 200, body
    assert body["key"] == f"rec/meeting-3{EXTENSIONS[fmt]}"
    check(body, objects(s3, bucket)[body["key"]], wav, fmt, 4.0, tmp_path, received="wav")
    assert body["audio"]["channels"] == 2


async def test_what_cannot_be_transcoded_is_415_and_nothing_is_stored(client_for, moto_endpoint, bucket, s3, tmp_path):
    gsm = sox_make(tmp_path / "gsm.wav", "-r", "8000", "-c", "1", "-e", "gsm-full-rate").read_bytes()
    client = await client_for(audio_settings("s3", moto_endpoint, bucket, tmp_path, store_format="mp3"))
    resp = await client.post("/recordings", data=form([("filename", "g"), ("recording", gsm)]))
    body = await resp.json()
    assert resp.status == 415, body
    assert body["status"] == "failure" and "gsm610" in body["message"]
    assert objects(s3, bucket) == {} and incomplete_uploads(s3, bucket) == []


async def test_many_transcoding_uploads_holding_their_header_share_a_two_part_budget(
    client_for, moto_endpoint, bucket, s3, tmp_path
) -> None:
    """Eight concurrent FLAC transcodes on S3, each holding part 1 for its STREAMINFO, in a budget of two parts.

    Random µ-law decodes to noise that FLAC cannot shrink below the input's size, so each upload's
    output spans several parts while its head waits: the hold slots keep them from deadlocking.
    """
    settings = audio_settings("s3", moto_endpoint, bucket, tmp_path, store_format="flac", max_buffer_bytes=2 * PART)
    client = await client_for(settings)
    raws = [payload(PART + 4000 * n + 1, seed=n) for n in range(8)]

    bodies = await asyncio.wait_for(
        asyncio.gather(*(put_audio(client, f"c{n}.ul", raws[n]) for n in range(8))), timeout=300
    )
    stored_objects = objects(s3, bucket)
    for n, body in enumerate(bodies):
        data = stored_objects[f"rec/c{n}.flac"]
        assert len(data) > PART and body["size"] == len(data) and body["sha256"] == sha256(data)
        # STREAMINFO's 36-bit sample count, written at the end into the held part 1.
        assert int.from_bytes(data[18:26], "big") & ((1 << 36) - 1) == len(raws[n])
    assert incomplete_uploads(s3, bucket) == []
    check(bodies[7], stored_objects["rec/c7.flac"], raws[7], "flac", len(raws[7]) / 8000, tmp_path)
