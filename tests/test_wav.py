"""WAV facts: the header read as bytes stream by, from files that Python's wave module and sox write."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from streamproxy.wav import MAX_DATA_OFFSET, WavProbe
from tests.audio_tools import sox_file, wave_file


def probe(data: bytes, chunk: int = 0) -> WavProbe:
    """Feed ``data`` in pieces of ``chunk`` bytes (0: all at once), then end the stream."""
    wav = WavProbe()
    step = chunk or len(data) or 1
    for start in range(0, len(data), step):
        wav.feed(data[start : start + step])
    wav.finish()
    return wav


def facts(data: bytes, chunk: int = 0) -> dict[str, object] | None:
    wav = probe(data, chunk)
    return wav.info.to_json(len(data)) if wav.info else None


@pytest.mark.parametrize("chunk", [0, 1, 7, 44, 4096])
def test_wave_module_mono_pcm(chunk: int) -> None:
    """Mono 16-bit 8 kHz PCM from the wave module, however the bytes are split on arrival."""
    assert facts(wave_file(frames=12000), chunk) == {
        "format": "pcm",
        "channels": 1,
        "sample_rate": 8000,
        "bits_per_sample": 16,
        "duration_seconds": 1.5,
    }


def test_wave_module_stereo_and_8bit() -> None:
    """Stereo 44.1 kHz and 8-bit mono: channels and bits count in the byte rate."""
    stereo = facts(wave_file(channels=2, rate=44100, frames=44100 * 2))
    assert stereo == {
        "format": "pcm",
        "channels": 2,
        "sample_rate": 44100,
        "bits_per_sample": 16,
        "duration_seconds": 2.0,
    }
    eight = facts(wave_file(width=1, rate=11025, frames=11025 // 2))
    assert eight is not None and eight["bits_per_sample"] == 8 and eight["duration_seconds"] == 0.5


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-r", "8000", "-c", "1", "-e", "mu-law", "-b", "8"], ("mulaw", 1, 8000, 8)),
        (["-r", "8000", "-c", "2", "-e", "mu-law", "-b", "8"], ("mulaw", 2, 8000, 8)),
        (["-r", "8000", "-c", "1", "-e", "a-law", "-b", "8"], ("alaw", 1, 8000, 8)),
        (["-r", "16000", "-c", "2", "-e", "signed-integer", "-b", "16"], ("pcm", 2, 16000, 16)),
        (["-r", "48000", "-c", "1", "-e", "signed-integer", "-b", "24"], ("pcm", 1, 48000, 24)),
        (["-r", "22050", "-c", "1", "-e", "floating-point", "-b", "32"], ("ieee_float", 1, 22050, 32)),
    ],
    ids=["mulaw-mono", "mulaw-stereo", "alaw", "pcm16-stereo", "pcm24-extensible", "float32"],
)
def test_sox_files(tmp_path: Path, args: list[str], expected: tuple[str, int, int, int]) -> None:
    """sox's mu-law, A-law, stereo, 24-bit (WAVE_FORMAT_EXTENSIBLE) and float files."""
    data = sox_file(tmp_path, "x.wav", *args, seconds=1.5)
    got = facts(data, chunk=5)
    assert got is not None
    assert (got["format"], got["channels"], got["sample_rate"], got["bits_per_sample"]) == expected
    assert got["duration_seconds"] == 1.5


def test_sox_extensible_header_is_really_extensible(tmp_path: Path) -> None:
    """The 24-bit case above exercises the subformat path: sox writes format tag 0xFFFE there."""
    data = sox_file(tmp_path, "x.wav", "-r", "8000", "-c", "1", "-b", "24", seconds=0.1)
    assert struct.unpack("<H", data[20:22])[0] == 0xFFFE


def _patch_sizes(data: bytes, size: int) -> bytes:
    """Set the RIFF and data sizes to ``size``, as a recorder writing while the call goes on does."""
    out = bytearray(data)
    out[4:8] = struct.pack("<I", size)
    data_at = out.index(b"data")
    out[data_at + 4 : data_at + 8] = struct.pack("<I", size)
    return bytes(out)


@pytest.mark.parametrize("size", [0, 0xFFFFFFFF])
def test_streamed_sizes_count_the_bytes_received(size: int) -> None:
    """0 or 0xFFFFFFFF sizes: the duration comes from the bytes that actually arrived."""
    data = _patch_sizes(wave_file(frames=4000), size)
    assert facts(data) == {
        "format": "pcm",
        "channels": 1,
        "sample_rate": 8000,
        "bits_per_sample": 16,
        "duration_seconds": 0.5,
    }
    half = data[: 44 + 4000]  # the upload ends early: a quarter second of samples
    assert facts(half) is not None and facts(half)["duration_seconds"] == 0.25  # type: ignore[index]


