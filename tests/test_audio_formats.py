"""Classification from first bytes and hints, store plans, and the WAV headers written for G.711 and PCM16."""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import pytest

from streamproxy.audio.formats import Hints, classify, plan, stored_type, strip_audio_extension
from streamproxy.wav import G711_HEADER_SIZE, PCM16_HEADER_SIZE, WavProbe, g711_header, pcm16_header
from tests.audio_tools import g711, soxi, tool

ULAW = bytes(range(256)) * 16  # headerless bytes with no signature


def _wav(width: int = 2) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(8000)
        w.writeframes(bytes(800 * width))
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "law"),
    [
        ("c.ul", "mulaw"),
        ("c.ULAW", "mulaw"),
        ("c.mu", "mulaw"),
        ("c.MuLaw", "mulaw"),
        ("c.pcmu", "mulaw"),
        ("c.al", "alaw"),
        ("c.ALAW", "alaw"),
        ("c.pcma", "alaw"),
    ],
)
def test_extension_names_the_law_whatever_raw_audio_says(name: str, law: str) -> None:
    arrival = classify(ULAW, Hints(name=name), raw_audio="none")
    assert (arrival.kind, arrival.codec, arrival.decided_by) == ("g711", law, "name")


@pytest.mark.parametrize(
    ("media", "law"),
    [
        ("audio/basic", "mulaw"),
        ("audio/x-mulaw", "mulaw"),
        ("audio/mulaw", "mulaw"),
        ("audio/x-ulaw", "mulaw"),
        ("audio/PCMU", "mulaw"),
        ("audio/PCMA", "alaw"),
        ("Audio/PCMA; rate=8000", "alaw"),
    ],
)
def test_declared_type_names_the_law(media: str, law: str) -> None:
    arrival = classify(ULAW, Hints(content_type=media), raw_audio="none")
    assert (arrival.kind, arrival.codec, arrival.decided_by) == ("g711", law, "type")


@pytest.mark.parametrize(("raw", "kind", "codec"), [("ulaw", "g711", "mulaw"), ("alaw", "g711", "alaw")])
def test_raw_audio_decides_without_hints(raw: str, kind: str, codec: str) -> None:
    arrival = classify(ULAW, Hints(name="call-7", content_type="application/octet-stream"), raw_audio=raw)
    assert (arrival.kind, arrival.codec, arrival.decided_by) == (kind, codec, "raw-audio")


def test_raw_audio_none_keeps_headerless_bytes_as_they_came() -> None:
    arrival = classify(ULAW, Hints(), raw_audio="none")
    assert arrival.kind == "headerless" and not arrival.is_audio
    chosen = plan(arrival, "wav")
    assert (chosen.ext, chosen.header, chosen.transcode, chosen.changes_bytes) == (".ul", None, None, False)


def test_signatures_win_over_hints(tmp_path: Path) -> None:
    """A WAV named .ul is a WAV; so are MP3, Ogg and FLAC sent as audio/basic."""
    assert classify(_wav(), Hints(name="x.ul", content_type="audio/basic"), raw_audio="ulaw").kind == "wav"
    assert classify(b"ID3\x04\x00" + bytes(100), Hints(name="x.ul"), raw_audio="ulaw").kind == "mp3"
    assert classify(b"fLaC" + bytes(100), Hints(name="x.al"), raw_audio="ulaw").kind == "flac"


