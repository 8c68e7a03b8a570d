"""Raw µ-law (the platform's Call Recording .UL) through every route and both real sinks, as a user sends it.

Each case checks what a person would: the answer's key is ``.wav``, the stored object is the exact
G.711 WAV header followed by the received bytes unchanged, the answer's ``sha256``/``size``
describe the stored object and ``received`` the sent bytes, and ``soxi`` reads the stored file
with the right duration.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streamproxy.wav import g711_header
from tests.audio_tools import g711, soxi
from tests.helpers import (
    PART,
    audio_settings,
    form,
    incomplete_uploads,
    objects,
    payload,
    put_audio,
    s3_settings,
    send,
    sha256,
    stored,
)

BIG = 8 * PART + 3  # 40 MiB and more: nine parts, odd length (the pad byte)


def expected_wav(raw: bytes, law: str = "mulaw") -> bytes:
    return g711_header(law, len(raw)) + raw + (b"\0" if len(raw) & 1 else b"")


async def send_and_check(client: Any, route: str, raw: bytes) -> tuple[dict[str, Any], bytes]:
    """Send ``raw`` by ``route``; assert 200 and the answer for the WAV it becomes; return both."""
    resp = await send(client, route, raw)
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200, body
    wav = expected_wav(raw)
    check_answer(body, raw, wav)
    return body, wav


def check_answer(body: dict[str, Any], raw: bytes, wav: bytes) -> None:
    assert body["status"] == "success", body
    assert body["size"] == len(wav) and body["sha256"] == sha256(wav)
    assert body["received"] == {"size": len(raw), "sha256": sha256(raw), "format": "mulaw"}
    assert body["audio"] == {
        "format": "mulaw",
        "channels": 1,
        "sample_rate": 8000,
        "bits_per_sample": 8,
        "duration_seconds": round(len(raw) / 8000, 3),
    }


ROUTES = ["form_name_first", "form_file_first", "put", "post_query"]


@pytest.mark.parametrize("sink", ["s3", "fs"])
@pytest.mark.parametrize("route", ROUTES)
async def test_short_mulaw_becomes_a_playable_wav(client_for, moto_endpoint, bucket, s3, tmp_path, sink, route) -> None:
    """5 s of sox µ-law (one part: S3's single PUT): `.wav`, exact header, same bytes, sox reads 5 s."""
    raw = g711(tmp_path, 5.0)
    client = await client_for(audio_settings(sink, moto_endpoint, bucket, tmp_path))
    body, wav = await send_and_check(client, route, raw)
    assert body["key"] == "rec/call-7.wav" if sink == "s3" else body["key"] == "call-7.wav"
    data = stored(sink, s3, bucket, tmp_path, "rec/call-7.wav")
    assert data == wav
    target = tmp_path / "check.wav"
    target.write_bytes(data)
    facts = soxi(target)
    assert (facts["channels"], facts["rate"], facts["samples"]) == ("1", "8000", str(len(raw)))
    assert abs(float(facts["seconds"]) - 5.0) < 0.001
    if sink == "s3":
        head = s3.head_object(Bucket=bucket, Key="rec/call-7.wav")
        assert head["ContentType"] == "audio/wav" and head["Metadata"]["sha256"] == sha256(wav)
        assert incomplete_uploads(s3, bucket) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sink", "route"),
    [
        ("s3", "form_name_first"),
        ("s3", "form_file_first"),
        ("s3", "put"),
        ("fs", "form_name_first"),
        ("fs", "form_file_first"),
        ("fs", "post_query"),
    ],
)
async def test_long_mulaw_over_many_parts(client_for, moto_endpoint, bucket, s3, tmp_path, sink, route) -> None:
    """40 MiB and more (nine parts on S3, part 1 uploaded last): still the exact WAV, hashed as stored."""
    raw = payload(BIG, seed=11)  # any byte is a µ-law sample; distinct bytes catch a misplaced part
    client = await client_for(audio_settings(sink, moto_endpoint, bucket, tmp_path))
    _, wav = await send_and_check(client, route, raw)
    data = stored(sink, s3, bucket, tmp_path, "rec/call-7.wav")
    assert len(data) == len(wav) and data == wav
    target = tmp_path / "check.wav"
    target.write_bytes(data)
    assert soxi(target)["samples"] == str(len(raw))
    if sink == "s3":
        tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key="rec/call-7.wav")["TagSet"]}
        meta = s3.head_object(Bucket=bucket, Key="rec/call-7.wav")["Metadata"]
        assert sha256(wav) in (tags.get("sha256"), meta.get("sha256"))
        assert incomplete_uploads(s3, bucket) == [] and set(objects(s3, bucket)) == {"rec/call-7.wav"}


