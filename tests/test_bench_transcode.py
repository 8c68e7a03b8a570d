"""Smoke test of ``python -m bench.transcode``: it runs, and its figures are the right kind of figure.

Not a timed test: the speeds only have to be above real time, and the sizes are those of the
bitrates chosen (MP3 is constant bitrate). The run through the server stores a 36-second call
per format and checks it decodes to 36 seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.transcode import main
from tests.audio_tools import tool


@pytest.mark.slow
def test_bench_transcode_runs_and_measures(tmp_path: Path) -> None:
    for program in ("sox", "soxi", "ffmpeg"):
        tool(program)
    output = tmp_path / "transcode.json"
    argv = ["--seconds", "20", "--hours", "0.01", "--formats", "wav", "mp3", "--doc", "-"]
    assert main([*argv, "--output", str(output), "--workdir", str(tmp_path / "work")]) == 0
    result = json.loads(output.read_text())
    sizes = result["sizes"]["size_per_hour"]["8k_mono_ulaw"]
    assert sizes["original"] == pytest.approx(28.8e6, rel=0.001)
    assert sizes["wav-pcm16"] == pytest.approx(57.6e6, rel=0.01)
    assert sizes["mp3"] == pytest.approx(14.4e6, rel=0.05)  # 32 kbit/s constant
    for label, speeds in result["sizes"]["speed"].items():
        assert all(speed > 1 for speed in speeds.values()), (label, speeds)
    for fmt, run in result["server"]["runs"].items():
        assert run["answer"]["status"] == "success"
        assert run["decoded_seconds"] == pytest.approx(36.0, abs=0.05), fmt
        assert run["tmp_files"] == 0 and run["peak_rss"] > run["idle_rss"] > 0