def test_real_files_from_sox(tmp_path: Path) -> None:
    """FLAC, Ogg Vorbis and a bare MP3 frame stream are recognised with their channels and rate."""
    sox = tool("sox")
    import subprocess

    found = {}
    for ext in ("flac", "ogg", "mp3", "wav"):
        target = tmp_path / f"t.{ext}"
        done = subprocess.run(
            [sox, "-n", "-r", "16000", "-c", "2", str(target), "synth", "1", "sine", "440"], check=False
        )
        if done.returncode != 0:
            continue  # this sox build lacks the format (libsox-fmt-all adds mp3); the rest still count
        head = target.read_bytes()[:4096]
        found[ext] = classify(head, Hints(), raw_audio="ulaw")
    assert found["flac"].kind == "flac" and (found["flac"].channels, found["flac"].sample_rate) == (2, 16000)
    assert found["flac"].seconds == 1.0  # STREAMINFO's total samples
    assert found["wav"].kind == "wav" and found["wav"].channels == 2
    if "ogg" in found:
        assert (found["ogg"].kind, found["ogg"].codec, found["ogg"].sample_rate) == ("ogg", "vorbis", 16000)
    if "mp3" in found:
        assert found["mp3"].kind == "mp3"


def test_mp3_frame_sync_without_id3() -> None:
    """Two consecutive MPEG-1 layer III frame headers (128 kbit/s, 44.1 kHz: 417 bytes each) read as MP3."""
    header = bytes([0xFF, 0xFB, 0x90, 0x44])
    frame = header + bytes(417 - 4)
    assert classify(frame * 3, Hints(), raw_audio="ulaw").kind == "mp3"
    # One plausible header followed by noise is µ-law that happens to start with 0xFF 0xFB.
    assert classify(header + ULAW, Hints(), raw_audio="ulaw").kind == "g711"


def test_mulaw_silence_is_not_mistaken_for_mp3() -> None:
    assert classify(b"\xff" * 4096, Hints(), raw_audio="ulaw").kind == "g711"
    assert classify(b"\xff\x7f" * 2048, Hints(), raw_audio="ulaw").kind == "g711"


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"%PDF-1.7\n", "PDF"),
        (b"PK\x03\x04", "ZIP"),
        (b"\x89PNG\r\n", "PNG"),
        (b'  {"a": 1}', "JSON"),
        (b"<!DOCTYPE html>", "HTML"),
        (b"RIFF\x00\x00\x00\x00AVI ", "RIFF"),
    ],
)
def test_things_that_are_not_audio(data: bytes, what: str) -> None:
    arrival = classify(data + bytes(64), Hints(name="x.ul"), raw_audio="ulaw")
    assert arrival.kind == "other" and not arrival.is_audio and what in arrival.reason
    chosen = plan(arrival, "wav")
    assert chosen.header is None and not chosen.changes_bytes


def test_broken_wav_header_is_not_audio() -> None:
    arrival = classify(b"RIFF\x00\x00\x00\x00WAVEfmt \x04\x00\x00\x00abcd", Hints(), raw_audio="ulaw", complete=True)
    assert arrival.kind == "wav" and not arrival.is_audio and "fmt" in arrival.reason


@pytest.mark.parametrize(
    ("store", "ext", "content_type", "header", "transcode"),
    [
        ("wav", ".wav", "audio/wav", "g711", None),
        ("original", ".ul", "audio/basic", None, None),
        ("wav-pcm16", ".wav", "audio/wav", "pcm16", "wav-pcm16"),
        ("mp3", ".mp3", "audio/mpeg", None, "mp3"),
        ("opus", ".opus", "audio/ogg", None, "opus"),
        ("flac", ".flac", "audio/flac", None, "flac"),
    ],
)
def test_plans_for_headerless_mulaw(store: str, ext: str, content_type: str, header: str, transcode: str) -> None:
    chosen = plan(classify(ULAW, Hints(), raw_audio="ulaw"), store)
    assert (chosen.ext, chosen.content_type, chosen.header, chosen.transcode) == (ext, content_type, header, transcode)


