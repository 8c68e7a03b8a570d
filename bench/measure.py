"""Process measurements from /proc: peak RSS, CPU seconds, and what a process leaves in its TMPDIR."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
import zlib
from pathlib import Path

MIB = 1024 * 1024
_TICK = os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, field: str = "VmHWM") -> int:
    """A memory figure of a live process in KiB (VmHWM is its peak resident set)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User plus system CPU seconds a live process (or one of its threads) has used so far."""
    stat = Path(f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def wait_cpu(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """Wait for a child; return its exit code and CPU seconds (from wait4).

    wait4's ru_maxrss is no use for peak RSS here: exec keeps the parent's high-water mark
    from the (v)fork, so a child of a big parent reports the parent's size. ``TmpWatch`` polls
    VmHWM instead.
    """
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


class TmpWatch:
    """Poll a process's peak RSS (VmHWM) and its TMPDIR (open files in it too, deleted or not)."""

    def __init__(self, tmpdir: Path, pid: int | None = None, interval: float = 0.02) -> None:
        self.tmpdir = tmpdir
        self.pid = pid
        self.interval = interval
        self.peak_bytes = 0
        self.peak_files = 0
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TmpWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        seen: dict[tuple[int, int], int] = {}
        prefix = str(self.tmpdir)
        for root, _dirs, files in os.walk(self.tmpdir):
            for name in files:
                try:
                    st = os.stat(os.path.join(root, name))
                except OSError:
                    continue
                seen[(st.st_dev, st.st_ino)] = st.st_size
        if self.pid is not None:
            with contextlib.suppress(OSError, LookupError):
                self.peak_rss = max(self.peak_rss, status_kib(self.pid) * 1024)
            fd_dir = Path(f"/proc/{self.pid}/fd")
            try:
                fds = list(fd_dir.iterdir())
            except OSError:
                fds = []
            for fd in fds:
                try:
                    if not os.readlink(fd).startswith(prefix):
                        continue
                    st = os.stat(fd)
                except OSError:
                    continue
                seen[(st.st_dev, st.st_ino)] = st.st_size
        self.peak_bytes = max(self.peak_bytes, sum(seen.values()))
        self.peak_files = max(self.peak_files, len(seen))


_crc_cache: dict[tuple[str, tuple[int, ...]], list[int]] = {}


def file_crcs(path: Path, sizes: list[int]) -> list[int]:
    """crc32 of consecutive slices of ``path`` with the given sizes (cached per layout)."""
    key = (str(path), tuple(sizes))
    if key not in _crc_cache:
        out = []
        buffer = bytearray(8 * MIB)
        with open(path, "rb", buffering=0) as source:
            for size in sizes:
                crc = 0
                left = size
                while left:
                    got = source.readinto(memoryview(buffer)[: min(left, len(buffer))])
                    if not got:
                        break
                    crc = zlib.crc32(memoryview(buffer)[:got], crc)
                    left -= got
                out.append(crc)
        _crc_cache[key] = out
    return _crc_cache[key]


def byte_exact(path: Path, record: dict[str, object] | None) -> bool:
    """Whether the stand-in's record of an object matches ``path`` byte for byte (size and per-part crc32).

    A full-object CRC64NVME the upload sent (``--checksum crc64nvme``, what ``auto`` sends on AWS)
    must also be the file's: the stand-in records it without checking it, so it is checked here.
    """
    if not record:
        return False
    parts = record["parts"]
    assert isinstance(parts, list)
    sizes = [int(p[0]) for p in parts]
    if sum(sizes) != path.stat().st_size:
        return False
    checksum = record.get("checksum")
    full_crc = isinstance(checksum, dict) and checksum.get("algorithm") == "crc64nvme"
    if full_crc and isinstance(checksum, dict) and checksum.get("value") != file_crc64nvme(path):
        return False
    return file_crcs(path, sizes) == [int(p[1]) for p in parts]


def file_crc64nvme(path: Path) -> str:
    """The base64 CRC64NVME of a file, read in 8 MiB blocks."""
    import base64

    from awscrt import checksums

    crc = 0
    with path.open("rb") as f:
        while block := f.read(8 * MIB):
            crc = checksums.crc64nvme(block, crc)
    return base64.b64encode(crc.to_bytes(8, "big")).decode()


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> None:
    """Wait until ``url`` answers (or the process dies)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error status still means it is up
                return
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
