"""A streaming transcoder over PyAV (FFmpeg's codecs): ``Transcoder`` implements ``Encoder``.

Input is what the client sent, fed in pieces: a WAV file (PCM 8/16/24/32 bits, 32/64-bit float,
µ-law or A-law; any channel count and rate), or headerless G.711. Its header is read by
``WavProbe`` as it streams by; the samples are decoded by FFmpeg's PCM decoders in slices of at
most ``SLICE_BYTES``, and each slice goes straight to the encoder, so memory never grows with the
recording. Nothing touches the disk: the muxer writes into ``_Output``, an in-memory file that
``feed`` drains after every call.

Targets (``--store-format``):

- ``wav-pcm16``: raw little-endian 16-bit samples, same channels and rate; the WAV header with
  exact sizes is put in front by ``streamproxy.audio.stream``.
- ``mp3``: LAME, constant bitrate, in an MP3 file with a Xing/LAME ``Info`` frame.
- ``opus``: libopus in Ogg (``.opus``), the ``voip`` application (tuned for speech).
- ``flac``: FLAC, 16 bits, lossless for G.711 and 8/16-bit PCM.

Two of these muxers go back to their header at the end: MP3 writes the frame count, byte count
and the encoder's padding into the ``Info`` frame (without them a decoder plays the encoder's
delay and padding too: 5.18 s for a 5.00 s call at 8 kHz), and FLAC writes the sample count and
MD5 into ``STREAMINFO`` (without it neither ffprobe nor Chromium knows the duration). A pipe
cannot do that, so the output claims to be seekable and holds its first ``header_size`` bytes
(the header the muxer writes before any audio: 333 bytes for MP3, about 8 KiB for FLAC, most of it
padding) until ``finish``; ``header()`` returns them, final, and the stream puts them in front of
the rest exactly as it does a WAV header whose sizes are known only at the end. Any attempt of
a muxer to rewrite bytes already handed on raises instead of storing a wrong file. Ogg never
goes back (its pages carry their own timestamps), so Opus holds nothing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import av
import av.error

from ..wav import WavProbe
from . import TRANSCODED_FORMATS, AudioFacts
from .formats import SNIFF_BYTES

if TYPE_CHECKING:
    from av.audio.codeccontext import AudioCodecContext
    from av.audio.frame import AudioFrame
    from av.audio.resampler import AudioResampler
    from av.audio.stream import AudioStream
    from av.container import OutputContainer

    from .formats import Arrival

__all__ = [
    "DEFAULT_BITRATES",
    "SLICE_BYTES",
    "SourceFormat",
    "Transcoder",
    "UnsupportedAudio",
    "default_bitrate",
    "open_encoder",
]

# Bytes of received samples decoded and encoded at a time: whatever size of piece ``feed`` gets
# (a whole part buffer, 8 MiB, is typical), the decoded frames in flight stay below ~256 KiB.
SLICE_BYTES = 64 * 1024

# Default bitrates for speech, bits per second, (mono, stereo or more). See docs/configuration.md.
# - opus: 24 kbit/s mono and 32 kbit/s stereo are Xiph's recommendation for speech (audiobooks,
#   podcasts): fullband speech is transparent there, and narrowband 8 kHz calls use less than that.
# - mp3: 32 kbit/s per channel; at 8 kHz that is 4 bits a sample, well above what G.711's own
#   narrowband needs, and the lowest MPEG-1 rate when the source is 32-48 kHz.
DEFAULT_BITRATES: dict[str, tuple[int, int]] = {"opus": (24_000, 32_000), "mp3": (32_000, 64_000)}

# What FFmpeg calls the PCM decoder for a WAV format name (from ``streamproxy.wav``) and its bits.
_PCM_DECODERS: dict[tuple[str, int], str] = {
    ("pcm", 8): "pcm_u8",
    ("pcm", 16): "pcm_s16le",
    ("pcm", 24): "pcm_s24le",
    ("pcm", 32): "pcm_s32le",
    ("ieee_float", 32): "pcm_f32le",
    ("ieee_float", 64): "pcm_f64le",
    ("mulaw", 8): "pcm_mulaw",
    ("alaw", 8): "pcm_alaw",
}
# target: (muxer, encoder, rates the encoder takes or None for any, most channels, sample format)
_TARGETS: dict[str, tuple[str, str, tuple[int, ...] | None, int, str]] = {
    "wav-pcm16": ("s16le", "pcm_s16le", None, 8, "s16"),
    "mp3": ("mp3", "libmp3lame", (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000), 2, "s16p"),
    "opus": ("ogg", "libopus", (8000, 12000, 16000, 24000, 48000), 2, "s16"),
    "flac": ("flac", "flac", None, 8, "s16"),
}
# FFmpeg's default channel layout for each channel count (WAV channel masks are not carried over).
_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
# Muxers that go back to their header at the end (see the module docstring).
_REWRITES_HEADER = ("mp3", "flac")


class UnsupportedAudio(ValueError):
    """The source is audio this transcoder cannot decode (ADPCM, GSM, ... in a WAV), or not audio at all."""


@dataclass(frozen=True)
class SourceFormat:
    """The received samples: a WAV format name (``pcm``, ``ieee_float``, ``mulaw``, ``alaw``) and its layout."""

    codec: str
    channels: int
    sample_rate: int
    bits_per_sample: int

    @property
    def decoder(self) -> str:
        """FFmpeg's decoder for these samples; raises ``UnsupportedAudio`` if there is none."""
        # WAV samples are left-justified in whole bytes: 20-bit audio reads as 24-bit, 12 as 16.
        name = _PCM_DECODERS.get((self.codec, (self.bits_per_sample + 7) // 8 * 8))
        if name is None:
            raise UnsupportedAudio(f"cannot transcode {self.bits_per_sample}-bit {self.codec} audio")
        return name

    @property
    def block_align(self) -> int:
        """Bytes per sample frame (one sample of every channel)."""
        return self.channels * ((self.bits_per_sample + 7) // 8)

    def check(self) -> SourceFormat:
        """Return ``self`` if it can be decoded; else raise ``UnsupportedAudio``."""
        _ = self.decoder
        if not 1 <= self.channels <= 8:
            raise UnsupportedAudio(f"cannot transcode audio with {self.channels} channels")
        if not 1000 <= self.sample_rate <= 384_000:
            raise UnsupportedAudio(f"cannot transcode audio at {self.sample_rate} Hz")
        return self


def default_bitrate(target: str, channels: int) -> int | None:
    """Return the bitrate used without ``--audio-bitrate`` (``None``: the format has none to choose)."""
    pair = DEFAULT_BITRATES.get(target)
    if pair is None:
        return None
    return pair[0] if channels == 1 else pair[1]


class _Output(io.RawIOBase):
    """The file the muxer writes into: drained by the caller, never on disk.

    Until ``hold`` is called everything written is pending output. ``hold(n)`` keeps the first
    ``n`` bytes back (the header the muxer may rewrite at the end) and hands on the rest; a later
    write inside those ``n`` bytes patches them. A write into bytes already handed on raises.
    """

    def __init__(self) -> None:
        super().__init__()
        self.head = bytearray()
        self.held = 0
        self._pending: list[bytes] = []
        self._drained = 0  # bytes before this offset have been handed on (or held)
        self._pos = 0
        self._end = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._end}[whence]
        if not 0 <= base + offset <= self._end:
            raise OSError(f"seek to {base + offset} outside 0..{self._end}")
        self._pos = base + offset
        return self._pos

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        size = len(data)
        start, end = self._pos, self._pos + size
        if start == self._end:
            self._pending.append(bytes(data))
            self._end = end
        elif end <= self.held:
            self.head[start:end] = data
        elif start >= self._drained:  # rewriting pending bytes: join them first (rare, and small)
            joined = bytearray(b"".join(self._pending))
            joined[start - self._drained : end - self._drained] = data
            self._pending = [bytes(joined)]
            self._end = max(self._end, end)
        else:
            raise OSError(f"the muxer rewrote bytes {start}..{end} that were already handed on")
        self._pos = end
        return size

    def hold(self) -> int:
        """Keep everything written so far back as the header; return its size."""
        self.head = bytearray(b"".join(self._pending))
        self._pending = []
        self.held = self._drained = len(self.head)
        return self.held

    def drain(self) -> bytes:
        """Return the bytes written since the last drain (beyond the held header)."""
        if not self._pending:
            return b""
        out = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending = []
        self._drained = self._end
        return out


class Transcoder:
    """One recording from the received bytes to ``target``; see the module docstring.

    ``source`` is what the classification found. For headerless G.711 it is complete; for a WAV
    file its details may be missing (a header longer than the sniffed bytes), and are then read
    from the WAV header as it arrives: ``wav-pcm16`` and ``opus`` hold no header and work the
    same; ``mp3`` and ``flac`` refuse, because ``header_size`` must be known from the start.
    """

    def __init__(self, source: Arrival, target: str, *, bitrate: int | None = None) -> None:
        if target not in TRANSCODED_FORMATS:
            raise ValueError(f"unknown target format {target!r}; expected one of {', '.join(TRANSCODED_FORMATS)}")
        if bitrate is not None and bitrate <= 0:
            raise ValueError(f"bitrate must be positive, not {bitrate}")
        self.target = target
        self.bitrate = bitrate
        self._probe: WavProbe | None = None
        self._probed = 0  # bytes fed while the WAV header was being read
        self._data_left: int | None = None  # bytes of samples still expected, if the WAV header says
        self._remainder = b""  # the end of a sample frame split across two feeds
        self._samples = 0  # per channel, decoded so far
        self._finished = False
        self._out = _Output()
        self._container: OutputContainer | None = None
        self._stream: AudioStream | None = None
        self._decoder: AudioCodecContext | None = None
        self._pcm16: AudioResampler | None = None
        self._channels = 0
        self._rate = 0
        self.source: SourceFormat | None = None
        self.header_size = 0  # mp3 and flac: set by _start, which runs here for them (or they refuse)
        if source.kind == "g711":
            self._start(SourceFormat(source.codec or "mulaw", 1, 8000, 8))
        elif source.kind == "wav" and not source.reason:
            self._probe = WavProbe()
            if source.codec and source.channels and source.sample_rate:
                # Known from the sniffed bytes: fail now (415 before a byte is stored) and fix header_size.
                bits = source.bits_per_sample or 0  # 0 in the header of GSM and other compressed WAVs
                self._start(SourceFormat(source.codec, source.channels, source.sample_rate, bits))
            elif target in ("mp3", "flac"):
                # Their header's size depends on the rate and channels, and the stream reserves it
                # before the first sample: a WAV header longer than the sniffed bytes leaves it unknown.
                raise UnsupportedAudio(
                    f"its WAV header does not end within the first {SNIFF_BYTES} bytes; {target} needs it there"
                )
        else:
            raise UnsupportedAudio(f"cannot transcode {source.format} input to {target}")

    # -- Encoder -------------------------------------------------------------------------------

    def feed(self, data: memoryview | bytes) -> bytes:
        """Take the next received bytes; return the encoded bytes that are ready."""
        if self._finished:
            raise RuntimeError("feed after finish")
        view = memoryview(data).cast("B")
        if self._probe is not None and not self._probe.done:
            view = self._read_header(view)
        if self._data_left is not None:
            view = view[: self._data_left]
            self._data_left -= len(view)
        if view and self.source is not None:
            self._decode(view)
        return self._out.drain()

    def finish(self) -> bytes:
        """Flush the encoder and the muxer; return the rest of the encoded bytes."""
        if self._finished:
            raise RuntimeError("finish called twice")
        self._finished = True
        if self._probe is not None and not self._probe.done:
            self._probe.finish()
            raise UnsupportedAudio(f"not a WAV file: {self._probe.reason}")
        if self.source is None:  # cannot happen: a finished probe started the encoder or raised
            raise UnsupportedAudio("no audio format was found")
        # Samples that do not fill a frame are not audio (a truncated upload); they are dropped.
        self._remainder = b""
        if self._pcm16 is not None:
            self._emit_pcm16(None)
        else:
            assert self._container is not None and self._stream is not None
            self._container.mux(self._stream.encode(None))
            # close() writes the trailer: the muxer seeks back and patches the held header.
            self._container.close()
        return self._out.drain()

    def facts(self) -> AudioFacts:
        """Describe the encoded output (after ``finish``)."""
        assert self.source is not None
        duration = round(self._samples / self.source.sample_rate, 3)
        if self.target == "wav-pcm16":
            return AudioFacts("pcm", self._channels, self._rate, 16, duration)
        if self.target == "flac":
            return AudioFacts("flac", self._channels, self._rate, 16, duration)
        # Opus always decodes at 48 kHz, whatever rate it was fed; that is what players report.
        rate = 48_000 if self.target == "opus" else self._rate
        return AudioFacts(self.target, self._channels, rate, None, duration)

    def header(self) -> bytes:
        """Return the first ``header_size`` bytes of the output, final (after ``finish``)."""
        if not self._finished:
            raise RuntimeError("the header is final only after finish")
        return bytes(self._out.head)

    # -- internals -----------------------------------------------------------------------------

    def _read_header(self, view: memoryview) -> memoryview:
        assert self._probe is not None
        before = self._probed
        self._probe.feed(view)
        self._probed += len(view)
        if not self._probe.done:
            return view[len(view) :]
        if self._probe.info is None:
            raise UnsupportedAudio(f"not a WAV file: {self._probe.reason}")
        info = self._probe.info
        found = SourceFormat(info.format, info.channels, info.sample_rate, info.bits_per_sample)
        if self.source is None:
            self._start(found)
        elif found != self.source:
            raise UnsupportedAudio("the WAV header differs from the one the recording was classified by")
        self._data_left = info.data_size
        return view[info.data_offset - before :]

    def _start(self, source: SourceFormat) -> None:
        self.source = source.check()
        muxer, encoder, rates, max_channels, sample_format = _TARGETS[self.target]
        decoder = av.CodecContext.create(source.decoder, "r")
        assert isinstance(decoder, av.AudioCodecContext)
        decoder.sample_rate = source.sample_rate
        decoder.layout = _LAYOUTS[source.channels]
        self._decoder = decoder
        self._channels = min(source.channels, max_channels)
        self._rate = _encoder_rate(source.sample_rate, rates)
        layout = _LAYOUTS[self._channels]
        if self.target == "wav-pcm16":
            # The samples are the output: only converted (8-bit, G.711, float), no encoder or muxer.
            self._pcm16 = av.AudioResampler(format="s16", layout=layout, rate=self._rate)
            self.header_size = 0
            return
        # bitexact: no random Ogg serial number and no library version in the headers, so the same
        # recording always gives the same bytes (and the same sha256) whatever the PyAV build.
        container = av.open(self._out, "w", format=muxer, container_options={"fflags": "+bitexact"})
        if muxer == "mp3":  # no ID3v2 tag: the Info frame is all a player needs
            container.options.update({"id3v2_version": "0"})
        options = {"application": "voip"} if self.target == "opus" else None
        stream = container.add_stream(encoder, rate=self._rate, options=options, layout=layout)
        assert isinstance(stream, av.AudioStream)
        stream.codec_context.format = sample_format
        if self.target in DEFAULT_BITRATES:
            stream.codec_context.bit_rate = self.bitrate or default_bitrate(self.target, self._channels) or 0
        try:
            container.start_encoding()
        except av.error.FFmpegError as exc:
            container.close()
            raise UnsupportedAudio(
                f"cannot encode {source.codec} at {source.sample_rate} Hz as {self.target}: {exc}"
            ) from exc
        self._container, self._stream = container, stream
        self.header_size = self._out.hold() if muxer in _REWRITES_HEADER else 0

    def _decode(self, view: memoryview) -> None:
        assert self.source is not None
        align = self.source.block_align
        if self._remainder:
            need = align - len(self._remainder)
            self._remainder += bytes(view[:need])
            view = view[need:]
            if len(self._remainder) < align:
                return
            self._decode_slice(self._remainder)
            self._remainder = b""
        whole = len(view) - len(view) % align
        step = max(align, SLICE_BYTES - SLICE_BYTES % align)
        for at in range(0, whole, step):
            self._decode_slice(view[at : min(at + step, whole)])
        self._remainder = bytes(view[whole:])

    def _decode_slice(self, samples: bytes | memoryview) -> None:
        assert self._decoder is not None
        # Packet copies the slice: av's stub types only bytes, though it takes any buffer.
        for frame in self._decoder.decode(av.Packet(bytes(samples))):
            self._samples += frame.samples
            if self._pcm16 is not None:
                self._emit_pcm16(frame)
            else:
                assert self._container is not None and self._stream is not None
                self._container.mux(self._stream.encode(frame))

    def _emit_pcm16(self, frame: AudioFrame | None) -> None:
        assert self._pcm16 is not None
        for converted in self._pcm16.resample(frame):
            size = converted.samples * self._channels * 2
            self._out.write(bytes(converted.planes[0])[:size])


def _encoder_rate(rate: int, supported: tuple[int, ...] | None) -> int:
    """Return the source's rate if the encoder takes it; else the lowest supported rate above it (or the highest)."""
    if supported is None or rate in supported:
        return rate
    return min((r for r in supported if r > rate), default=max(supported))


def open_encoder(source: Arrival, target: str, *, bitrate: int | None) -> Transcoder:
    """``EncoderFactory``: a fresh ``Transcoder`` for one recording."""
    return Transcoder(source, target, bitrate=bitrate)
