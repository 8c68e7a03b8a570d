"""The streaming transcoder (streamproxy/audio/transcode.py), judged by Debian's ffmpeg and sox.

Every input is made by sox; every output is decoded by Debian's ffmpeg (not the FFmpeg inside
PyAV's wheels), and its decoded duration must be within 50 ms of the source. wav-pcm16 output
must be byte-identical to sox's own 16-bit conversion.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamproxy.audio import TRANSCODED_FORMATS
from streamproxy.audio.formats import SNIFF_BYTES, Arrival, Hints, classify
from streamproxy.audio.transcode import (  # PyAV: the audio extra, part of the test extra
    SLICE_BYTES,
    Transcoder,
    UnsupportedAudio,
    default_bitrate,
)
from streamproxy.wav import pcm16_header
from tests.servers import config_error
from tests.transcode_tools import probe, sox_make, sox_to_pcm16

SECONDS = 3.0
TOLERANCE = 0.050

# name: (sox arguments, file name, channels, rate)
SOURCES: dict[str, tuple[tuple[str, ...], str, int, int]] = {
    "ulaw-raw-8k": (("-r", "8000", "-c", "1", "-e", "mu-law", "-t", "ul"), "call.ul", 1, 8000),
    "alaw-raw-8k": (("-r", "8000", "-c", "1", "-e", "a-law", "-t", "al"), "call.al", 1, 8000),
    "ulaw-wav-8k": (("-r", "8000", "-c", "1", "-e", "mu-law"), "ulaw.wav", 1, 8000),
    "alaw-wav-8k": (("-r", "8000", "-c", "1", "-e", "a-law"), "alaw.wav", 1, 8000),
    "pcm8-wav-8k": (("-r", "8000", "-c", "1", "-b", "8", "-e", "unsigned-integer"), "pcm8.wav", 1, 8000),
    "pcm16-wav-8k": (("-r", "8000", "-c", "1", "-b", "16"), "pcm16.wav", 1, 8000),
    "pcm24-wav-16k": (("-r", "16000", "-c", "1", "-b", "24"), "pcm24.wav", 1, 16000),
    "pcm32-wav-8k": (("-r", "8000", "-c", "1", "-b", "32", "-e", "signed-integer"), "pcm32.wav", 1, 8000),
    "float32-wav-8k": (("-r", "8000", "-c", "1", "-b", "32", "-e", "floating-point"), "float.wav", 1, 8000),
    "pcm16-wav-48k-stereo": (("-r", "48000", "-c", "2", "-b", "16"), "stereo48.wav", 2, 48000),
    "pcm16-wav-44k1-stereo": (("-r", "44100", "-c", "2", "-b", "16"), "stereo44.wav", 2, 44100),
}
# What Debian's ffprobe must call each output.
CODECS = {"wav-pcm16": "pcm_s16le", "mp3": "mp3", "opus": "opus", "flac": "flac"}
EXTENSIONS = {"wav-pcm16": ".wav", "mp3": ".mp3", "opus": ".opus", "flac": ".flac"}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sources")
    return {name: sox_make(folder / file, *args, seconds=SECONDS) for name, (args, file, _, _) in SOURCES.items()}


def arrival_of(path: Path, data: bytes) -> Arrival:
    return classify(data[:SNIFF_BYTES], Hints(name=path.name), raw_audio="none", complete=len(data) <= SNIFF_BYTES)


def pieces(data: bytes, first: int = 1, size: int = 4093) -> Iterator[memoryview]:
    """The bytes as a client's chunks would come: a tiny first piece (splitting any header), then odd sizes."""
    view = memoryview(data)
    yield view[:first]
    for at in range(first, len(data), size):
        yield view[at : at + size]


def transcode(
    data: bytes, arrival: Arrival, target: str, bitrate: int | None = None, **split: int
) -> tuple[bytes, Transcoder]:
    """Feed ``data`` through a Transcoder; return the stored file (header in front) and the transcoder."""
    encoder = Transcoder(arrival, target, bitrate=bitrate)
    body = bytearray()
    for piece in pieces(data, **split):
        body += encoder.feed(piece)
    body += encoder.finish()
    if target == "wav-pcm16":
        facts = encoder.facts()
        assert facts.channels is not None and facts.sample_rate is not None
        return pcm16_header(facts.channels, facts.sample_rate, len(body)) + bytes(body), encoder
    header = encoder.header()
    assert len(header) == encoder.header_size
    return header + bytes(body), encoder


