"""Playback in a real browser: headless Chromium loads each stored format from the URL streamproxy answered.

A recording is sent to streamproxy as the platform sends it, once per ``--store-format``; the URL
in the answer is opened in an ``<audio>`` element of headless Chromium:

* filesystem sink: the answer is a ``file://`` URL inside the storage directory, which a test
  server publishes over HTTP with Range support (aiohttp's ``FileResponse``, as nginx would);
* S3 (moto) with ``--url-mode presigned``: the answer's presigned link itself, cross-origin, as
  an e-mailed link is opened.

Chromium must reach ``loadedmetadata`` with a ``duration`` within 1% (or 0.1 s) of the source,
play the last second to ``ended``, and decode the whole file with ``decodeAudioData``. What
Chromium plays is recorded in docs/configuration.md ("Which --store-format when").
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from aiohttp import web

from tests.audio_tools import g711
from tests.browser import Chromium, require_chromium
from tests.helpers import audio_settings, chunks, form, objects
from tests.transcode_tools import sox_make

SECONDS = 4.0
# Every store format Chromium must play. ``original`` of headerless µ-law is the one it cannot
# (raw .ul has no header to say what it is): that is checked to fail, so the harness can fail.
PLAYABLE = ("wav", "wav-pcm16", "mp3", "opus", "flac")


def media_app(root: Path) -> web.Application:
    """Serve ``root`` under /media/ (Range honoured by FileResponse) and a blank page on the same origin."""
    base = root.resolve()

    async def media(request: web.Request) -> web.StreamResponse:
        path = base / request.match_info["path"]
        if ".." in path.parts:
            raise web.HTTPNotFound()
        return web.FileResponse(path)  # 404 itself for a missing file

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>playback</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/media/{path:.+}", media)
    app.router.add_get("/page.html", page)
    return app


def judge(results: dict[str, dict[str, Any]], seconds: float) -> list[str]:
    """Return what is wrong with each format's result (empty: Chromium played them all right)."""
    tolerance = max(0.1, seconds * 0.01)
    wrong = []
    for name, result in results.items():
        duration = result.get("duration")
        if not isinstance(duration, (int, float)) or abs(duration - seconds) > tolerance:
            wrong.append(f"{name}: duration {duration!r}, expected {seconds} s ({result})")
        elif not result.get("ended"):
            wrong.append(f"{name}: did not play to the end ({result})")
        elif abs(float(result.get("decoded", -1)) - seconds) > tolerance:
            wrong.append(f"{name}: decodeAudioData gave {result.get('decoded')} s ({result})")
    return wrong


async def upload(client: Any, body: bytes, name: str, content_type: str) -> dict[str, Any]:
    if content_type != "audio/wav":  # the platform's REST module: filename, then the file
        data = form([("filename", name), ("recording", body)], content_type=content_type)
        resp = await client.post("/recordings", data=data)
    else:
        resp = await client.put(f"/recordings/{name}", data=chunks(body), headers={"Content-Type": content_type})
    answer = dict(await resp.json())
    assert resp.status == 200, answer
    return answer


async def store_each_format(
    client_for: Callable[..., Any], settings: Callable[[str], Any], recordings: dict[str, tuple[bytes, str]]
) -> dict[str, str]:
    """Send each recording to a streamproxy per store format; return the answered URL per ``format/recording``."""
    urls = {}
    for fmt in PLAYABLE:
        client = await client_for(settings(fmt))
        for label, (body, content_type) in recordings.items():
            answer = await upload(client, body, f"{label}-{fmt}", content_type)
            urls[f"{fmt}/{label}"] = answer["url"]
    return urls