def test_declared_data_size_excludes_trailing_chunks() -> None:
    """A LIST chunk after the samples is not sound."""
    data = wave_file(frames=8000) + b"LIST" + struct.pack("<I", 20) + b"INFOISFT\x08\x00\x00\x00sox 14.4"
    assert facts(data)["duration_seconds"] == 1.0  # type: ignore[index]


def test_chunks_before_data_are_skipped_not_buffered() -> None:
    """A large LIST/bext chunk between fmt and data is skipped by counting, fed one byte at a time."""
    plain = wave_file(frames=800)
    extra = b"bext" + struct.pack("<I", 60001) + bytes(60001) + b"\x00"  # odd size: one pad byte
    data = plain[:36] + extra + plain[36:]
    wav = WavProbe()
    for byte in range(len(data)):
        wav.feed(data[byte : byte + 1])
        assert len(wav._pending) <= 1024
    assert wav.info is not None and wav.info.data_offset == 44 + len(extra)
    assert wav.info.duration(len(data)) == 0.1


def test_probe_stops_at_the_data_chunk() -> None:
    """Once the data header has gone by, the probe is done and later bytes are not looked at."""
    wav = WavProbe()
    data = wave_file(frames=100)
    wav.feed(data[:44])
    assert wav.done and wav.info is not None and wav.info.data_offset == 44


def _fmt(tag: int = 1, channels: int = 1, rate: int = 8000, block: int = 2, bits: int = 16) -> bytes:
    body = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    return b"fmt " + struct.pack("<I", len(body)) + body


def _riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"ID3\x04" + bytes(200), "RIFF/WAVE"),
        (b"RIFF\x24\x00\x00\x00AVI LIST" + bytes(100), "RIFF/WAVE"),
        (_riff(b"fmt " + struct.pack("<I", 2) + b"\x01\x00", b"data\x00\x00\x00\x00") + bytes(10), "fmt chunk"),
        (_riff(_fmt(channels=0), b"data\x04\x00\x00\x00") + bytes(4), "zero channels"),
        (_riff(_fmt(rate=0), b"data\x04\x00\x00\x00") + bytes(4), "zero channels"),
        (_riff(_fmt(block=3), b"data\x04\x00\x00\x00") + bytes(4), "block size"),
        (_riff(b"data\x04\x00\x00\x00", _fmt()) + bytes(4), "before the fmt"),
        (_riff(_fmt(tag=0xFFFE)) + b"data\x04\x00\x00\x00" + bytes(4), "subformat"),
        (_riff(_fmt())[:30], "ends inside"),
        (_riff(_fmt(), b"JUNK" + struct.pack("<I", MAX_DATA_OFFSET)) + bytes(100), "do not start within"),
        (_riff(_fmt(), b"JUNK\xff\xff\xff\xff"), "do not start within"),
    ],
    ids=[
        "mp3",
        "avi",
        "short-fmt",
        "no-channels",
        "no-rate",
        "bad-block",
        "data-first",
        "bad-extensible",
        "truncated",
        "huge-chunk",
        "endless-chunk",
    ],
)
def test_corrupt_headers_are_not_wav(data: bytes, reason: str) -> None:
    """Anything that is not a readable RIFF/WAVE header gives no facts and says why."""
    for chunk in (0, 3):
        wav = probe(data, chunk)
        assert wav.done and wav.info is None
        assert reason in wav.reason


def test_format_tag_names() -> None:
    """Compressed and unknown format tags are named; their duration uses the header's byte rate."""
    body = struct.pack("<HHIIHH", 0x31, 1, 8000, 1625, 65, 0)  # GSM 6.10
    data = _riff(b"fmt " + struct.pack("<I", len(body)) + body, b"data" + struct.pack("<I", 3250)) + bytes(3250)
    assert facts(data) == {
        "format": "gsm610",
        "channels": 1,
        "sample_rate": 8000,
        "bits_per_sample": 0,
        "duration_seconds": 2.0,
    }
    body = struct.pack("<HHIIHH", 0x4242, 1, 8000, 1000, 1, 8)
    data = _riff(b"fmt " + struct.pack("<I", len(body)) + body, b"data" + struct.pack("<I", 500)) + bytes(500)
    assert facts(data)["format"] == "0x4242"  # type: ignore[index]
