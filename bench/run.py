"""Run the benchmark: contenders on the same files and the same stand-in sink, alternated round by round."""

from __future__ import annotations

import concurrent.futures
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .client import post_recording
from .measure import MIB, TmpWatch, byte_exact, cpu_seconds, status_kib, wait_cpu, wait_http
from .tls import start_tls_front

GIB = 1024 * MIB
BUCKET = "bench"
CONTENDERS = ("streamproxy", "direct", "direct_nochecksums", "rclone", "naive")
# The same over HTTPS (nginx with TLS in front of the stand-in, bench/tls.py); in the default set.
TLS_CONTENDERS = ("streamproxy_tls", "direct_nochecksums_tls", "rclone_tls")
# Not in the default set: streamproxy with one --checksum each, for what integrity costs.
# "crc64nvme" is what the default --checksum auto sends on AWS (a full-object CRC64NVME).
EXTRA_CONTENDERS = ("streamproxy_crc32", "streamproxy_crc64nvme", "streamproxy_md5", "streamproxy_none")
PY = sys.executable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STREAMPROXY_"))}
    env.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    return env


@dataclass
class Run:
    """One upload by one contender."""

    contender: str
    size: int
    seconds: float
    peak_rss: int
    cpu: float | None = None
    tail: float | None = None
    loop_cpu: float | None = None  # the event loop's thread (the main thread) of a proxy
    tmp_bytes: int = 0
    tmp_files: int = 0
    exact: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mib_s(self) -> float:
        return self.size / MIB / self.seconds