def sources(tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    """Raw µ-law and A-law as the Call Recording module sends them (typed), and a 48 kHz stereo WAV by PUT."""
    stereo = sox_make(tmp_path / "stereo.wav", "-r", "48000", "-c", "2", "-b", "16", seconds=SECONDS)
    return {
        "ulaw": (g711(tmp_path, SECONDS), "audio/basic"),
        "alaw": (g711(tmp_path, SECONDS, law="a-law", name="a.raw"), "audio/PCMA"),
        "stereo48k": (stereo.read_bytes(), "audio/wav"),
    }


@pytest.mark.slow
async def test_chromium_plays_every_format_from_the_filesystem_url(
    client_for: Callable[..., Any], aiohttp_server: Callable[..., Any], moto_endpoint, bucket, tmp_path: Path
) -> None:
    chromium = require_chromium()
    recordings = sources(tmp_path)
    root = tmp_path / "store"
    urls = await store_each_format(
        client_for,
        lambda fmt: audio_settings("fs", moto_endpoint, bucket, tmp_path, store_format=fmt),
        recordings,
    )
    server = await aiohttp_server(media_app(root))
    base = f"http://127.0.0.1:{server.port}"
    async with Chromium(chromium) as browser:
        results = {}
        for label, url in urls.items():
            parts = urlsplit(url)
            assert parts.scheme == "file"
            relative = Path(unquote(parts.path)).relative_to(root.resolve())
            results[label] = await browser.probe_audio(f"{base}/page.html", f"{base}/media/{relative}")
    assert not judge(results, SECONDS), f"{browser.version}: {judge(results, SECONDS)}"


@pytest.mark.slow
async def test_chromium_plays_every_format_from_the_presigned_s3_link(
    client_for: Callable[..., Any], aiohttp_server: Callable[..., Any], moto_endpoint, bucket, s3, tmp_path: Path
) -> None:
    """The answer's presigned link, opened as is; the bucket allows cross-origin GETs for decodeAudioData's fetch."""
    chromium = require_chromium()
    s3.put_bucket_cors(
        Bucket=bucket,
        CORSConfiguration={
            "CORSRules": [{"AllowedMethods": ["GET"], "AllowedOrigins": ["*"], "AllowedHeaders": ["*"]}]
        },
    )
    recordings = {label: value for label, value in sources(tmp_path).items() if label != "alaw"}
    urls = await store_each_format(
        client_for,
        lambda fmt: audio_settings("s3", moto_endpoint, bucket, tmp_path, store_format=fmt, url_mode="presigned"),
        recordings,
    )
    assert len(objects(s3, bucket)) == len(urls)
    server = await aiohttp_server(media_app(tmp_path))
    page = f"http://127.0.0.1:{server.port}/page.html"
    async with Chromium(chromium) as browser:
        results = {}
        for label, url in urls.items():
            assert urlsplit(url).netloc == urlsplit(moto_endpoint).netloc and "X-Amz-Signature" in url
            results[label] = await browser.probe_audio(page, url)
    assert not judge(results, SECONDS), f"{browser.version}: {judge(results, SECONDS)}"


async def test_chromium_cannot_play_raw_mulaw_and_the_check_says_so(
    client_for: Callable[..., Any], aiohttp_server: Callable[..., Any], moto_endpoint, bucket, tmp_path: Path
) -> None:
    """``--store-format original`` keeps the platform's .ul as it came: Chromium cannot play it, the harness says so."""
    chromium = require_chromium()
    client = await client_for(audio_settings("fs", moto_endpoint, bucket, tmp_path, store_format="original"))
    answer = await upload(client, g711(tmp_path, 1.0), "raw", "audio/basic")
    assert answer["key"].endswith(".ul")
    root = (tmp_path / "store").resolve()
    server = await aiohttp_server(media_app(root))
    base = f"http://127.0.0.1:{server.port}"
    relative = Path(unquote(urlsplit(answer["url"]).path)).relative_to(root)
    async with Chromium(chromium) as browser:
        result = await browser.probe_audio(f"{base}/page.html", f"{base}/media/{relative}")
    assert "error" in result, result
    assert judge({"original": result}, 1.0)
