"""Run streamproxy as a real subprocess (for RSS, signal and CLI tests)."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

RAW_BYTES_ARGS = ("--raw-audio", "none", "--key-template", "{filename}.wav")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def config_error(*argv: str, env: dict[str, str] | None = None) -> str:
    """Run ``python -m streamproxy ARGV`` expecting a refusal: exit 2 and one line on stderr; return it."""
    result = subprocess.run(
        [sys.executable, "-m", "streamproxy", *argv],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamproxy: error:"), result.stderr
    return lines[0]


def rss_kib(pid: int, field: str = "VmHWM") -> int:
    """A memory figure of a process from /proc (VmHWM is the peak resident set)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


@contextmanager
def streamproxy_server(
    args: Sequence[str],
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    tls_ca: Path | None = None,
    log: IO[bytes] | None = None,
    raw_bytes: bool = True,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Start ``python -m streamproxy serve ARGS`` on a free port; yield the process and its base URL.

    ``raw_bytes`` (the default for these storage tests, which send opaque bytes and compare them
    byte for byte): store bytes as they came under ``{filename}.wav``, instead of reading headerless
    bytes as µ-law and storing a WAV; ARGS given later still win.

    With ``tls_ca`` the server is expected to speak HTTPS with a certificate that CA signed.
    Logs go to a pipe read at the end, or to ``log``: a long run must not fill the pipe and block the server.
    """
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "streamproxy", "serve", "--port", str(port), "--log-format", "json"),
            *(RAW_BYTES_ARGS if raw_bytes else ()),
            *args,
        ],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if log is None else log,
    )
    base = f"{'https' if tls_ca else 'http'}://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(tls_ca)) if tls_ca else None
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=1, context=context) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield proc, base
    finally:
        if proc.poll() is None:
            stop(proc)


def stop(proc: subprocess.Popen[Any]) -> None:
    """Terminate ``proc``; kill it if it is still there after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
