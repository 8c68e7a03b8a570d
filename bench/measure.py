"""Process measurements from /proc: peak RSS, CPU seconds, and what a process leaves in its TMPDIR."""

from __future__ import annotations

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


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a live process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def wait_rusage(proc: subprocess.Popen[bytes]) -> tuple[int, float, float]:
    """Wait for a child; return its exit code, peak RSS in bytes and CPU seconds (from wait4)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


class TmpWatch:
    """Poll a TMPDIR (and the process's open files in it, deleted or not) for peak bytes and files."""

    def __init__(self, tmpdir: Path, pid: int | None = None, interval: float = 0.02) -> None:
        self.tmpdir = tmpdir
        self.pid = pid
        self.interval = interval
        self.peak_bytes = 0
        self.peak_files = 0
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
        buffer = bytearray(max(sizes) if sizes else 0)
        with open(path, "rb", buffering=0) as source:
            for size in sizes:
                view = memoryview(buffer)[:size]
                got = source.readinto(view)
                out.append(zlib.crc32(view[:got]))
        _crc_cache[key] = out
    return _crc_cache[key]


def byte_exact(path: Path, record: dict[str, object] | None) -> bool:
    """Whether the stand-in's record of an object matches ``path`` byte for byte (size and per-part crc32)."""
    if not record:
        return False
    parts = record["parts"]
    assert isinstance(parts, list)
    sizes = [int(p[0]) for p in parts]
    if sum(sizes) != path.stat().st_size:
        return False
    return file_crcs(path, sizes) == [int(p[1]) for p in parts]


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
