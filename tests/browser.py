"""Headless Chromium driven over the DevTools protocol: what a real browser makes of a stored recording.

``Chromium`` starts Debian's ``chromium`` with the flags a root container needs, connects to its
DevTools WebSocket (aiohttp's client: no extra dependency) and runs ``probe_audio`` in a fresh
tab per URL: an ``<audio>`` element loads the URL (Chromium fetches it with Range requests, as
it does any media link), and the script reports ``loadedmetadata``'s ``duration``, plays the
last second to the ``ended`` event (proof that the media pipeline decodes it, not only reads a
header), and decodes the whole file with ``decodeAudioData``.

Real time, not ``--virtual-time-budget``: playback is clocked by the audio sink, which virtual
time does not advance.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import shutil
import tempfile
from typing import Any

import aiohttp

from tests.helpers import required

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--remote-debugging-port=0",
)
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")

# Runs in the page: load ``url`` in an <audio> element, then prove it decodes.
PROBE_AUDIO = """
async (url) => {
  const a = new Audio();
  a.muted = true;
  a.preload = "auto";
  const meta = await new Promise((resolve) => {
    a.onloadedmetadata = () => resolve({duration: a.duration});
    a.onerror = () => resolve({error: a.error ? a.error.code : -1, message: a.error ? a.error.message : ""});
    a.src = url;
  });
  if (meta.error !== undefined) return meta;
  // JSON has no Infinity or NaN: a duration the browser does not know comes back as a string.
  if (!Number.isFinite(meta.duration)) return {duration: String(meta.duration), ended: false};
  const result = {duration: meta.duration, ended: false};
  // Play the last second: "ended" fires only if the frames up to the end were decoded.
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, 15000);
    a.onended = () => { result.ended = true; clearTimeout(timer); resolve(); };
    a.onerror = () => { result.play_error = a.error ? a.error.message : "error"; clearTimeout(timer); resolve(); };
    a.currentTime = Math.max(0, a.duration - 1);
    a.play().catch((e) => { result.play_error = String(e); clearTimeout(timer); resolve(); });
  });
  try {
    const body = await (await fetch(url)).arrayBuffer();
    const ctx = new OfflineAudioContext(1, 1, 48000);
    const buffer = await ctx.decodeAudioData(body);
    result.decoded = buffer.duration;
  } catch (e) {
    result.decode_error = String(e);
  }
  return result;
}
"""


def require_chromium() -> str:
    """Chromium's path; under CI (``CI`` set) its absence fails the test instead of skipping it."""
    return required(CHROMIUM, "chromium is required (apt-get install chromium; .ci/run installs it)")


class Chromium:
    """One headless Chromium process and its DevTools connection."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._proc: asyncio.subprocess.Process | None = None
        self._profile = tempfile.mkdtemp(prefix="streamproxy-chromium-")
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.version = ""

    async def __aenter__(self) -> Chromium:
        self._proc = await asyncio.create_subprocess_exec(
            self.path, *FLAGS, f"--user-data-dir={self._profile}", "about:blank",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self._proc.stderr is not None
        url = await asyncio.wait_for(self._listening(self._proc.stderr), 60)
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(url, max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        self.version = (await self.call("Browser.getVersion"))["product"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.call("Browser.close"), 5)
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self._proc is not None:
            try:
                await asyncio.wait_for(self._proc.wait(), 10)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    @staticmethod
    async def _listening(stderr: asyncio.StreamReader) -> str:
        while line := await stderr.readline():
            found = _LISTENING.search(line.decode(errors="replace"))
            if found:
                return found.group(1)
        raise RuntimeError("chromium exited before it opened its DevTools port")

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            waiter = self._waiting.pop(data.get("id", -1), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(data)
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(RuntimeError("the DevTools connection closed"))

    async def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one DevTools command; return its result (raise on a protocol error)."""
        assert self._ws is not None
        ident = next(self._ids)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = waiter
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        await self._ws.send_str(json.dumps(message))
        answer = await waiter
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return dict(answer.get("result", {}))

    async def evaluate(self, page: str, function: str, *args: Any, seconds: float = 60) -> Any:
        """Open ``page`` in a new tab, run ``function(*args)`` there (awaiting its promise), return its value."""
        target = (await self.call("Target.createTarget", url=page))["targetId"]
        try:
            session = (await self.call("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
            await self._loaded(session, page)
            expression = f"({function})(...{json.dumps(list(args))})"
            result = await asyncio.wait_for(
                self.call("Runtime.evaluate", session, expression=expression, awaitPromise=True, returnByValue=True),
                seconds,
            )
            if "exceptionDetails" in result:
                raise RuntimeError(f"script failed: {result['exceptionDetails']}")
            return result["result"].get("value")
        finally:
            await self.call("Target.closeTarget", targetId=target)

    async def _loaded(self, session: str, page: str) -> None:
        """Wait until ``page`` (not the about:blank a new tab starts with) has loaded."""
        check = f"document.readyState === 'complete' && location.href === {json.dumps(page)}"
        for _ in range(400):
            with contextlib.suppress(RuntimeError):  # the context is replaced while it navigates
                state = await self.call("Runtime.evaluate", session, expression=check, returnByValue=True)
                if state["result"].get("value") is True:
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{page} did not load")

    async def probe_audio(self, page: str, url: str) -> dict[str, Any]:
        """What Chromium makes of the recording at ``url``, from a page on the same origin (``page``)."""
        return dict(await self.evaluate(page, PROBE_AUDIO, url))