class Bench:
    def __init__(
        self,
        workdir: Path,
        endpoint: str,
        log: Callable[[str], None],
        tls_endpoint: str | None = None,
        ca: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.endpoint = endpoint
        self.log = log
        self.tls_endpoint = tls_endpoint  # the same stand-in behind nginx's TLS
        self.ca = ca

    def tmpdir(self) -> Path:
        path = self.workdir / "tmp" / uuid.uuid4().hex[:8]
        path.mkdir(parents=True)
        return path

    def record(self, key: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/_bench/object/{BUCKET}/{key}") as resp:
                return dict(json.load(resp))
        except OSError:
            return None

    def server(self, argv: list[str], port: int, tmp: Path) -> subprocess.Popen[bytes]:
        env = {**base_env(), "TMPDIR": str(tmp)}
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        return proc

    def through_server(self, name: str, argv: list[str], port: int, file: Path, **post: Any) -> Run:
        tmp = self.tmpdir()
        proc = self.server(argv, port, tmp)
        key = uuid.uuid4().hex[:12]
        try:
            cpu0, loop0 = cpu_seconds(proc.pid), cpu_seconds(proc.pid, proc.pid)
            with TmpWatch(tmp, proc.pid) as watch:
                result = post_recording("127.0.0.1", port, "/recordings", str(file), key, **post)
            cpu, loop = cpu_seconds(proc.pid) - cpu0, cpu_seconds(proc.pid, proc.pid) - loop0
            peak = status_kib(proc.pid) * 1024
        finally:
            stop(proc)
        if result.status != 200:
            raise RuntimeError(f"{name}: HTTP {result.status} {result.body}")
        shutil.rmtree(tmp, ignore_errors=True)
        return Run(
            name,
            file.stat().st_size,
            result.seconds,
            peak,
            cpu=cpu,
            tail=result.tail,
            loop_cpu=loop,
            tmp_bytes=watch.peak_bytes,
            tmp_files=watch.peak_files,
            exact=byte_exact(file, self.record(f"{key}.wav")),
        )

    def streamproxy_argv(self, port: int, *extra: str, endpoint: str | None = None) -> list[str]:
        return [
            PY, "-m", "streamproxy", "serve", "--port", str(port), "--storage", f"s3://{BUCKET}/",
            "--s3-endpoint-url", endpoint or self.endpoint, "--log-level", "warning", "--log-format", "json",
            # the stand-in plays AWS S3: measure the streaming path, not a start-up probe of the stand-in
            "--s3-capabilities", "aws",
            "--max-upload-bytes", "16GiB",
            # the bench moves opaque bytes, compared byte for byte with its peers': store them as they came
            "--raw-audio", "none", "--key-template", "{filename}.wav", *extra,
        ]  # fmt: skip

    def streamproxy(self, file: Path) -> Run:
        port = free_port()
        return self.through_server("streamproxy", self.streamproxy_argv(port), port, file)

    def with_checksum(self, mode: str, file: Path) -> Run:
        port = free_port()
        argv = self.streamproxy_argv(port, "--checksum", mode)
        return self.through_server(f"streamproxy_{mode}", argv, port, file)

    def streamproxy_crc32(self, file: Path) -> Run:
        return self.with_checksum("crc32", file)

    def streamproxy_crc64nvme(self, file: Path) -> Run:
        return self.with_checksum("crc64nvme", file)

    def streamproxy_md5(self, file: Path) -> Run:
        return self.with_checksum("md5", file)

    def streamproxy_none(self, file: Path) -> Run:
        return self.with_checksum("none", file)

    def streamproxy_tls(self, file: Path) -> Run:
        port = free_port()
        argv = self.streamproxy_argv(port, "--s3-ca-bundle", str(self.ca), endpoint=self.tls_endpoint)
        return self.through_server("streamproxy_tls", argv, port, file)

    def naive(self, file: Path) -> Run:
        port = free_port()
        argv = [PY, "-m", "bench.naive", "--port", str(port), "--bucket", BUCKET, "--endpoint-url", self.endpoint]
        return self.through_server("naive", argv, port, file)

    def child(self, name: str, argv: list[str], file: Path, key: str, env: dict[str, str], stdin: Any = None) -> Run:
        tmp = self.tmpdir()
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv, env={**env, "TMPDIR": str(tmp)}, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        with TmpWatch(tmp, proc.pid, interval=0.01) as watch:
            code, cpu = wait_cpu(proc)
        peak = watch.peak_rss
        seconds = time.perf_counter() - started
        out = proc.stdout.read() if proc.stdout else b""
        err = proc.stderr.read() if proc.stderr else b""
        if code != 0:
            raise RuntimeError(f"{name} exited {code}: {err.decode(errors='replace')[-2000:]}")
        extra: dict[str, Any] = {}
        if out.strip().startswith(b"{"):
            extra = json.loads(out)
            seconds = float(extra.get("seconds", seconds))
        shutil.rmtree(tmp, ignore_errors=True)
        return Run(
            name,
            file.stat().st_size,
            seconds,
            peak,
            cpu=cpu,
            tmp_bytes=watch.peak_bytes,
            tmp_files=watch.peak_files,
            exact=byte_exact(file, self.record(key)),
            extra=extra,
        )

    def direct(
        self, file: Path, endpoint: str | None = None, *, checksum: str = "md5", tls: bool = False, name: str = "direct"
    ) -> Run:
        key = uuid.uuid4().hex[:12]
        argv = [PY, "-m", "bench.direct", str(file), f"s3://{BUCKET}/{key}", "--checksum", checksum]
        argv += ["--endpoint-url", endpoint or (self.tls_endpoint if tls else self.endpoint) or ""]
        if tls:
            argv += ["--ca-bundle", str(self.ca)]
        return self.child(name, argv, file, key, base_env())

    def direct_nochecksums(self, file: Path) -> Run:
        return self.direct(file, checksum="none", name="direct_nochecksums")

    def direct_nochecksums_tls(self, file: Path) -> Run:
        return self.direct(file, checksum="none", tls=True, name="direct_nochecksums_tls")

    def rclone(self, file: Path, *, tls: bool = False, name: str = "rclone") -> Run:
        key = uuid.uuid4().hex[:12]
        endpoint = self.tls_endpoint if tls else self.endpoint
        argv = [
            "rclone", "rcat", "--config", os.devnull, "--s3-provider", "Other", "--s3-endpoint", str(endpoint),
            "--s3-access-key-id", "bench", "--s3-secret-access-key", "bench", "--s3-region", "us-east-1",
            "--s3-no-head", "--s3-chunk-size", "8Mi", "--s3-upload-concurrency", "4", f":s3:{BUCKET}/{key}",
        ]  # fmt: skip
        if tls:
            argv[2:2] = ["--ca-cert", str(self.ca)]
        env = {k: v for k, v in base_env().items() if k != "AWS_CA_BUNDLE"}
        with open(file, "rb") as stdin:
            return self.child(name, argv, file, key, env, stdin=stdin)

    def rclone_tls(self, file: Path) -> Run:
        return self.rclone(file, tls=True, name="rclone_tls")

    def concurrent(self, file: Path, uploads: int, extra: list[str], *, tls: bool = False) -> dict[str, Any]:
        """``uploads`` simultaneous POSTs of ``file`` through one streamproxy process."""
        port = free_port()
        tmp = self.tmpdir()
        argv = self.streamproxy_argv(port, *extra)
        if tls:
            argv = self.streamproxy_argv(port, *extra, "--s3-ca-bundle", str(self.ca), endpoint=self.tls_endpoint)
        proc = self.server(argv, port, tmp)
        keys = [uuid.uuid4().hex[:12] for _ in range(uploads)]
        try:
            idle = status_kib(proc.pid, "VmRSS") * 1024
            cpu0 = cpu_seconds(proc.pid)
            started = time.perf_counter()
            with TmpWatch(tmp, proc.pid) as watch, concurrent.futures.ThreadPoolExecutor(uploads) as pool:
                results = list(pool.map(lambda k: post_recording("127.0.0.1", port, "/recordings", str(file), k), keys))
            seconds = time.perf_counter() - started
            cpu = cpu_seconds(proc.pid) - cpu0
            peak = status_kib(proc.pid) * 1024
        finally:
            stop(proc)
        ok = sum(r.status == 200 for r in results)
        exact = sum(byte_exact(file, self.record(f"{k}.wav")) for k in keys)
        size = file.stat().st_size
        return {
            "uploads": uploads,
            "size": size,
            "seconds": seconds,
            "mib_s": uploads * size / MIB / seconds,
            "idle_rss": idle,
            "peak_rss": peak,
            "cpu": cpu,
            "ok": ok,
            "exact": exact,
            "statuses": sorted({r.status for r in results}),
            "tmp_bytes": watch.peak_bytes,
            "args": extra,
            "tls": tls,
        }


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def make_file(path: Path, size: int) -> Path:
    """Random bytes (incompressible, non-repeating), made once and reused."""
    if path.exists() and path.stat().st_size == size:
        return path
    block = 64 * MIB
    with open(path, "wb") as out:
        left = size
        while left:
            n = min(block, left)
            out.write(os.urandom(n))
            left -= n
    return path


def start_standin(port: int, *extra: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([PY, "-m", "bench.standin", "--port", str(port), *extra], env=base_env())
    wait_http(f"http://127.0.0.1:{port}/_bench/stats", proc)
    return proc


def start_moto(port: int) -> subprocess.Popen[bytes]:
    moto = shutil.which("moto_server", path=str(Path(PY).parent)) or "moto_server"
    proc = subprocess.Popen(
        [moto, "-H", "127.0.0.1", "-p", str(port)], env=base_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_http(f"http://127.0.0.1:{port}/", proc)
    request = urllib.request.Request(f"http://127.0.0.1:{port}/{BUCKET}", method="PUT")
    urllib.request.urlopen(request).close()
    return proc


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> float:
    """(max - min) / median: how far apart the rounds were."""
    mid = median(values)
    return (max(values) - min(values)) / mid if mid else 0.0


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]

    def version(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.splitlines()[0]
        except (OSError, IndexError):
            return "missing"

    import aiobotocore
    import aiohttp
    import botocore
    import uvloop

    import streamproxy

    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": f"{os.cpu_count()} x {cpu}",
        "memory": f"{int(mem) // 1024 // 1024} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "streamproxy": streamproxy.__version__,
        "aiohttp": aiohttp.__version__,
        "aiobotocore": aiobotocore.__version__,
        "botocore": botocore.__version__,
        "uvloop": str(getattr(uvloop, "__version__", "?")),
        "rclone": version("rclone", "version"),
        "commit": version("git", "rev-parse", "--short", "HEAD"),
    }


def run_all(args: Any, log: Callable[[str], None]) -> dict[str, Any]:
    workdir = Path(args.workdir or Path(tempfile.gettempdir()) / "streamproxy-bench")
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    sizes = [int(s * MIB) for s in args.sizes]
    files = {size: make_file(data / f"rec-{size // MIB}MiB.bin", size) for size in sizes}
    out: dict[str, Any] = {"machine": machine(), "args": vars(args), "load": [loadavg()], "runs": []}
    port = free_port()
    standin = start_standin(port)
    endpoint = f"http://127.0.0.1:{port}"
    front: subprocess.Popen[bytes] | None = None
    tls_endpoint, ca = None, None
    if args.https:
        front, tls_endpoint, ca = start_tls_front(workdir / "nginx", free_port(), port)
    bench = Bench(workdir, endpoint, log, tls_endpoint, ca)
    contenders = [c for c in (*CONTENDERS, *TLS_CONTENDERS, *EXTRA_CONTENDERS) if c in args.contenders]
    if not args.https:
        contenders = [c for c in contenders if not c.endswith("_tls")]
    try:
        for size in sizes:
            for rnd in range(args.rounds):
                order = contenders[rnd % len(contenders) :] + contenders[: rnd % len(contenders)]
                for name in order:
                    if name == "naive" and size > args.naive_max * MIB:
                        continue
                    run: Run = getattr(bench, name)(files[size])
                    out["runs"].append({**run.__dict__, "round": rnd})
                    log(
                        f"{name:12s} {size // MIB:6d} MiB round {rnd}: {run.mib_s:7.1f} MiB/s, "
                        f"peak RSS {run.peak_rss / MIB:6.1f} MiB, cpu {run.cpu or 0:5.2f} s "
                        f"(loop {run.loop_cpu or 0:5.2f} s), "
                        f"tmp {run.tmp_bytes / MIB:.0f} MiB, exact {run.exact}"
                    )
                out["load"].append(loadavg())
        if args.concurrent:
            file = make_file(data / f"rec-{args.concurrent_size}MiB.bin", args.concurrent_size * MIB)
            extra = ["--max-concurrent-uploads", str(args.concurrent)]
            out["concurrent"] = bench.concurrent(file, args.concurrent, extra)
            log(f"concurrent: {json.dumps(out['concurrent'])}")
            if args.https:
                out["concurrent_tls"] = bench.concurrent(file, args.concurrent, extra, tls=True)
                log(f"concurrent over https: {json.dumps(out['concurrent_tls'])}")
        if args.parsing:
            out["parsing"] = parsing_run(args, log)
        out["standin_vs_moto"] = standin_vs_moto(bench, data, args, log)
    finally:
        if front is not None:
            stop(front)
        stop(standin)
    if args.moto:
        out["moto"] = moto_runs(workdir, data, args, log)
    out["load"].append(loadavg())
    if not args.keep:
        shutil.rmtree(workdir / "tmp", ignore_errors=True)
    return out


def parsing_run(args: Any, log: Callable[[str], None]) -> dict[str, Any]:
    """bench/parsing.py in a child process: the parsers' MB/s on the loop (and copies, with valgrind)."""
    argv = [PY, "-m", "bench.parsing", "--mib", "256", "--rounds", str(args.rounds)]
    if args.copies:
        argv.append("--copies")
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    log(f"parsing: {json.dumps(result)}")
    return result


def standin_vs_moto(bench: Bench, data: Path, args: Any, log: Callable[[str], None]) -> dict[str, Any]:
    """A direct upload into the stand-in and into moto: the sink must not be what limits a contender."""
    file = make_file(data / f"rec-{args.sink_size}MiB.bin", args.sink_size * MIB)
    port = free_port()
    moto = start_moto(port)
    result: dict[str, list[float]] = {"standin": [], "moto": []}
    try:
        for _ in range(args.rounds):
            result["standin"].append(bench.direct(file).seconds)
            result["moto"].append(bench.direct(file, endpoint=f"http://127.0.0.1:{port}").seconds)
    finally:
        stop(moto)
    summary = {
        "size": file.stat().st_size,
        "standin_mib_s": args.sink_size / median(result["standin"]),
        "moto_mib_s": args.sink_size / median(result["moto"]),
    }
    log(f"sink check: {json.dumps(summary)}")
    return summary


def moto_runs(workdir: Path, data: Path, args: Any, log: Callable[[str], None]) -> dict[str, Any]:
    """The late-filename path against the normal order, and a large upload with defaults, on moto."""
    port = free_port()
    moto = start_moto(port)
    endpoint = f"http://127.0.0.1:{port}"
    bench = Bench(workdir, endpoint, log)
    out: dict[str, Any] = {}
    try:
        file = make_file(data / f"rec-{args.late_size}MiB.bin", args.late_size * MIB)
        for label, late in (("normal", False), ("late", True)):
            runs = []
            for _ in range(args.rounds):
                sp = free_port()
                argv = bench.streamproxy_argv(sp, endpoint=endpoint)
                runs.append(bench.through_server("streamproxy", argv, sp, file, late_filename=late))
            out[label] = {
                "size": file.stat().st_size,
                "seconds": median([r.seconds for r in runs]),
                "peak_rss": max(r.peak_rss for r in runs),
                "tail": median([r.tail or 0 for r in runs]),
            }
            log(f"moto {label}: {json.dumps(out[label])}")
        big = make_file(data / f"rec-{args.moto_size}MiB.bin", args.moto_size * MIB)
        sp = free_port()
        run = bench.through_server("streamproxy", bench.streamproxy_argv(sp, endpoint=endpoint), sp, big)
        out["large"] = {"size": run.size, "seconds": run.seconds, "peak_rss": run.peak_rss, "cpu": run.cpu}
        log(f"moto large: {json.dumps(out['large'])}")
    finally:
        stop(moto)
    return out