def test_plans_keep_compressed_input_and_pcm16_wav() -> None:
    mp3 = classify(b"ID3\x04" + bytes(64), Hints(), raw_audio="ulaw")
    for store in ("wav", "mp3", "opus", "flac", "wav-pcm16"):
        assert plan(mp3, store).ext == ".mp3" and not plan(mp3, store).changes_bytes
    pcm16 = classify(_wav(2), Hints(), raw_audio="ulaw")
    assert not plan(pcm16, "wav-pcm16").changes_bytes and plan(pcm16, "opus").transcode == "opus"
    pcm8 = classify(_wav(1), Hints(), raw_audio="ulaw")
    assert plan(pcm8, "wav-pcm16").transcode == "wav-pcm16"
    assert plan(classify(ULAW, Hints(name="a.al"), raw_audio="ulaw"), "original").ext == ".al"


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("call-7.wav", "call-7"),
        ("call-7.WAV", "call-7"),
        ("c.ul", "c"),
        ("c.Opus", "c"),
        ("call-7", "call-7"),
        ("call.7", "call.7"),
        ("a.b.mp3", "a.b"),
        ("notes.txt", "notes.txt"),
    ],
)
def test_known_audio_extensions_are_stripped(name: str, stem: str) -> None:
    assert strip_audio_extension(name) == stem


@pytest.mark.parametrize(("law", "tag"), [("mulaw", 7), ("alaw", 6)])
@pytest.mark.parametrize("size", [0, 1, 8000, 8001])
def test_g711_header_fields(law: str, tag: int, size: int) -> None:
    header = g711_header(law, size)
    assert len(header) == G711_HEADER_SIZE
    pad = size & 1
    assert struct.unpack("<4sI4s", header[:12]) == (b"RIFF", G711_HEADER_SIZE - 8 + size + pad, b"WAVE")
    assert struct.unpack("<4sIHHIIHHH", header[12:38]) == (b"fmt ", 18, tag, 1, 8000, 8000, 1, 8, 0)
    assert struct.unpack("<4sII4sI", header[38:]) == (b"fact", 4, size, b"data", size)
    probe = WavProbe()
    probe.feed(header + bytes(size + pad))
    assert probe.info is not None and probe.info.data_offset == G711_HEADER_SIZE and (probe.info.data_size or 0) == size


def test_pcm16_header_is_what_the_wave_module_reads() -> None:
    samples = bytes(range(256)) * 40
    with wave.open(io.BytesIO(pcm16_header(2, 16000, len(samples)) + samples)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth(), w.getnframes()) == (
            2,
            16000,
            2,
            len(samples) // 4,
        )
        assert w.readframes(w.getnframes()) == samples
    assert len(pcm16_header(1, 8000, 0)) == PCM16_HEADER_SIZE
    with pytest.raises(ValueError, match="whole 16-bit frames"):
        pcm16_header(2, 8000, 6)


@pytest.mark.parametrize(("law", "encoding"), [("mu-law", "u-law"), ("a-law", "a-law")])
def test_sox_reads_g711_behind_the_header(tmp_path: Path, law: str, encoding: str) -> None:
    """sox's own reading of our header: right encoding, rate and duration, odd length included."""
    raw = g711(tmp_path, 2.5, law)[:-1]  # odd, so the pad byte is exercised
    target = tmp_path / "out.wav"
    target.write_bytes(g711_header("mulaw" if law == "mu-law" else "alaw", len(raw)) + raw + b"\0")
    facts = soxi(target)
    assert facts["channels"] == "1" and facts["rate"] == "8000"
    assert encoding in facts["encoding"].lower()
    assert int(facts["samples"]) == len(raw)


def test_stored_type_follows_the_format_or_keeps_the_clients_for_unknown_bytes() -> None:
    mulaw = plan(classify(ULAW, Hints(), raw_audio="ulaw"), "wav")
    assert stored_type(mulaw, "audio/x-whatever") == "audio/wav"
    unknown = plan(classify(ULAW, Hints(), raw_audio="none"), "wav")
    assert stored_type(unknown, "audio/wav; rate=8000") == "audio/wav"
    assert stored_type(unknown, "application/octet-stream") == "application/octet-stream"
    assert stored_type(unknown, None) == "application/octet-stream"
