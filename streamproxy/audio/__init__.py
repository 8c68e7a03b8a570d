"""Audio formats: what arrived, what is stored, and the contract a transcoder fulfils.

A recording is classified from its first bytes, with the client's name and declared type as
hints (``formats.classify``); the store format (``--store-format``) then decides what is written
(``formats.plan``): the bytes unchanged, the bytes behind a WAV header whose sizes are known only
at the end (headerless G.711), or the output of an ``Encoder``.

``stream.AudioStream`` is the stage between the part buffers and the sink writer that does it.
The transcoder itself (``streamproxy.audio.transcode``, an optional extra) implements
``Encoder``; nothing else here depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .formats import Arrival

__all__ = [
    "DEFAULT_RAW_AUDIO",
    "DEFAULT_STORE_FORMAT",
    "RAW_AUDIO",
    "STORE_FORMATS",
    "TRANSCODED_FORMATS",
    "AudioFacts",
    "Encoder",
    "EncoderFactory",
    "load_encoders",
]
TRANSCODE_EXTRA = "audio"  # pip install 'streamproxy[audio]': PyAV


# --store-format: "wav" keeps what plays and gives headerless G.711 a header; "original" changes
# nothing; the rest go through an Encoder.
STORE_FORMATS = ("wav", "original", "wav-pcm16", "mp3", "opus", "flac")
TRANSCODED_FORMATS = ("wav-pcm16", "mp3", "opus", "flac")
DEFAULT_STORE_FORMAT = "wav"
# --raw-audio: how bytes that carry no header and no hint are read. The platform's Call Recording
# module sends µ-law, 8000 Hz, mono, so that is the default.
RAW_AUDIO = ("ulaw", "alaw", "none")
DEFAULT_RAW_AUDIO = "ulaw"


@dataclass(frozen=True)
class AudioFacts:
    """The ``audio`` object of the answer and the manifest: what the stored recording holds."""

    format: str  # "pcm", "mulaw", "alaw", "ieee_float", "mp3", "opus", "vorbis", "flac", ...
    channels: int | None
    sample_rate: int | None
    bits_per_sample: int | None  # None for compressed formats
    duration_seconds: float | None  # None when it cannot be known without decoding

    def to_json(self) -> dict[str, object]:
        """Return the ``audio`` object of the answer."""
        return {
            "format": self.format,
            "channels": self.channels,
            "sample_rate": self.sample_rate,
            "bits_per_sample": self.bits_per_sample,
            "duration_seconds": self.duration_seconds,
        }

    def to_metadata(self) -> str:
        """Return one metadata (and tag) value carrying every known fact, e.g. ``format=mulaw channels=1 ...``."""
        return " ".join(f"{name}={value}" for name, value in self.to_json().items() if value is not None)


class Encoder(Protocol):
    """A streaming transcoder for one recording.

    It is synchronous and is always called from a worker thread, one call at a time and in
    order, never from the event loop. ``feed`` receives the received bytes exactly as they
    arrived (a WAV header included, if there is one) in pieces of any size, and returns the
    encoded bytes that are ready (possibly none). ``finish`` flushes the encoder and returns the
    rest. Memory must not grow with the recording: an encoder holds at most a few frames.

    For ``wav-pcm16`` the encoder returns the raw little-endian 16-bit samples only; the stream
    puts the WAV header (whose sizes are known only at the end) in front of them.

    An encoder whose container header is final only at the end (MP3's Info frame, FLAC's
    STREAMINFO) keeps its first ``header_size`` bytes out of ``feed``'s output; the stream
    reserves that room in front, exactly like a WAV header's, and writes ``header()`` there once
    ``finish`` has returned. ``header_size`` is fixed when the encoder is built (0: nothing held).
    """

    header_size: int

    def feed(self, data: memoryview) -> bytes:
        """Encode ``data`` (the next received bytes); return what is ready."""
        ...

    def finish(self) -> bytes:
        """Flush and return the remaining encoded bytes; no ``feed`` follows."""
        ...

    def facts(self) -> AudioFacts:
        """Describe the encoded output (called after ``finish``); the duration is that of the output."""
        ...

    def header(self) -> bytes:
        """Return the ``header_size`` bytes that go in front of the output (called after ``finish``)."""
        ...


class EncoderFactory(Protocol):
    """Build an ``Encoder`` turning ``source`` into ``target`` (one of ``TRANSCODED_FORMATS``).

    ``bitrate`` is ``--audio-bitrate`` in bits per second, or ``None`` for the encoder's default.
    A factory raises ``ValueError`` for a source it cannot decode; the stream answers 415.
    """

    def __call__(self, source: Arrival, target: str, *, bitrate: int | None) -> Encoder:
        """Return a fresh encoder for one recording."""
        ...


def load_encoders() -> EncoderFactory:
    """Return the transcoder's ``EncoderFactory`` (``streamproxy.audio.transcode.open_encoder``).

    Raises ``ImportError`` with a one-line hint naming the extra when it is not installed.
    """
    try:
        from .transcode import open_encoder
    except ImportError as exc:
        raise ImportError(
            f"transcoding needs the {TRANSCODE_EXTRA!r} extra: pip install 'streamproxy[{TRANSCODE_EXTRA}]' ({exc})"
        ) from None
    factory: EncoderFactory = open_encoder
    return factory