async def test_many_headerless_uploads_through_a_two_part_budget(client_for, moto_endpoint, bucket, s3) -> None:
    """Ten concurrent µ-law uploads of three parts each, each holding its part 1 to the end, in a two-part budget."""
    client = await client_for(
        s3_settings(moto_endpoint, bucket, raw_audio="ulaw", key_template="{filename}{ext}", max_buffer_bytes=2 * PART)
    )
    raws = [payload(2 * PART + 1000 * n + 1, seed=n) for n in range(10)]
    uploads = (put_audio(client, f"c{n}.ul", raws[n]) for n in range(10))
    bodies = await asyncio.wait_for(asyncio.gather(*uploads), timeout=240)
    stored_objects = objects(s3, bucket)
    for n, body in enumerate(bodies):
        wav = expected_wav(raws[n])
        assert body["key"] == f"rec/c{n}.wav" and stored_objects[f"rec/c{n}.wav"] == wav
        assert body["sha256"] == sha256(wav)
    assert incomplete_uploads(s3, bucket) == []


@pytest.mark.parametrize("sink", ["s3", "fs"])
async def test_raw_audio_none_stores_bytes_as_they_came(client_for, moto_endpoint, bucket, s3, tmp_path, sink) -> None:
    raw = g711(tmp_path, 1.0)
    client = await client_for(audio_settings(sink, moto_endpoint, bucket, tmp_path, raw_audio="none"))
    resp = await client.post("/recordings", params={"filename": "call-7"}, data=raw)
    body = await resp.json()
    assert resp.status == 200, body
    assert body["key"].endswith("call-7.ul") and body["sha256"] == sha256(raw) and "received" not in body
    assert stored(sink, s3, bucket, tmp_path, "rec/call-7.ul") == raw


async def test_store_format_original_keeps_the_ul(client_for, moto_endpoint, bucket, s3, tmp_path) -> None:
    raw = g711(tmp_path, 1.0)
    client = await client_for(audio_settings("s3", moto_endpoint, bucket, tmp_path, store_format="original"))
    resp = await client.put("/recordings/call-7.UL", data=raw)
    body = await resp.json()
    assert resp.status == 200 and body["key"] == "rec/call-7.ul", body
    assert objects(s3, bucket)["rec/call-7.ul"] == raw
    assert s3.head_object(Bucket=bucket, Key="rec/call-7.ul")["ContentType"] == "audio/basic"
    assert body["audio"]["duration_seconds"] == 1.0 and "received" not in body


async def test_not_audio_is_refused_with_415(client_for, moto_endpoint, bucket, s3, tmp_path) -> None:
    """--require-audio: a PDF is refused, nothing stored, no upload left (the alias is in test_audio_config)."""
    client = await client_for(audio_settings("s3", moto_endpoint, bucket, tmp_path, require_audio=True))
    resp = await client.post(
        "/recordings", data=form([("filename", "x"), ("recording", b"%PDF-1.7\n" + payload(9000))])
    )
    body = await resp.json()
    assert resp.status == 415 and body["error"] == "not_audio" and "PDF" in body["message"], body
    assert objects(s3, bucket) == {} and incomplete_uploads(s3, bucket) == []
    # µ-law is audio: the same settings store it
    resp = await client.post("/recordings", data=form([("filename", "y"), ("recording", g711(tmp_path, 0.5))]))
    assert resp.status == 200, await resp.json()


async def test_names_lose_their_audio_extension(client_for, moto_endpoint, bucket, s3, tmp_path) -> None:
    """filename=call-7.wav is stored as call-7.wav; without a filename field the file part's name is used."""
    client = await client_for(audio_settings("s3", moto_endpoint, bucket, tmp_path))
    wav = expected_wav(g711(tmp_path, 0.5))
    resp = await client.post("/recordings", data=form([("filename", "call-7.wav"), ("recording", wav)]))
    assert (await resp.json())["key"] == "rec/call-7.wav"
    resp = await client.post("/recordings", data=form([("recording", wav)]))  # form() names the part recording.wav
    body = await resp.json()
    assert resp.status == 200 and body["key"] == "rec/recording.wav", body
    assert body["sha256"] == sha256(wav) and "received" not in body