@pytest.mark.parametrize("target", TRANSCODED_FORMATS)
@pytest.mark.parametrize("source", list(SOURCES))
def test_every_source_to_every_format_decodes_with_debians_ffmpeg(
    sources: dict[str, Path], tmp_path: Path, source: str, target: str
) -> None:
    _, _, channels, rate = SOURCES[source]
    path = sources[source]
    data = path.read_bytes()
    stored, encoder = transcode(data, arrival_of(path, data), target)
    out = tmp_path / f"out{EXTENSIONS[target]}"
    out.write_bytes(stored)

    got = probe(out)
    assert got.codec == CODECS[target]
    assert got.channels == channels
    assert abs(got.decoded_duration - SECONDS) <= TOLERANCE, f"decoded {got.decoded_duration:.3f} s of {SECONDS} s"
    if target != "mp3":  # an MP3's container duration counts the encoder's delay; decoders skip it (see above)
        assert got.container_duration is not None, "ffprobe does not know the duration"
        assert abs(got.container_duration - SECONDS) <= TOLERANCE
    facts = encoder.facts()
    assert facts.duration_seconds == pytest.approx(SECONDS, abs=0.001)
    assert (facts.channels, facts.sample_rate) == (got.channels, got.sample_rate)
    if target in ("wav-pcm16", "flac"):
        assert got.sample_rate == rate, "a lossless target keeps the source's rate"


@pytest.mark.parametrize(
    ("source", "sox_type"),
    [("ulaw-raw-8k", ("-t", "ul", "-r", "8000", "-c", "1")), ("alaw-raw-8k", ("-t", "al", "-r", "8000", "-c", "1")),
     ("ulaw-wav-8k", ()), ("alaw-wav-8k", ()), ("pcm8-wav-8k", ())],
)  # fmt: skip
def test_wav_pcm16_is_exactly_what_sox_decodes(
    sources: dict[str, Path], source: str, sox_type: tuple[str, ...]
) -> None:
    """G.711 and 8-bit PCM widen to 16 bits without loss: the samples equal sox's own decoding."""
    path = sources[source]
    data = path.read_bytes()
    stored, _ = transcode(data, arrival_of(path, data), "wav-pcm16")
    assert stored[44:] == sox_to_pcm16(path, *sox_type)


@pytest.mark.parametrize("target", ["mp3", "opus", "flac"])
def test_output_does_not_depend_on_how_the_bytes_were_cut(sources: dict[str, Path], target: str) -> None:
    """One byte at a time through the header, odd pieces, or everything at once: the same file."""
    path = sources["pcm16-wav-48k-stereo"]
    data = path.read_bytes()
    arrival = arrival_of(path, data)
    whole, _ = transcode(data, arrival, target, first=len(data))
    split, _ = transcode(data, arrival, target, first=3, size=SLICE_BYTES + 7)
    tiny = Transcoder(arrival, target)
    body = bytearray()
    for at in range(200):  # the header and the first samples one byte at a time
        body += tiny.feed(memoryview(data)[at : at + 1])
    body += tiny.feed(memoryview(data)[200:])
    body += tiny.finish()
    assert split == whole
    assert tiny.header() + bytes(body) == whole


@pytest.mark.parametrize("target", ["mp3", "flac"])
def test_the_held_header_is_patched_at_the_end(sources: dict[str, Path], target: str) -> None:
    """MP3's Info frame and FLAC's STREAMINFO get their counts only at the end; before it they are placeholders."""
    path = sources["ulaw-raw-8k"]
    data = path.read_bytes()
    encoder = Transcoder(arrival_of(path, data), target)
    assert encoder.header_size > 0
    with pytest.raises(RuntimeError):
        encoder.header()
    early = bytes(encoder._out.head)
    for piece in pieces(data):
        encoder.feed(piece)
    encoder.finish()
    final = encoder.header()
    assert len(final) == len(early) == encoder.header_size
    assert final != early
    if target == "flac":
        # STREAMINFO: 36 bits of total samples at bit 108 of the block (after fLaC and the block header).
        packed = int.from_bytes(final[18:26], "big")
        assert packed & ((1 << 36) - 1) == int(SECONDS * 8000)
    else:
        # The Info frame's frame count (flags bit 0), after the 4-byte MPEG header and side info.
        at = final.index(b"Info")
        flags, frames = struct.unpack(">II", final[at + 4 : at + 12])
        assert flags & 1
        assert frames * 576 >= SECONDS * 8000


