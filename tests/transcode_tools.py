"""Debian's audio tools for the transcoding tests: sox makes the inputs, ffmpeg/ffprobe judge the outputs.

These are independent of the code under test: Debian's ffmpeg is its own build (5.1, against
PyAV's bundled 7.x/8.x libraries), and sox has its own G.711 and PCM code. Under CI (``CI``
set) a missing tool fails the test instead of skipping it (``tests.audio_tools.tool``).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.audio_tools import tool


def sox_make(path: Path, *args: str, seconds: float = 3.0, effect: tuple[str, ...] = ("sine", "300-3000")) -> Path:
    """Write ``path`` with sox: ``sox -n ARGS path synth SECONDS EFFECT`` (a sweep through the telephone band)."""
    sox = tool("sox")
    subprocess.run(
        [sox, "-V1", "-n", *args, str(path), "synth", str(seconds), *effect, "vol", "0.5"],
        check=True,
        capture_output=True,
    )
    return path


@dataclass(frozen=True)
class Probed:
    """What ffprobe says of a file, and what ffmpeg decodes from it."""

    codec: str
    channels: int
    sample_rate: int
    container_duration: float | None
    decoded_duration: float  # samples ffmpeg decoded / sample rate


def probe(path: Path) -> Probed:
    """Ask Debian's ffprobe and ffmpeg what ``path`` holds; raises if they cannot read or decode it."""
    ffprobe = tool("ffprobe")
    ffmpeg = tool("ffmpeg")
    shown = subprocess.run(
        [ffprobe, "-v", "error", "-show_entries", "stream=codec_name,channels,sample_rate:format=duration",
         "-of", "json", str(path)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    info = json.loads(shown.stdout)
    stream = info["streams"][0]
    rate = int(stream["sample_rate"])
    # Decode every sample, mixed to mono at the stream's own rate: the count is the duration a listener hears.
    decoded = subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-f", "s16le", "-"],
        check=True,
        capture_output=True,
    )
    duration = info.get("format", {}).get("duration")
    return Probed(
        codec=stream["codec_name"],
        channels=int(stream["channels"]),
        sample_rate=rate,
        container_duration=float(duration) if duration not in (None, "N/A") else None,
        decoded_duration=len(decoded.stdout) / 2 / rate,
    )


def sox_to_pcm16(path: Path, *type_args: str) -> bytes:
    """Return sox's own conversion of ``path`` to raw little-endian 16-bit samples."""
    sox = tool("sox")
    out = subprocess.run(
        [sox, "-V1", *type_args, str(path), "-b", "16", "-e", "signed-integer", "-L", "-t", "raw", "-"],
        check=True,
        capture_output=True,
    )
    return out.stdout
