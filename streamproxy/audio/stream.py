"""The stage between the request's bytes and the sink writer: classify, then pass, prefix or encode.

``AudioStream`` gets the received chunks in order. It keeps the first ``SNIFF_BYTES`` (outside
the part budget: 4 KiB plus one read) until it can classify the recording, asks its caller to
open the writer for that plan (the key's ``{ext}`` and the Content-Type follow the stored
format), and from then on cuts bytes into part buffers like any upload:

* pass-through: the received bytes go to the writer as they are;
* header in front (headerless G.711 -> WAV): the first buffer is filled from offset 58, after a
  placeholder; at the end the header with the exact sizes is written into it. A writer that
  can patch its first bytes (``HeaderPatching``, the filesystem) gets that buffer at once and the
  header at the end; otherwise (``HeadLast``, S3) the buffer is held until the end and sent
  last, taken with a hold slot of the budget (see ``streamproxy.parts``) so holders cannot
  starve each other;
* transcode: each received chunk goes through the ``Encoder`` in a worker thread (hashing the
  received bytes in the same call), and its output is cut into part buffers; ``wav-pcm16``
  output gets a PCM header in front the same way.

Every part but the last is full-size, the head included, so S3 stores that need equal parts
accept the upload. The sha256 of the received bytes is always computed here. The sha256 of the
stored bytes is too, except where a header went in front of more than one part: the header
comes first in the object but last in time, so the writer hashes what it stored (the filesystem
re-reads its temporary file, S3 reads the object back) and reports it in ``Stored.sha256``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import PayloadTooLarge, StorageFailed, UnsupportedMediaType
from ..parts import BufferPool, PartBuffer
from ..sinks import HeaderPatching, HeadLast, Writer
from ..wav import MAX_WAV_DATA, WavInfo, WavProbe, g711_header, pcm16_header
from . import AudioFacts, Encoder, EncoderFactory
from .formats import SNIFF_BYTES, Arrival, Hints, Plan, classify, plan

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = ["AudioPolicy", "AudioStream", "Outcome"]


@dataclass(frozen=True)
class AudioPolicy:
    """The per-route audio settings: ``--raw-audio``, ``--store-format``, ``--require-audio``, ``--audio-bitrate``."""

    raw_audio: str = "ulaw"
    store_format: str = "wav"
    require_audio: bool = False
    bitrate: int | None = None
    encoders: EncoderFactory | None = None  # None: transcoding is not installed


@dataclass(frozen=True)
class Outcome:
    """What arrived and what was handed to the writer.

    ``stored_sha256`` is ``None`` when the writer hashes the stored bytes itself (a header in
    front of several parts); take ``Stored.sha256`` then.
    """

    plan: Plan | None  # None: nothing arrived
    received_size: int
    received_sha256: str
    stored_size: int
    stored_sha256: str | None
    audio: AudioFacts | None
    wav: WavInfo | None  # the received WAV header, if it was one

    @property
    def arrival(self) -> Arrival | None:
        """The classification of the received bytes."""
        return self.plan.arrival if self.plan is not None else None


class AudioStream:
    """Turn received chunks into part buffers for a writer the stream opens once it has classified them."""

    def __init__(
        self,
        pool: BufferPool,
        *,
        max_bytes: int,
        policy: AudioPolicy,
        hints: Hints,
        open_writer: Callable[[Plan], Awaitable[Writer]],
    ) -> None:
        self._pool = pool
        self._max_bytes = max_bytes
        self._policy = policy
        self._hints = hints
        self._open_writer = open_writer
        self.writer: Writer | None = None  # the caller completes or aborts it
        self.plan: Plan | None = None
        self.size = 0  # received bytes
        # The chunks received before classification, as they came (no copy): at most
        # SNIFF_BYTES plus one read. None once the stream is classified.
        self._sniff: list[bytes | memoryview] | None = []
        self._sniffed = 0
        self._probe = WavProbe()
        self._received = hashlib.sha256()
        self._stored: _Hash | None = None  # output hash where it can run in order (transcode, no header)
        self._hashing: asyncio.Future[None] | None = None
        self._encoder: Encoder | None = None
        self._buffer: PartBuffer | None = None
        self._head: PartBuffer | None = None  # part 1 while it is held for its header
        self._hold = False
        self._parts = 0  # buffers taken for output
        self._output = 0  # bytes after the header (samples, and the pad byte if any)
        self._header_size = 0

    # -- intake ------------------------------------------------------------------------------

    async def feed(self, chunk: bytes | memoryview) -> None:
        """Take the next received chunk; enforces the size limit and ``--require-audio``.

        ``chunk`` may be a view of the HTTP layer's buffer: it is copied once, into a part buffer
        (or read by the encoder), and kept only while the recording is not yet classified.
        """
        limit = self._limit()
        if self.size + len(chunk) > limit:
            raise self._too_large(limit)
        self.size += len(chunk)
        if not self._probe.done:
            self._probe.feed(chunk)
            self._check_wav()
        if self._sniff is not None:
            self._sniff.append(chunk)
            self._sniffed += len(chunk)
            if self._sniffed < SNIFF_BYTES:
                return
            await self._start(complete=False)
            return
        await self._process(chunk)

    def _limit(self) -> int:
        return self._limit_for(self.plan) if self.plan is not None else self._max_bytes

    def _too_large(self, limit: int) -> PayloadTooLarge:
        if limit < self._max_bytes:
            return PayloadTooLarge(
                f"a WAV file holds at most {limit} bytes of G.711; store larger recordings with --store-format original"
            )
        return PayloadTooLarge(f"the recording is larger than the limit of {limit} bytes")

    def _check_wav(self) -> None:
        arrival = self.plan.arrival if self.plan is not None else None
        if (
            self._policy.require_audio
            and self._probe.done
            and self._probe.info is None
            and arrival is not None
            and arrival.kind == "wav"
        ):
            raise UnsupportedMediaType(f"the recording is not audio: {self._probe.reason}", code="not_audio")

    async def _start(self, *, complete: bool) -> None:
        chunks, self._sniff = self._sniff or [], None
        head = bytearray()  # only the first SNIFF_BYTES are copied to classify them
        for chunk in chunks:
            if len(head) >= SNIFF_BYTES:
                break
            head += chunk[: SNIFF_BYTES - len(head)]
        arrival = classify(bytes(head), self._hints, raw_audio=self._policy.raw_audio, complete=complete)
        if self._policy.require_audio and not arrival.is_audio:
            raise UnsupportedMediaType(f"the recording is not audio: {arrival.reason}", code="not_audio")
        chosen = plan(arrival, self._policy.store_format)
        if self.size > self._limit_for(chosen):
            raise self._too_large(self._limit_for(chosen))
        if chosen.transcode is not None:
            if self._policy.encoders is None:
                raise UnsupportedMediaType(f"--store-format {chosen.store_format} needs the transcode extra")
            try:
                self._encoder = self._policy.encoders(arrival, chosen.transcode, bitrate=self._policy.bitrate)
            except ValueError as exc:
                raise UnsupportedMediaType(f"the recording cannot be transcoded: {exc}") from None
            if chosen.header is None and not self._encoder.header_size:
                self._stored = hashlib.sha256()
        self.plan = chosen
        self._check_wav()
        self.writer = writer = await self._open_writer(chosen)
        # A WAV header, or the encoder's own (MP3's Info frame, FLAC's STREAMINFO), final only at the end.
        self._header_size = chosen.header_size or (self._encoder.header_size if self._encoder is not None else 0)
        if self._header_size and not isinstance(writer, HeaderPatching):
            if not isinstance(writer, HeadLast):
                raise StorageFailed("this storage cannot put a header in front of a recording")
            writer.defer_head()
            self._hold = True
        for chunk in chunks:
            await self._process(chunk)

    def _limit_for(self, chosen: Plan) -> int:
        # A RIFF size is 32 bits: the samples, the header and the pad byte must fit.
        return min(self._max_bytes, MAX_WAV_DATA - 1) if chosen.header == "g711" else self._max_bytes

    async def _process(self, data: bytes | memoryview) -> None:
        if not data:
            return
        if self._encoder is not None:
            await self._cut(await self._encoded(memoryview(data), last=False))
        else:
            await self._cut(data)

    async def _encoded(self, data: memoryview, *, last: bool) -> bytes:
        try:
            return await asyncio.to_thread(self._encode, data, last)
        except ValueError as exc:  # the decoder's verdict on bytes it cannot read (PyAV's errors are ValueErrors)
            raise UnsupportedMediaType(f"the recording cannot be decoded: {exc}") from None

    def _encode(self, data: memoryview, last: bool) -> bytes:
        """Hash the received bytes and encode them; runs in a worker thread, one call at a time."""
        assert self._encoder is not None
        if last:
            out = self._encoder.finish()
        else:
            self._received.update(data)
            out = self._encoder.feed(data)
        if self._stored is not None:
            self._stored.update(out)
        return out

    # -- cutting into parts --------------------------------------------------------------------

    async def _cut(self, data: bytes | memoryview, *, received: bool = True) -> None:
        """Copy ``data`` into part buffers, shipping each full one when the next byte arrives."""
        view = memoryview(data)
        self._output += len(view)
        while view:
            buffer = self._buffer
            if buffer is not None and buffer.length == len(buffer.data):
                await self._filled(last=False)
                buffer = None
            if buffer is None:
                buffer = self._buffer = await self._take()
            take = min(len(buffer.data) - buffer.length, len(view))
            # Through a memoryview: ``bytearray[a:b] = view`` first copies a source that is not a
            # bytearray into a temporary one (CPython's bytearray_ass_subscript), a second copy.
            with memoryview(buffer.data) as target:
                target[buffer.length : buffer.length + take] = view[:take]
            buffer.length += take
            view = view[take:]

    async def _take(self) -> PartBuffer:
        first = self._parts == 0
        buffer = await self._pool.acquire(hold=first and self._hold)
        self._parts += 1
        if first and self._header_size:
            buffer.data[: self._header_size] = bytes(self._header_size)  # placeholder until the sizes are known
            buffer.length = self._header_size
        return buffer

    async def _filled(self, *, last: bool, unhashed_tail: int = 0) -> None:
        """Hand on the buffer just filled: hash its received bytes, then ship it (or hold it as the head)."""
        if self._hashing is not None:
            # sha256 is order-dependent; the previous part is long done by now. Wait before taking
            # the buffer out of self._buffer: a cancellation here (the client vanished) must leave
            # it where discard() gives it back, or the budget loses a buffer for good.
            await self._hashing
            self._hashing = None
        part, self._buffer = self._buffer, None
        assert part is not None
        first = self._parts == 1
        if self._encoder is None:
            start = self._header_size if first else 0
            await self._hash(part, start, part.length - unhashed_tail)
        if first and self._hold:
            self._head = part
            return
        assert self.writer is not None
        await self.writer.write(part, last=last)

    async def _hash(self, part: PartBuffer, start: int, end: int) -> None:
        assert self._hashing is None, "_filled waits for the previous part's hash"
        part.retain()
        view = part.view[start:end]
        # hashlib releases the GIL on large buffers: hashing runs on the second core.
        self._hashing = asyncio.get_running_loop().run_in_executor(None, self._received.update, view)
        self._hashing.add_done_callback(lambda _: part.release())

    # -- the end -------------------------------------------------------------------------------

    async def finish(self) -> Outcome:
        """Flush everything to the writer (the head last, with its header) and say what was stored.

        The caller then completes the writer; with nothing received no writer was opened.
        """
        self._probe.finish()
        if self._sniff is not None:
            if not self._sniff:
                return Outcome(None, 0, self._received.hexdigest(), 0, None, None, None)
            await self._start(complete=True)
        self._check_wav()
        chosen = self.plan
        assert chosen is not None and self.writer is not None
        facts: AudioFacts | None = None
        if self._encoder is not None:
            await self._cut(await self._encoded(memoryview(b""), last=True))
            facts = self._encoder.facts()
        pad = 0
        if chosen.header == "g711" and self._output & 1:
            pad = 1  # RIFF chunks have even sizes; the pad byte follows the samples
            await self._cut(b"\0")
        data_size = self._output - pad
        if self._buffer is not None:
            await self._filled(last=True, unhashed_tail=pad)
        if self._hashing is not None:
            await self._hashing
            self._hashing = None
        stored_size = self._header_size + self._output
        received_sha = self._received.hexdigest()
        stored_sha: str | None = received_sha if not chosen.changes_bytes else None
        if self._stored is not None:
            stored_sha = self._stored.hexdigest()
        if self._header_size:
            header = self._header(chosen, data_size, facts)
            stored_sha = await self._put_header(header, data_size)
        if facts is None:
            facts = self._facts(chosen, data_size)
        return Outcome(chosen, self.size, received_sha, stored_size, stored_sha, facts, self._probe.info)

    def _header(self, chosen: Plan, data_size: int, facts: AudioFacts | None) -> bytes:
        if chosen.header is None:
            assert self._encoder is not None
            return self._encoder.header()
        if chosen.header == "g711":
            return g711_header(chosen.arrival.codec or "mulaw", data_size)
        channels = (facts.channels if facts else None) or chosen.arrival.channels or 1
        rate = (facts.sample_rate if facts else None) or chosen.arrival.sample_rate or 8000
        return pcm16_header(channels, rate, data_size)

    async def _put_header(self, header: bytes, data_size: int) -> str | None:
        """Write the header into place; return the stored sha256 if it is known here."""
        writer = self.writer
        if self._hold:
            head, self._head = self._head, None
            assert head is not None and isinstance(writer, HeadLast)
            head.data[: len(header)] = header
            stored: str | None = None
            if self._parts == 1:  # the whole object is in hand
                stored = await asyncio.to_thread(lambda: hashlib.sha256(head.view).hexdigest())
            await writer.write_head(head)
            return stored
        assert isinstance(writer, HeaderPatching)
        await writer.patch_header(header)
        return None

    def _facts(self, chosen: Plan, data_size: int) -> AudioFacts | None:
        arrival = chosen.arrival
        if arrival.kind == "g711":
            return AudioFacts(arrival.codec or "mulaw", 1, 8000, 8, round(data_size / 8000, 3))
        info = self._probe.info
        if arrival.kind == "wav" and info is not None:
            return AudioFacts(
                info.format, info.channels, info.sample_rate, info.bits_per_sample, info.duration(self.size)
            )
        if arrival.kind in ("mp3", "ogg", "flac") and not arrival.reason:
            bits = arrival.bits_per_sample
            return AudioFacts(arrival.format, arrival.channels, arrival.sample_rate, bits, arrival.seconds)
        return None

    async def discard(self) -> None:
        """Give back every buffer this stream still holds and wait for hashing to let go of its part."""
        for attribute in ("_buffer", "_head"):
            part = getattr(self, attribute)
            if part is not None:
                setattr(self, attribute, None)
                part.release()
        if self._hashing is not None:
            await asyncio.gather(self._hashing, return_exceptions=True)
            self._hashing = None
