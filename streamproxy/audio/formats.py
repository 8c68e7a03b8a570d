"""Classify a recording from its first bytes and the client's hints, and plan what to store.

``classify`` looks at up to ``SNIFF_BYTES`` first bytes. Signatures win over hints: a WAV file
named ``call.ul`` is a WAV file. Bytes that carry no known signature are headerless audio, and
the hints say which law: the name's extension (``.ul .ulaw .mu .mulaw .pcmu`` µ-law, ``.al .alaw
.pcma`` A-law, any case), else the declared type (``audio/basic``, ``audio/x-mulaw``,
``audio/mulaw``, ``audio/x-ulaw``, ``audio/PCMU``; ``audio/PCMA``), else ``--raw-audio``
(``ulaw`` by default, because the platform's Call Recording module sends µ-law 8 kHz mono).
A few signatures of things that are certainly not audio (PDF, ZIP, images, HTML, JSON, ...) are
recognised as such, so ``--require-audio`` can refuse them and they are never dressed up as WAV.

``plan`` turns an arrival and ``--store-format`` into what the pipeline does: pass the bytes
through, put a WAV header in front (headerless G.711), or transcode.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Literal

from ..wav import G711_HEADER_SIZE, PCM16_HEADER_SIZE, WavProbe
from . import TRANSCODED_FORMATS

__all__ = [
    "AUDIO_EXTENSIONS",
    "G711_TYPES",
    "SNIFF_BYTES",
    "Arrival",
    "Hints",
    "Plan",
    "classify",
    "plan",
    "stored_type",
    "strip_audio_extension",
]

SNIFF_BYTES = 4096  # enough for a WAV header, an ID3 header, two MP3 frames, an Ogg page header
Kind = Literal["wav", "mp3", "ogg", "flac", "g711", "headerless", "other"]

MULAW_EXTENSIONS = (".ul", ".ulaw", ".mu", ".mulaw", ".pcmu")
ALAW_EXTENSIONS = (".al", ".alaw", ".pcma")
# Every extension that names an audio format: a filename ending in one loses it before the key
# template adds the stored format's own (``call-7.wav`` is stored as ``call-7.wav``).
AUDIO_EXTENSIONS = (*MULAW_EXTENSIONS, *ALAW_EXTENSIONS, ".wav", ".wave", ".mp3", ".ogg", ".oga", ".opus", ".flac")
MULAW_TYPES = ("audio/basic", "audio/x-mulaw", "audio/mulaw", "audio/x-ulaw", "audio/pcmu")
ALAW_TYPES = ("audio/pcma",)
G711_TYPES = (*MULAW_TYPES, *ALAW_TYPES)
# What a recording of each kind is stored as (extension, Content-Type).
_STORED_AS: dict[str, tuple[str, str]] = {
    "wav": (".wav", "audio/wav"),
    "mp3": (".mp3", "audio/mpeg"),
    "opus": (".opus", "audio/ogg"),
    "ogg": (".ogg", "audio/ogg"),
    "flac": (".flac", "audio/flac"),
    "mulaw": (".ul", "audio/basic"),
    "alaw": (".al", "audio/basic"),  # no registered type names bare A-law; audio/basic is what players guess from
    "headerless": (".ul", "application/octet-stream"),
    "other": (".bin", "application/octet-stream"),
}
_TRANSCODED_AS = {"wav-pcm16": "wav", "mp3": "mp3", "opus": "opus", "flac": "flac"}
# Signatures of content that is surely not audio: never wrapped as G.711, refused by --require-audio.
_NOT_AUDIO = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "gzip data"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x7fELF", "an executable"),
    (b"MZ", "an executable"),
    (b"{", "JSON text"),
    (b"<", "HTML or XML text"),
)
# MPEG audio: bitrates (kbit/s) by [version is MPEG-1][layer index] and sample rates by version.
_MP3_BITRATES = {
    (True, 3): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 1): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 3): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 1): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_WS = re.compile(rb"^[\t\n\r ]*")


@dataclass(frozen=True)
class Hints:
    """What the client said about the recording: a name (file part's ``filename=`` or the PUT name) and a type."""

    name: str | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class Arrival:
    """What arrived.

    ``kind``: ``wav``, ``mp3``, ``ogg``, ``flac``, ``g711`` (headerless, law known), ``headerless``
    (no header, no hint, ``--raw-audio none``) or ``other`` (surely not audio).
    ``codec``: ``mulaw``/``alaw`` for G.711, ``opus``/``vorbis`` for Ogg, the WAV format tag's name
    (``pcm``, ``mulaw``, ...) when the WAV header was within the first bytes; else ``None``.
    ``reason``: why it is not audio (``other``, or a WAV whose header is broken).
    """

    kind: Kind
    codec: str | None = None
    channels: int | None = None
    sample_rate: int | None = None
    bits_per_sample: int | None = None
    decided_by: str = "bytes"  # "bytes", "name", "type" or "raw-audio"
    reason: str = ""
    seconds: float | None = None  # when the header says (FLAC's STREAMINFO total samples)

    @property
    def is_audio(self) -> bool:
        """Whether ``--require-audio`` lets it pass."""
        return self.kind not in ("headerless", "other") and not self.reason

    @property
    def format(self) -> str:
        """The format name recorded as ``received.format`` (``mulaw``, ``wav``, ``mp3``, ``opus``, ...)."""
        if self.kind == "g711":
            return self.codec or "mulaw"
        if self.kind == "ogg":
            return self.codec or "ogg"
        return self.kind


@dataclass(frozen=True)
class Plan:
    """What the pipeline does with one recording, and what the stored object is.

    ``header``: ``"g711"`` or ``"pcm16"`` when a WAV header of ``header_size`` bytes goes in front
    of the (received or encoded) samples once their length is known; ``transcode``: the target
    handed to the ``Encoder`` (``None``: the received bytes are stored, behind the header if any).
    """

    arrival: Arrival
    store_format: str
    ext: str
    content_type: str
    header: Literal["g711", "pcm16"] | None = None
    transcode: str | None = None

    @property
    def header_size(self) -> int:
        """Bytes reserved in front of the samples for the header (0 if none)."""
        return {None: 0, "g711": G711_HEADER_SIZE, "pcm16": PCM16_HEADER_SIZE}[self.header]

    @property
    def changes_bytes(self) -> bool:
        """Whether the stored bytes differ from the received ones."""
        return self.header is not None or self.transcode is not None


def _extension(name: str | None) -> str:
    if not name or "." not in name:
        return ""
    return "." + name.rsplit(".", 1)[1].lower()


def strip_audio_extension(name: str) -> str:
    """Drop a known audio extension (any case): ``call-7.WAV`` -> ``call-7``; other names are unchanged."""
    ext = _extension(name)
    if ext in AUDIO_EXTENSIONS and len(name) > len(ext):
        return name[: -len(ext)]
    return name


def _media(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _hinted_law(hints: Hints) -> tuple[str, str] | None:
    ext = _extension(hints.name)
    if ext in MULAW_EXTENSIONS:
        return "mulaw", "name"
    if ext in ALAW_EXTENSIONS:
        return "alaw", "name"
    media = _media(hints.content_type)
    if media in MULAW_TYPES:
        return "mulaw", "type"
    if media in ALAW_TYPES:
        return "alaw", "type"
    return None


def classify(head: bytes, hints: Hints, *, raw_audio: str, complete: bool = False) -> Arrival:
    """Classify a recording from its first bytes (``head``, at most ``SNIFF_BYTES``) and the hints.

    ``complete`` says that ``head`` is the whole recording (it ended within the sniff window).
    """
    arrival = _by_signature(head, complete)
    if arrival is not None:
        return arrival
    hinted = _hinted_law(hints)
    if hinted is not None:
        return Arrival("g711", hinted[0], 1, 8000, 8, decided_by=hinted[1])
    if raw_audio == "ulaw":
        return Arrival("g711", "mulaw", 1, 8000, 8, decided_by="raw-audio")
    if raw_audio == "alaw":
        return Arrival("g711", "alaw", 1, 8000, 8, decided_by="raw-audio")
    return Arrival("headerless", decided_by="raw-audio", reason="it has no audio header and --raw-audio is none")


def _by_signature(head: bytes, complete: bool) -> Arrival | None:
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return _wav(head, complete)
    if head[:4] == b"RIFF" or head[:4] in (b"RF64", b"BW64"):
        return Arrival("other", reason="it is a RIFF file but not RIFF/WAVE")
    if head[:4] == b"fLaC":
        return _flac(head)
    if head[:4] == b"OggS":
        return _ogg(head)
    if head[:3] == b"ID3":
        return Arrival("mp3", "mp3")
    mp3 = _mp3(head, complete)
    if mp3 is not None:
        return mp3
    text = _WS.sub(b"", head[:64], count=1)
    for signature, what in _NOT_AUDIO:
        if (text if signature in (b"{", b"<") else head).startswith(signature):
            return Arrival("other", reason=f"it is {what}, not audio")
    return None


def _wav(head: bytes, complete: bool) -> Arrival:
    probe = WavProbe()
    probe.feed(head)
    if complete:
        probe.finish()
    if probe.info is not None:
        info = probe.info
        return Arrival("wav", info.format, info.channels, info.sample_rate, info.bits_per_sample)
    if probe.done:
        return Arrival("wav", reason=probe.reason)
    return Arrival("wav")  # a header longer than the sniff window: WAV, details from the WavProbe later


def _flac(head: bytes) -> Arrival:
    # STREAMINFO is the first metadata block: rate 20 bits, channels-1 3 bits, bits-1 5 bits.
    if len(head) >= 8 + 18 and head[4] & 0x7F == 0:
        packed = int.from_bytes(head[18:26], "big")
        rate = packed >> 44
        channels = ((packed >> 41) & 0x7) + 1
        bits = ((packed >> 36) & 0x1F) + 1
        total = packed & ((1 << 36) - 1)  # 0 when the encoder did not know it (streamed FLAC)
        seconds = round(total / rate, 3) if total and rate else None
        return Arrival("flac", "flac", channels, rate or None, bits, seconds=seconds)
    return Arrival("flac", "flac")


def _ogg(head: bytes) -> Arrival:
    # The first page carries the codec's identification header right after the segment table.
    if len(head) >= 27:
        segments = head[26]
        body = head[27 + segments :]
        if body[:8] == b"OpusHead" and len(body) >= 19:
            channels = body[9]
            rate = struct.unpack("<I", body[12:16])[0]
            return Arrival("ogg", "opus", channels, rate or None)
        if body[:7] == b"\x01vorbis" and len(body) >= 16:
            channels = body[11]
            rate = struct.unpack("<I", body[12:16])[0]
            return Arrival("ogg", "vorbis", channels, rate)
    return Arrival("ogg")


def _mp3_frame(head: bytes, at: int) -> tuple[int, int, int] | None:
    """Return (frame length, sample rate, channels) of a valid MPEG audio frame header at ``at``."""
    if at + 4 > len(head) or head[at] != 0xFF or head[at + 1] & 0xE0 != 0xE0:
        return None
    version = (head[at + 1] >> 3) & 0x3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5, 1: reserved
    layer = (head[at + 1] >> 1) & 0x3  # 3: layer I, 2: layer II, 1: layer III, 0: reserved
    bitrate_index = head[at + 2] >> 4
    rate_index = (head[at + 2] >> 2) & 0x3
    if version == 1 or layer == 0 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    mpeg1 = version == 3
    bitrate = _MP3_BITRATES[(mpeg1, layer)][bitrate_index] * 1000
    rate = _MP3_RATES[version][rate_index]
    padding = (head[at + 2] >> 1) & 0x1
    channels = 1 if head[at + 3] >> 6 == 3 else 2
    if layer == 3:  # layer I
        length = (12 * bitrate // rate + padding) * 4
    else:
        length = (144 if mpeg1 or layer == 2 else 72) * bitrate // rate + padding
    return length, rate, channels


def _mp3(head: bytes, complete: bool) -> Arrival | None:
    """MPEG audio without ID3: a valid frame header followed by another where the first ends.

    Two consecutive headers make chance matches in µ-law bytes (0xFF is µ-law silence) unlikely.
    """
    first = _mp3_frame(head, 0)
    if first is None:
        return None
    length, rate, channels = first
    if length >= len(head):
        return Arrival("mp3", "mp3", channels, rate) if complete and length == len(head) else None
    if _mp3_frame(head, length) is None:
        return None
    return Arrival("mp3", "mp3", channels, rate)


def plan(arrival: Arrival, store_format: str) -> Plan:
    """Decide what to store for ``arrival`` under ``--store-format``.

    ``wav``: headerless G.711 gets a WAV header, everything else is stored unchanged.
    ``original``: everything unchanged. ``wav-pcm16``: G.711 (headerless or in a WAV) and 8-bit
    PCM WAV are decoded to 16-bit PCM WAV; other WAV and compressed input are stored unchanged.
    ``mp3``/``opus``/``flac``: WAV and headerless G.711 are transcoded; input that is already
    compressed (MP3, Ogg, FLAC) is stored unchanged rather than re-encoded with a loss.
    """
    kind = arrival.kind
    own = _STORED_AS.get(arrival.codec or "" if kind == "g711" else kind, _STORED_AS["other"])
    if kind == "ogg" and arrival.codec == "opus":
        own = _STORED_AS["opus"]
    unchanged = Plan(arrival, store_format, *own)
    if store_format == "original" or kind in ("headerless", "other") or arrival.reason:
        return unchanged
    if store_format in TRANSCODED_FORMATS and kind in ("wav", "g711"):
        target = _TRANSCODED_AS[store_format]
        if store_format != "wav-pcm16" or kind == "g711" or _is_8bit_wav(arrival):
            ext, content_type = _STORED_AS[target]
            if store_format == "wav-pcm16":
                return Plan(arrival, store_format, ext, content_type, header="pcm16", transcode=store_format)
            return Plan(arrival, store_format, ext, content_type, transcode=store_format)
    if kind == "g711":  # store_format "wav"
        return Plan(arrival, store_format, ".wav", "audio/wav", header="g711")
    return unchanged


def _is_8bit_wav(arrival: Arrival) -> bool:
    return arrival.codec in ("mulaw", "alaw") or (arrival.codec == "pcm" and arrival.bits_per_sample == 8)


def stored_type(chosen: Plan, declared: str | None) -> str:
    """Return the Content-Type to store: the format's, or for bytes of unknown format the client's own.

    A generic or missing declared type gives ``application/octet-stream``.
    """
    if chosen.arrival.kind not in ("headerless", "other"):
        return chosen.content_type
    media = _media(declared)
    return media if media and media != "application/octet-stream" else chosen.content_type
