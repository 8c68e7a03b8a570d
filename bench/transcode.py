"""``python -m bench.transcode``: what each ``--store-format`` costs in CPU, memory and storage.

Three measurements, written between the ``transcode`` markers of docs/benchmarks.md:

1. **Speed**: the transcoder alone, in this process, fed 1 MiB pieces as the stream does;
   seconds of audio per CPU second of the process (one core: every encoder here is
   single-threaded), for 8 kHz mono µ-law (a call) and 48 kHz stereo 16-bit PCM.
2. **Storage**: bytes stored per hour of call audio (8 kHz mono µ-law speech) per format.
3. **Peak RSS through the server**: ``streamproxy serve`` on a filesystem sink with each
   ``--store-format``, one POST of a 4-hour µ-law recording (115 MB), VmHWM of the server
   process polled from /proc; the stored file is then decoded by Debian's ffmpeg to check its
   duration.

The audio is speech (espeak-ng reading an IVR dialogue, two voices for stereo, with pauses and
a little line noise), because what FLAC and Opus (whose bitrate varies) store depends on it;
without espeak-ng a sox sweep stands in. Needs sox and ffmpeg (``bash bench/run`` installs them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from .client import post_recording
from .measure import MIB, TmpWatch, status_kib, wait_http
from .run import PY, base_env, free_port, stop

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- transcode:begin -->", "<!-- transcode:end -->"
FORMATS = ("wav", "wav-pcm16", "mp3", "opus", "flac")
TRANSCODED = ("wav-pcm16", "mp3", "opus", "flac")
PIECE = 1024 * 1024
LINES = (
    "Thank you for calling. This call may be recorded for quality and training purposes.",
    "Hello, I am calling about my last invoice. The amount is higher than usual.",
    "Let me check that for you. Can you give me your customer number, please?",
    "Yes, it is four seven one, two nine eight, three three zero.",
    "Thank you. I see a one time charge for the new router in October.",
    "I see. Could you send me the details by e-mail? That would be great.",
)


def seconds_of(path: Path) -> float:
    """Duration of an audio file, as soxi reads it."""
    return float(subprocess.run([tool("soxi"), "-D", str(path)], check=True, capture_output=True, text=True).stdout)


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} is required: apt-get install {'ffmpeg' if name == 'ffprobe' else name}")
    return path


def speech(workdir: Path, seconds: float, *, rate: int, channels: int) -> Path:
    """A WAV file of ``seconds`` of dialogue (cached): 16-bit PCM at ``rate`` with ``channels``."""
    out = workdir / f"speech-{rate}-{channels}-{seconds:g}.wav"
    if out.exists():
        return out
    sox = tool("sox")
    voices = []
    for voice, lines in enumerate((LINES[0::2], LINES[1::2])):
        path = workdir / f"voice{voice}.wav"
        if shutil.which("espeak-ng"):
            parts = []
            for n, line in enumerate(lines):
                part = workdir / f"line{voice}-{n}.wav"
                subprocess.run(
                    ["espeak-ng", "-v", "en-us" if voice else "en", "-s", "160", "-w", str(part), line], check=True
                )
                parts.append(str(part))
            # Each speaker talks, then listens (silence) while the other talks.
            subprocess.run([sox, "-V1", *parts, "-r", str(rate), "-c", "1", str(path), "pad", "0", "2"], check=True)
        else:
            subprocess.run(
                [sox, "-V1", "-n", "-r", str(rate), "-c", "1", str(path), "synth", "20", "sine", "300-3000"], check=True
            )
        voices.append(path)
    length = max(seconds_of(v) for v in voices)
    padded = []
    for n, spoken in enumerate(voices):
        path = workdir / f"padded{n}.wav"
        own = seconds_of(spoken)
        # The second voice starts when the first one pauses: a dialogue, not a duet.
        pad = ["pad", f"{length / 2 if n else 0:.3f}", f"{length - own + (0 if n else length / 2):.3f}"]
        subprocess.run([sox, "-V1", str(spoken), str(path), *pad], check=True)
        padded.append(path)
    one = workdir / f"dialogue-{rate}-{channels}.wav"
    if channels == 2:
        subprocess.run([sox, "-V1", "-M", *map(str, padded), str(one)], check=True)
    else:
        subprocess.run([sox, "-V1", "-m", *map(str, padded), str(one)], check=True)
    # Line noise at -60 dBFS under the whole call; then repeat the dialogue to the length wanted.
    noise = workdir / "noise.wav"
    dialogue_seconds = seconds_of(one)
    subprocess.run(
        [sox, "-V1", "-n", "-r", str(rate), "-c", str(channels), str(noise), "synth", f"{dialogue_seconds}",
         "pinknoise", "vol", "0.001"],
        check=True,
    )  # fmt: skip
    noisy = workdir / f"noisy-{rate}-{channels}.wav"
    subprocess.run([sox, "-V1", "-m", str(one), str(noise), "-b", "16", str(noisy)], check=True)
    repeats = int(seconds // dialogue_seconds)
    subprocess.run([sox, "-V1", str(noisy), str(out), "repeat", str(repeats), "trim", "0", f"{seconds}"], check=True)
    return out


def ulaw(wav: Path) -> Path:
    """The same audio as headerless 8 kHz mono µ-law: what the Call Recording module sends."""
    out = wav.with_suffix(".ul")
    if not out.exists():
        subprocess.run(
            [tool("sox"), "-V1", str(wav), "-r", "8000", "-c", "1", "-e", "mu-law", "-t", "ul", str(out)], check=True
        )
    return out


def transcode_file(path: Path, target: str, arrival: Any) -> tuple[int, float, float]:
    """Feed ``path`` through a Transcoder in 1 MiB pieces; return (stored bytes, CPU seconds, audio seconds)."""
    from streamproxy.audio.transcode import Transcoder

    stored = 0
    with open(path, "rb") as source:
        started = time.process_time()
        encoder = Transcoder(arrival, target, bitrate=None)
        while piece := source.read(PIECE):
            stored += len(encoder.feed(memoryview(piece)))
        stored += len(encoder.finish())
        cpu = time.process_time() - started
    facts = encoder.facts()
    header = 44 if target == "wav-pcm16" else len(encoder.header())
    assert facts.duration_seconds is not None
    return stored + header, cpu, facts.duration_seconds


def speed_and_size(workdir: Path, seconds: float, log: Any) -> dict[str, Any]:
    from streamproxy.audio.formats import SNIFF_BYTES, Hints, classify

    mono = ulaw(speech(workdir, seconds, rate=8000, channels=1))
    stereo = speech(workdir, min(seconds, 300), rate=48000, channels=2)
    out: dict[str, Any] = {"seconds": seconds, "speed": {}, "size_per_hour": {}}
    for label, path in (("8k_mono_ulaw", mono), ("48k_stereo_pcm16", stereo)):
        head = path.read_bytes()[:SNIFF_BYTES]
        arrival = classify(head, Hints(name=path.name), raw_audio="ulaw")
        out["speed"][label] = {}
        out["size_per_hour"][label] = {}
        for target in TRANSCODED:
            size, cpu, audio = transcode_file(path, target, arrival)
            out["speed"][label][target] = audio / cpu
            out["size_per_hour"][label][target] = size / audio * 3600
            log(f"{label} {target}: {audio / cpu:.0f}x real time, {size / audio * 3600 / 1e6:.1f} MB/hour")
        # Without transcoding: the received bytes (original) and G.711 behind a 58-byte header (wav).
        audio = path.stat().st_size / (8000 if label == "8k_mono_ulaw" else 48000 * 4)
        out["size_per_hour"][label]["original"] = path.stat().st_size / audio * 3600
        if label == "8k_mono_ulaw":
            out["size_per_hour"][label]["wav"] = (path.stat().st_size + 58) / audio * 3600
    return out


def through_server(workdir: Path, hours: float, formats: tuple[str, ...], log: Any) -> dict[str, Any]:
    """Peak RSS of ``streamproxy serve`` storing a long µ-law call in each format (filesystem sink)."""
    source = ulaw(speech(workdir, hours * 3600, rate=8000, channels=1))
    out: dict[str, Any] = {"hours": hours, "received": source.stat().st_size, "runs": {}}
    for store_format in formats:
        store = Path(tempfile.mkdtemp(prefix="store-", dir=workdir))
        tmp = Path(tempfile.mkdtemp(prefix="tmp-", dir=workdir))
        port = free_port()
        argv = [
            PY, "-m", "streamproxy", "serve", "--port", str(port), "--storage", store.as_uri() + "/",
            "--store-format", store_format, "--log-level", "warning", "--max-upload-bytes", "4GiB",
        ]  # fmt: skip
        proc = subprocess.Popen(argv, env={**base_env(), "TMPDIR": str(tmp)}, stderr=subprocess.PIPE)
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", proc)
            idle = status_kib(proc.pid, "VmRSS") * 1024
            key = uuid.uuid4().hex[:10]
            with TmpWatch(tmp, proc.pid) as watch:
                result = post_recording("127.0.0.1", port, "/recordings", str(source), key)
            peak = status_kib(proc.pid) * 1024
        finally:
            stop(proc)
        if result.status != 200:
            raise RuntimeError(f"{store_format}: HTTP {result.status} {result.body}")
        stored = next(store.rglob(f"{key}*"))
        decoded = decoded_seconds(stored)
        out["runs"][store_format] = {
            "peak_rss": peak,
            "idle_rss": idle,
            "seconds": result.seconds,
            "stored": stored.stat().st_size,
            "decoded_seconds": decoded,
            "tmp_files": watch.peak_files,
            "answer": result.body,
        }
        log(
            f"server {store_format}: peak RSS {peak / MIB:.1f} MiB (idle {idle / MIB:.1f}), {result.seconds:.0f} s, "
            f"stored {stored.stat().st_size / 1e6:.1f} MB, decodes to {decoded:.2f} s"
        )
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def decoded_seconds(path: Path) -> float:
    """Seconds of audio Debian's ffmpeg decodes from ``path`` (8 kHz mono 16-bit samples counted)."""
    proc = subprocess.Popen(
        [tool("ffmpeg"), "-v", "error", "-i", str(path), "-ac", "1", "-ar", "8000", "-f", "s16le", "-"],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    total = 0
    while chunk := proc.stdout.read(PIECE):
        total += len(chunk)
    proc.wait()
    return total / 2 / 8000


def markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    sizes = result["sizes"]["size_per_hour"]
    speed = result["sizes"]["speed"]
    server = result.get("server", {}).get("runs", {})
    hours = result.get("server", {}).get("hours")
    lines = [
        f"Run `{result['command']}` on {machine['date']}, commit `{machine['commit']}`, {machine['cpu']}, "
        f"PyAV {machine['av']} (libavcodec {machine['ffmpeg']}), "
        f"load average {result['load'][0]:.1f}-{result['load'][-1]:.1f}.",
        "",
        "| `--store-format` | stored per hour of call audio | transcode speed, 8 kHz mono µ-law | "
        f"transcode speed, 48 kHz stereo | peak RSS, {hours:g} h µ-law call through the server |"
        if hours
        else "| `--store-format` | stored per hour of call audio | transcode speed, 8 kHz mono µ-law | "
        "transcode speed, 48 kHz stereo | peak RSS through the server |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for fmt in ("original", *FORMATS):
        size = sizes["8k_mono_ulaw"].get(fmt)
        mono = speed["8k_mono_ulaw"].get(fmt)
        stereo = speed["48k_stereo_pcm16"].get(fmt)
        run = server.get(fmt)
        rss = f"{run['peak_rss'] / MIB:.0f} MiB" if run else "-"
        lines.append(
            f"| `{fmt}` | {size / 1e6:.1f} MB | {f'{mono:.0f}x' if mono else '-'} | "
            f"{f'{stereo:.0f}x' if stereo else '-'} | {rss} |"
        )
    lines += [
        "",
        "Speed is seconds of audio per CPU second of one core (the transcoder alone, 1 MiB pieces). "
        "48 kHz stereo: "
        + ", ".join(f"`{fmt}` {sizes['48k_stereo_pcm16'][fmt] / 1e6:.0f} MB/hour" for fmt in TRANSCODED)
        + f" (16-bit PCM as received: {sizes['48k_stereo_pcm16']['original'] / 1e6:.0f} MB/hour).",
    ]
    if server:
        lines.append("")
        lines.append(
            "Through the server (idle RSS before the upload in brackets): "
            + "; ".join(
                f"`{fmt}` [{run['idle_rss'] / MIB:.0f} MiB] {run['seconds']:.0f} s for the upload, "
                f"stored {run['stored'] / 1e6:.1f} MB, decoded by ffmpeg to {run['decoded_seconds']:.1f} s"
                + (f", {run['tmp_files']} files in TMPDIR" if "tmp_files" in run else "")
                + (f" ({run['note']})" if "note" in run else "")
                for fmt, run in server.items()
            )
            + "."
        )
    return "\n".join(lines)


def write_doc(doc: Path, text: str) -> None:
    content = doc.read_text()
    if BEGIN not in content:
        raise SystemExit(f"{doc} has no {BEGIN} ... {END} section")
    before, rest = content.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    doc.write_text(f"{before}{BEGIN}\n{text}\n{END}{after}")


def machine() -> dict[str, str]:
    import av

    from .run import machine as base

    info = base()
    info["av"] = av.__version__
    info["ffmpeg"] = ".".join(map(str, av.library_versions["libavcodec"]))
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transcode", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600, help="audio per speed/size measurement (default 600)")
    parser.add_argument("--hours", type=float, default=4, help="length of the call sent through the server (default 4)")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS, help="server runs")
    parser.add_argument("--no-server", dest="server", action="store_false", help="skip the runs through the server")
    parser.add_argument(
        "--workdir", help="where test audio is made and cached (default $TMPDIR/streamproxy-bench-audio)"
    )
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "transcode.json"))
    parser.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"), help="'-' to only print")
    parser.add_argument("--report", metavar="JSON", help="only rewrite the section from a results file")
    args = parser.parse_args(argv)
    if args.report:
        result = json.loads(Path(args.report).read_text())
    else:
        workdir = Path(args.workdir or Path(tempfile.gettempdir()) / "streamproxy-bench-audio")
        workdir.mkdir(parents=True, exist_ok=True)

        def log(text: str) -> None:
            print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)

        load = [float(Path("/proc/loadavg").read_text().split()[0])]
        shown = [f"--seconds {args.seconds:g}", f"--hours {args.hours:g}"] + ([] if args.server else ["--no-server"])
        result = {"command": "python -m bench.transcode " + " ".join(shown), "machine": machine()}
        result["sizes"] = speed_and_size(workdir, args.seconds, log)
        load.append(float(Path("/proc/loadavg").read_text().split()[0]))
        if args.server:
            result["server"] = through_server(workdir, args.hours, tuple(args.formats), log)
            load.append(float(Path("/proc/loadavg").read_text().split()[0]))
        result["load"] = load
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=1, default=str))
    text = markdown(result)
    print(text)
    if args.doc != "-":
        write_doc(Path(args.doc), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
