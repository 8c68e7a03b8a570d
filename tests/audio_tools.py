"""Audio test material: G.711 made by sox, what sox makes of a stored file, a µ-law decoder for fakes."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import wave
from pathlib import Path

from streamproxy.audio import AudioFacts
from streamproxy.audio.formats import Arrival
from tests.helpers import payload, required


def tool(name: str) -> str:
    """Path of an external program; a missing one fails under CI (it must be installed) and skips elsewhere."""
    return required(shutil.which(name), f"{name} is required (apt-get install sox; .ci/run installs it)")


def g711(tmp_path: Path, seconds: float, law: str = "mu-law", name: str = "x.raw") -> bytes:
    """Headerless G.711 (8 kHz mono) of a 440 Hz sine, as sox writes it: the platform's .UL."""
    target = tmp_path / name
    ext = "ul" if law == "mu-law" else "al"
    subprocess.run(
        [
            tool("sox"),
            "-n",
            "-r",
            "8000",
            "-c",
            "1",
            "-e",
            law,
            "-t",
            ext,
            str(target),
            "synth",
            str(seconds),
            "sine",
            "440",
        ],
        check=True,
        timeout=60,
    )
    return target.read_bytes()


def soxi(path: Path) -> dict[str, str]:
    """What ``soxi`` reads from a file: channels, rate, encoding, duration in samples and seconds."""
    out: dict[str, str] = {}
    for flag, name in (("-c", "channels"), ("-r", "rate"), ("-e", "encoding"), ("-s", "samples"), ("-D", "seconds")):
        command = [tool("soxi"), flag, str(path)]
        result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"soxi cannot read {path.name}: {result.stderr.strip()}"
        out[name] = result.stdout.strip()
    return out


def _ulaw_to_linear(byte: int) -> int:
    u = ~byte & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return (0x84 - t) if u & 0x80 else (t - 0x84)


ULAW_TABLE = [_ulaw_to_linear(b).to_bytes(2, "little", signed=True) for b in range(256)]


class UlawToPcm16:
    """A stand-in ``Encoder`` for the pipeline tests: decodes µ-law to 16-bit PCM, in pieces as they come."""

    header_size = 0  # nothing held back: the stream's own PCM header goes in front

    def __init__(self, source: Arrival, target: str, *, bitrate: int | None) -> None:
        if source.kind != "g711" or source.codec != "mulaw":
            raise ValueError(f"only headerless µ-law, not {source.format}")
        self.target = target
        self.samples = 0

    def feed(self, data: memoryview) -> bytes:
        self.samples += len(data)
        return b"".join(ULAW_TABLE[b] for b in data)

    def finish(self) -> bytes:
        return b""

    def facts(self) -> AudioFacts:
        return AudioFacts("pcm", 1, 8000, 16, round(self.samples / 8000, 3))

    def header(self) -> bytes:
        return b""


SOX = shutil.which("sox")


def wave_file(*, channels: int = 1, rate: int = 8000, width: int = 2, frames: int = 8000) -> bytes:
    """A WAV file written by Python's wave module (PCM), with a recognisable sample pattern."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes(i % 251 for i in range(frames * channels * width)))
    return out.getvalue()


def sox_file(tmp_path: Path, name: str, *args: str, seconds: float = 1.5) -> bytes:
    """A WAV file written by sox (`sox -n ARGS out.wav synth SECONDS sine 440`)."""
    assert SOX is not None, "sox is required (apt-get install sox; .ci/run installs it)"
    target = tmp_path / name
    subprocess.run([SOX, "-n", *args, str(target), "synth", str(seconds), "sine", "440"], check=True, timeout=30)
    return target.read_bytes()


def big_wav(size: int) -> bytes:
    """A streamed-style 8 kHz mono mu-law WAV of ``size`` bytes whose header sizes say 0xFFFFFFFF."""
    fmt = struct.pack("<HHIIHH", 7, 1, 8000, 8000, 1, 8)
    header = b"RIFF\xff\xff\xff\xffWAVEfmt " + struct.pack("<I", 16) + fmt + b"data\xff\xff\xff\xff"
    return header + payload(size - len(header))
