"""WAV facts from the first bytes of a recording, read as they stream by.

``WavProbe`` is fed the recording's chunks in order until it has decided; it copies only the
bytes of the RIFF header it needs (the 12-byte RIFF header, chunk headers and the ``fmt ``
chunk, at most ``MAX_FMT_BYTES``) and skips every other chunk before ``data`` by counting. Once
the ``data`` chunk header has gone by, or the bytes cannot be a WAV file, the probe is done and
costs nothing more.

The duration comes from the bytes actually received, not from the header's sizes: a WAV that is
written while the call goes on often carries 0 or 0xFFFFFFFF as its RIFF and ``data`` sizes.
A ``data`` size that is plausible (neither of those, and within what arrived) still bounds the
audio, so chunks after the samples (a trailing ``LIST``) do not count as sound.

RF64 and BW64 files (the 64-bit variants used for long streamed recordings) are read the same
way: their 32-bit sizes are placeholders, and the duration comes from the received bytes anyway.

``g711_header`` and ``pcm16_header`` write the other direction: a header of fixed length with
exact sizes, put in front of samples whose count is known only at the end (see
``streamproxy.audio.stream``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "G711_HEADER_SIZE",
    "MAX_DATA_OFFSET",
    "MAX_WAV_DATA",
    "PCM16_HEADER_SIZE",
    "WavInfo",
    "WavProbe",
    "format_name",
    "g711_header",
    "pcm16_header",
]

MAX_DATA_OFFSET = 1024 * 1024  # the samples of a real WAV start well before this
MAX_FMT_BYTES = 1024
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)
_EXTENSIBLE = 0xFFFE
_KSDATAFORMAT_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
_FORMATS = {
    0x0001: "pcm",
    0x0002: "ms_adpcm",
    0x0003: "ieee_float",
    0x0006: "alaw",
    0x0007: "mulaw",
    0x0011: "ima_adpcm",
    0x0031: "gsm610",
    0x0050: "mpeg",
    0x0055: "mp3",
    0x0064: "g726",
    0x0065: "g722",
}
_LINEAR = ("pcm", "ieee_float", "alaw", "mulaw")


def format_name(tag: int) -> str:
    """Name a WAVE format tag (``1`` is ``pcm``); unknown tags read as ``0x0022``."""
    return _FORMATS.get(tag, f"0x{tag:04x}")


@dataclass(frozen=True)
class WavInfo:
    """What the header of a WAV recording says, plus where its samples start."""

    format: str
    channels: int
    sample_rate: int
    bits_per_sample: int
    byte_rate: int
    data_offset: int
    data_size: int | None  # None: the header does not know (0 or 0xFFFFFFFF)

    def audio_bytes(self, received: int) -> int:
        """Return how many of ``received`` bytes are samples."""
        available = max(0, received - self.data_offset)
        if self.data_size is None:
            return available
        return min(self.data_size, available)

    def duration(self, received: int) -> float:
        """Return the seconds of audio in the first ``received`` bytes, to the millisecond."""
        return round(self.audio_bytes(received) / self.byte_rate, 3)

    def to_json(self, received: int) -> dict[str, object]:
        """Return the ``audio`` object of the success answer and the manifest."""
        return {
            "format": self.format,
            "channels": self.channels,
            "sample_rate": self.sample_rate,
            "bits_per_sample": self.bits_per_sample,
            "duration_seconds": self.duration(received),
        }

    def to_metadata(self, received: int) -> str:
        """Return one metadata value (and tag value) carrying every fact.

        One ``audio`` entry instead of five keeps a direct multipart upload within S3's limit
        of 10 tags; the characters used are legal in both metadata and tag values.
        """
        return " ".join(f"{name}={value}" for name, value in self.to_json(received).items())


class WavProbe:
    """Read the RIFF/WAVE header from chunks as they arrive; see the module docstring."""

    __slots__ = ("_fmt", "_need", "_pending", "_position", "_skip", "_state", "done", "info", "reason")

    def __init__(self) -> None:
        self.done = False
        self.info: WavInfo | None = None
        self.reason = ""
        self._pending = bytearray()
        self._need = 12
        self._state = "riff"
        self._skip = 0
        self._position = 0  # bytes consumed so far
        self._fmt: tuple[str, int, int, int, int] | None = None

    def feed(self, chunk: bytes | memoryview) -> None:
        """Consume ``chunk``; sets ``done`` (and ``info`` or ``reason``) once the header is decided."""
        view = memoryview(chunk)
        while view and not self.done:
            if self._skip:
                take = min(self._skip, len(view))
                self._skip -= take
                self._position += take
                view = view[take:]
                continue
            take = min(self._need - len(self._pending), len(view))
            self._pending += view[:take]
            self._position += take
            view = view[take:]
            if len(self._pending) == self._need:
                data, self._pending = bytes(self._pending), bytearray()
                self._step(data)

    def finish(self) -> None:
        """Mark the end of the recording: a header that never completed is not a WAV."""
        if not self.done:
            self._fail("the recording ends inside the WAV header")

    def _fail(self, reason: str) -> None:
        self.done = True
        self.reason = reason
        self._pending = bytearray()

    def _step(self, data: bytes) -> None:
        if self._state == "riff":
            if data[:4] not in (b"RIFF", b"RF64", b"BW64") or data[8:12] != b"WAVE":
                self._fail("it does not start with a RIFF/WAVE header")
                return
            self._expect_chunk()
        elif self._state == "chunk":
            chunk_id, size = data[:4], struct.unpack("<I", data[4:])[0]
            if chunk_id == b"data":
                self._data(size)
            elif chunk_id == b"fmt ":
                if not 16 <= size <= MAX_FMT_BYTES:
                    self._fail(f"its fmt chunk has an impossible size ({size} bytes)")
                    return
                self._state, self._need = "fmt", size + (size & 1)
            else:
                if size == 0xFFFFFFFF or self._position + size > MAX_DATA_OFFSET:
                    self._fail(f"the samples do not start within the first {MAX_DATA_OFFSET} bytes")
                    return
                self._skip = size + (size & 1)
                self._expect_chunk()
        elif self._state == "fmt":
            self._parse_fmt(data)

    def _expect_chunk(self) -> None:
        if self._position + 8 > MAX_DATA_OFFSET:
            self._fail(f"the samples do not start within the first {MAX_DATA_OFFSET} bytes")
            return
        self._state, self._need = "chunk", 8

    def _parse_fmt(self, data: bytes) -> None:
        tag, channels, rate, byte_rate, block_align, bits = struct.unpack("<HHIIHH", data[:16])
        if tag == _EXTENSIBLE:
            if len(data) < 40 or data[26:40] != _KSDATAFORMAT_TAIL:
                self._fail("its WAVE_FORMAT_EXTENSIBLE header has no valid subformat")
                return
            tag = struct.unpack("<H", data[24:26])[0]
        name = format_name(tag)
        if channels == 0 or rate == 0 or block_align == 0:
            self._fail("its fmt chunk has zero channels, sample rate or block size")
            return
        if name in _LINEAR:
            if bits == 0 or block_align != channels * ((bits + 7) // 8):
                self._fail("its fmt chunk's block size does not match channels and bits per sample")
                return
            byte_rate = rate * block_align  # the header's own byte rate may be wrong; this cannot be
        elif byte_rate == 0:
            self._fail("its fmt chunk has a byte rate of 0")
            return
        self._fmt = (name, channels, rate, bits, byte_rate)
        self._expect_chunk()

    def _data(self, size: int) -> None:
        if self._fmt is None:
            self._fail("its data chunk comes before the fmt chunk")
            return
        name, channels, rate, bits, byte_rate = self._fmt
        self.info = WavInfo(
            format=name,
            channels=channels,
            sample_rate=rate,
            bits_per_sample=bits,
            byte_rate=byte_rate,
            data_offset=self._position,
            data_size=None if size in _UNKNOWN_SIZES else size,
        )
        self.done = True


G711_HEADER_SIZE = 58  # RIFF 12 + fmt 8+18 + fact 8+4 + data 8
PCM16_HEADER_SIZE = 44  # RIFF 12 + fmt 8+16 + data 8
MAX_WAV_DATA = 0xFFFFFFFF - G711_HEADER_SIZE  # a RIFF size is 32 bits: beyond this only RF64 would do
_G711_TAGS = {"mulaw": 0x0007, "alaw": 0x0006}


def g711_header(law: str, data_size: int) -> bytes:
    """Return the 58-byte WAV header for ``data_size`` bytes of 8 kHz mono G.711 (``mulaw`` or ``alaw``).

    Format 7 (µ-law) or 6 (A-law) is a non-PCM format, so the ``fmt `` chunk carries ``cbSize``
    and a ``fact`` chunk gives the sample count. The RIFF size counts the pad byte that follows
    an odd-sized ``data`` chunk; the caller writes that byte after the samples.
    """
    if not 0 <= data_size <= MAX_WAV_DATA:
        raise ValueError(f"{data_size} bytes of G.711 do not fit a WAV file")
    pad = data_size & 1
    return b"".join(
        (
            b"RIFF",
            struct.pack("<I", G711_HEADER_SIZE - 8 + data_size + pad),
            b"WAVE",
            b"fmt ",
            struct.pack("<IHHIIHHH", 18, _G711_TAGS[law], 1, 8000, 8000, 1, 8, 0),
            b"fact",
            struct.pack("<II", 4, data_size),
            b"data",
            struct.pack("<I", data_size),
        )
    )


def pcm16_header(channels: int, sample_rate: int, data_size: int) -> bytes:
    """Return the 44-byte WAV header for ``data_size`` bytes of 16-bit little-endian PCM."""
    block = channels * 2
    if not 0 <= data_size <= 0xFFFFFFFF - PCM16_HEADER_SIZE or data_size % block:
        raise ValueError(f"{data_size} bytes are not whole 16-bit frames of {channels} channels within a WAV file")
    return b"".join(
        (
            b"RIFF",
            struct.pack("<I", PCM16_HEADER_SIZE - 8 + data_size),
            b"WAVE",
            b"fmt ",
            struct.pack("<IHHIIHH", 16, 0x0001, channels, sample_rate, sample_rate * block, block, 16),
            b"data",
            struct.pack("<I", data_size),
        )
    )