def test_opus_holds_nothing_back(sources: dict[str, Path]) -> None:
    """Ogg pages carry their own granule positions: nothing needs patching, the first bytes flow at once."""
    path = sources["ulaw-raw-8k"]
    data = path.read_bytes()
    encoder = Transcoder(arrival_of(path, data), "opus")
    assert encoder.header_size == 0
    assert encoder.feed(memoryview(data)).startswith(b"OggS")


@pytest.mark.parametrize("target", ["opus", "wav-pcm16"])
def test_a_wav_header_longer_than_the_sniffed_bytes(sources: dict[str, Path], tmp_path: Path, target: str) -> None:
    """Classification sees only the first 4 KiB; a long chunk before the samples is read by the transcoder itself."""
    long = _long_header(sources["pcm16-wav-8k"].read_bytes())
    arrival = classify(long[:SNIFF_BYTES], Hints(), raw_audio="none")
    assert arrival.kind == "wav" and arrival.codec is None
    stored, encoder = transcode(long, arrival, target)
    assert encoder.header_size == 0
    out = tmp_path / f"long{EXTENSIONS[target]}"
    out.write_bytes(stored)
    assert abs(probe(out).decoded_duration - SECONDS) <= TOLERANCE


@pytest.mark.parametrize("target", ["mp3", "flac"])
def test_a_long_wav_header_is_refused_where_the_header_size_needs_it(sources: dict[str, Path], target: str) -> None:
    long = _long_header(sources["pcm16-wav-8k"].read_bytes())
    with pytest.raises(UnsupportedAudio, match="first 4096 bytes"):
        Transcoder(classify(long[:SNIFF_BYTES], Hints(), raw_audio="none"), target)


def _long_header(data: bytes) -> bytes:
    """``data`` with a 6000-byte JUNK chunk between ``fmt `` and ``data``."""
    fmt_end = 12 + 8 + struct.unpack("<I", data[16:20])[0]
    junk = b"JUNK" + struct.pack("<I", 6000) + bytes(6000)
    riff_size = struct.unpack("<I", data[4:8])[0] + len(junk)
    return data[:4] + struct.pack("<I", riff_size) + data[8:fmt_end] + junk + data[fmt_end:]


def test_chunks_after_the_samples_are_not_audio(sources: dict[str, Path], tmp_path: Path) -> None:
    """A trailing LIST chunk is bounded out by the data chunk's size, and a truncated last frame is dropped."""
    data = sources["pcm16-wav-48k-stereo"].read_bytes()
    tail = b"LIST" + struct.pack("<I", 4000) + os.urandom(4000)
    stored, encoder = transcode(data + tail, arrival_of(Path("x.wav"), data), "wav-pcm16")
    assert encoder.facts().duration_seconds == SECONDS
    assert stored[44:] == data[-(len(stored) - 44) :]
    truncated = data[:-1]  # the header still says the full size; the last stereo frame is cut
    stored, encoder = transcode(truncated, arrival_of(Path("x.wav"), truncated), "wav-pcm16")
    assert len(stored) - 44 == int(SECONDS * 48000) * 4 - 4


@pytest.mark.parametrize(("target", "bitrate"), [("mp3", 64_000), ("opus", 48_000), ("mp3", None), ("opus", None)])
def test_bitrate(sources: dict[str, Path], tmp_path: Path, target: str, bitrate: int | None) -> None:
    """--audio-bitrate is the encoder's bitrate (mp3 constant, opus on average); without it, the speech defaults."""
    path = sources["ulaw-raw-8k"]
    data = path.read_bytes()
    stored, _ = transcode(data, arrival_of(path, data), target, bitrate=bitrate)
    expected = bitrate or default_bitrate(target, 1)
    assert expected is not None
    measured = len(stored) * 8 / SECONDS
    assert expected * 0.75 < measured < expected * 1.25, f"{measured:.0f} bit/s for {expected}"


