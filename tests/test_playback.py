"""Playback in a real browser: headless Chromium loads each stored format in an <audio> element.

A recording is stored in each ``--store-format`` and served over HTTP by a test server that
honours Range (aiohttp's ``FileResponse``, as nginx or S3 would). Chromium must reach
``loadedmetadata`` with a ``duration`` within 1% (or 0.1 s) of the source, play the last second
to ``ended``, and decode the whole file with ``decodeAudioData``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from streamproxy.audio.formats import SNIFF_BYTES, Hints, classify
from streamproxy.audio.transcode import Transcoder  # PyAV: the audio extra, part of the test extra
from streamproxy.wav import pcm16_header
from tests.browser import Chromium, require_chromium
from tests.transcode_tools import sox_make

SECONDS = 4.0
EXTENSIONS = {"wav-pcm16": ".wav", "mp3": ".mp3", "opus": ".opus", "flac": ".flac"}


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


def store_directly(source: Path, target: str, folder: Path) -> Path:
    """Transcode ``source`` to ``target`` the way the stream does (header in front of the encoded bytes)."""
    data = source.read_bytes()
    arrival = classify(data[:SNIFF_BYTES], Hints(name=source.name), raw_audio="ulaw")
    encoder = Transcoder(arrival, target, bitrate=None)
    body = bytearray()
    for at in range(0, len(data), 65521):
        body += encoder.feed(memoryview(data)[at : at + 65521])
    body += encoder.finish()
    if target == "wav-pcm16":
        facts = encoder.facts()
        assert facts.channels and facts.sample_rate
        head = pcm16_header(facts.channels, facts.sample_rate, len(body))
    else:
        head = encoder.header()
    out = folder / f"{source.stem}-{target}{EXTENSIONS[target]}"
    out.write_bytes(head + bytes(body))
    return out


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


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "sox_args"),
    [
        ("call.ul", ("-r", "8000", "-c", "1", "-e", "mu-law", "-t", "ul")),
        ("stereo48.wav", ("-r", "48000", "-c", "2", "-b", "16")),
    ],
)
async def test_chromium_plays_every_transcoded_format(
    aiohttp_server: Callable[..., Any], tmp_path: Path, name: str, sox_args: tuple[str, ...]
) -> None:
    chromium = require_chromium()
    source = sox_make(tmp_path / name, *sox_args, seconds=SECONDS)
    root = tmp_path / "served"
    root.mkdir()
    stored = {target: store_directly(source, target, root) for target in EXTENSIONS}
    server = await aiohttp_server(media_app(root))
    base = f"http://127.0.0.1:{server.port}"
    async with Chromium(chromium) as browser:
        results = {
            target: await browser.probe_audio(f"{base}/page.html", f"{base}/media/{path.name}")
            for target, path in stored.items()
        }
    assert not judge(results, SECONDS), f"{browser.version}: {judge(results, SECONDS)}"


async def test_the_browser_check_can_fail(aiohttp_server: Callable[..., Any], tmp_path: Path) -> None:
    """Raw µ-law is what a browser cannot play (the issue's starting point): the harness says so."""
    chromium = require_chromium()
    root = tmp_path / "served"
    root.mkdir()
    sox_make(root / "call.ul", "-r", "8000", "-c", "1", "-e", "mu-law", "-t", "ul", seconds=1.0)
    server = await aiohttp_server(media_app(root))
    base = f"http://127.0.0.1:{server.port}"
    async with Chromium(chromium) as browser:
        result = await browser.probe_audio(f"{base}/page.html", f"{base}/media/call.ul")
    assert "error" in result
    assert judge({"ul": result}, 1.0)