def test_what_cannot_be_transcoded_is_refused_before_a_byte_is_stored(tmp_path: Path) -> None:
    gsm = sox_make(tmp_path / "gsm.wav", "-r", "8000", "-c", "1", "-e", "gsm-full-rate").read_bytes()
    arrival = arrival_of(tmp_path / "gsm.wav", gsm)
    assert arrival.codec == "gsm610"
    with pytest.raises(UnsupportedAudio, match="gsm610"):
        Transcoder(arrival, "mp3", bitrate=None)
    with pytest.raises(UnsupportedAudio):
        Transcoder(Arrival("mp3", "mp3", 2, 44100), "opus", bitrate=None)
    with pytest.raises(ValueError, match="unknown target"):
        Transcoder(Arrival("g711", "mulaw", 1, 8000, 8), "aac", bitrate=None)


def test_a_wav_header_that_turns_out_broken_is_refused(tmp_path: Path) -> None:
    """A header longer than the sniffed bytes whose fmt chunk is impossible: refused while feeding, not stored."""
    bad = b"RIFF" + struct.pack("<I", 100_000) + b"WAVE" + b"JUNK" + struct.pack("<I", 5000) + bytes(5000)
    bad += b"fmt " + struct.pack("<I", 16) + struct.pack("<HHIIHH", 1, 0, 8000, 16000, 2, 16)
    encoder = Transcoder(classify(bad[:SNIFF_BYTES], Hints(), raw_audio="none"), "opus")
    with pytest.raises(UnsupportedAudio, match="zero channels"):
        encoder.feed(memoryview(bad))


@pytest.mark.slow
@pytest.mark.parametrize("target", ["mp3", "opus", "flac", "wav-pcm16"])
def test_memory_stays_flat_over_a_long_recording(target: str) -> None:
    """Five and a half minutes of µ-law in 512 KiB pieces: RSS at the end is what it was after one minute."""
    encoder = Transcoder(Arrival("g711", "mulaw", 1, 8000, 8), target)
    piece = memoryview(bytes(range(256)) * 2048)  # 512 KiB, 65 s of 8 kHz µ-law
    largest = 0
    rss = []
    for _ in range(5):
        largest = max(largest, len(encoder.feed(piece)))
        rss.append(_rss())
    encoder.finish()
    assert largest <= 2 * len(piece), "a feed returned more than its own input decoded to 16 bits"
    growth = rss[-1] - rss[0]
    assert growth < 4 * 1024 * 1024, f"RSS grew by {growth / 1048576:.1f} MiB from 1 to 5.5 minutes"
    assert encoder.facts().duration_seconds == pytest.approx(5 * len(piece) / 8000, abs=0.001)


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError("VmRSS")


def test_without_pyav_a_transcoding_format_is_refused_at_start_with_one_line(tmp_path: Path) -> None:
    """The real CLI in a process where ``import av`` fails, as without the audio extra: exit 2, one line naming it."""
    shim = tmp_path / "no-pyav"
    shim.mkdir()
    (shim / "av.py").write_text('raise ModuleNotFoundError("No module named \'av\'", name="av")\n')
    env = {"PYTHONPATH": f"{shim}{os.pathsep}{Path(__file__).resolve().parent.parent}"}
    for fmt in ("mp3", "opus", "flac", "wav-pcm16"):
        line = config_error("serve", "--store-format", fmt, env=env)
        assert f"--store-format {fmt}: transcoding needs the 'audio' extra: pip install 'streamproxy[audio]'" in line
    # The formats that do not transcode start without PyAV.
    assert "--port" in config_error("serve", "--store-format", "original", "--port", "-1", env=env)


def test_20_bit_samples_in_24_bit_containers(sources: dict[str, Path], tmp_path: Path) -> None:
    """A WAV saying 20 bits in 3-byte containers (left-justified) decodes as 24-bit."""
    data = bytearray(sources["pcm24-wav-16k"].read_bytes())
    fmt = data.index(b"fmt ")
    assert struct.unpack("<H", data[fmt + 22 : fmt + 24])[0] == 24
    data[fmt + 22 : fmt + 24] = struct.pack("<H", 20)
    arrival = arrival_of(Path("x.wav"), bytes(data))
    assert arrival.bits_per_sample == 20
    stored, _ = transcode(bytes(data), arrival, "flac")
    out = tmp_path / "20bit.flac"
    out.write_bytes(stored)
    assert abs(probe(out).decoded_duration - SECONDS) <= TOLERANCE
