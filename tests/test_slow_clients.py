"""Slow and idle clients against ``streamproxy serve`` as operators run it (a real process, its flags).

Hundreds of connections that each send half a request head are closed after ``--header-timeout``
with a 408, while a normal upload meanwhile succeeds byte-exact, and the server's memory stays
flat across two waves of them. ``--max-connections`` refuses connections beyond the cap at once
with ``503 busy``, and the metrics count both. A kept-alive connection left idle is closed after
``--keepalive-timeout``.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamproxy.cli import settings_from_args
from tests.servers import config_error, rss_kib, streamproxy_server

HALF_HEAD = (
    b"PUT /recordings/slow HTTP/1.1\r\nHost: streamproxy\r\nContent-Type: audio/wav\r\nX-Padding: " + b"p" * 2000
)


def metric(base: str, name: str) -> float:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise LookupError(name)


def upload(base: str, name: str, data: bytes) -> dict[str, object]:
    request = urllib.request.Request(
        f"{base}/recordings/{name}", data=data, method="PUT", headers={"Content-Type": "audio/wav"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200
        result: dict[str, object] = json.loads(answer.read())
    return result


def open_half_heads(port: int, count: int) -> list[socket.socket]:
    connections = []
    for _ in range(count):
        connection = socket.create_connection(("127.0.0.1", port), timeout=10)
        connection.sendall(HALF_HEAD)
        connections.append(connection)
    return connections


def read_to_eof(connection: socket.socket) -> bytes:
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.slow
def test_half_head_connections_are_closed_memory_stays_flat_and_uploads_go_on(tmp_path: Path) -> None:
    args = ["--storage", (tmp_path / "rec").as_uri(), "--header-timeout", "3s", "--max-connections", "2000"]
    with streamproxy_server(args) as (process, base):
        port = int(base.rsplit(":", 1)[1])
        upload(base, "warm-up", b"RIFF" + bytes(100_000))
        baseline = rss_kib(process.pid, "VmRSS")
        peaks = []
        for wave in range(2):
            started = time.monotonic()
            held = open_half_heads(port, 500)
            time.sleep(0.5)
            assert metric(base, "streamproxy_connections_open") >= 500

            # A normal upload while 500 heads are pending.
            data = hashlib.sha256(str(wave).encode()).digest() * (8 * 1024 * 1024 // 32)
            stored = upload(base, f"meanwhile-{wave}", data)
            assert stored["sha256"] == hashlib.sha256(data).hexdigest()
            assert (tmp_path / "rec" / f"meanwhile-{wave}.wav").read_bytes() == data
            peaks.append(rss_kib(process.pid, "VmRSS"))

            for connection in held:
                answer = read_to_eof(connection)  # returns at the server's close
                assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
                assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "client_timeout"
                connection.close()
            waited = time.monotonic() - started
            assert 3 <= waited < 10, waited
            assert metric(base, "streamproxy_connections_header_timeouts_total") == 500 * (wave + 1)
        deadline = time.monotonic() + 5
        while metric(base, "streamproxy_connections_open") > 1:  # the scrape's own connection
            assert time.monotonic() < deadline
            time.sleep(0.1)
        after = rss_kib(process.pid, "VmRSS")
    # Flat: 500 pending heads cost a few MiB, and the second wave leaves no more behind than the first.
    # (The 8 MiB upload itself holds one part buffer while it runs.)
    print(f"RSS KiB: baseline {baseline}, with 500 pending heads {peaks}, after {after}")
    assert peaks[0] - baseline < 48 * 1024, (baseline, peaks)
    assert peaks[1] - peaks[0] < 8 * 1024, peaks
    assert after - baseline < 24 * 1024, (baseline, after)


@pytest.mark.slow
def test_connections_beyond_max_connections_are_refused_and_counted(tmp_path: Path) -> None:
    args = [
        "--storage",
        (tmp_path / "rec").as_uri(),
        "--header-timeout",
        "30s",
        "--max-connections",
        "20",
        "--max-concurrent-uploads",
        "10",
    ]
    with streamproxy_server(args) as (_process, base):
        port = int(base.rsplit(":", 1)[1])
        held = open_half_heads(port, 20)
        time.sleep(0.3)
        extra = open_half_heads(port, 5)
        refused_at = time.monotonic()
        for connection in extra:
            answer = read_to_eof(connection)
            assert answer.startswith(b"HTTP/1.1 503 "), answer[:80]
            assert b"Retry-After: 1" in answer
            assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "busy"
            connection.close()
        assert time.monotonic() - refused_at < 2
        # One held connection goes: the scrape takes its place (19 held + the scrape's own).
        held.pop().close()
        time.sleep(0.3)
        assert metric(base, "streamproxy_connections_refused_total") == 5
        assert metric(base, "streamproxy_connections_open") == 20
        assert metric(base, "streamproxy_connections_max") == 20
        # Once the held ones go, uploads are served again.
        for connection in held:
            connection.close()
        time.sleep(0.3)
        assert upload(base, "after", b"RIFF" + bytes(1000))["size"] == 1004


@pytest.mark.slow
def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout(tmp_path: Path) -> None:
    args = ["--storage", (tmp_path / "rec").as_uri(), "--keepalive-timeout", "2s", "--header-timeout", "30s"]
    with streamproxy_server(args) as (_process, base):
        port = int(base.rsplit(":", 1)[1])
        connection = socket.create_connection(("127.0.0.1", port), timeout=15)
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: streamproxy\r\n\r\n")
        assert connection.recv(65536).startswith(b"HTTP/1.1 200 ")
        answered = time.monotonic()
        # Half of the next request's head: the kept-alive connection's idle timer still closes it.
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: stre")
        assert connection.recv(65536) == b""
        assert 1.5 <= time.monotonic() - answered < 8
        connection.close()


def test_connection_flags_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    _, settings = settings_from_args(["serve"])
    assert (settings.header_timeout, settings.keepalive_timeout, settings.max_connections) == (10, 75, 512)
    monkeypatch.setenv("STREAMPROXY_HEADER_TIMEOUT", "2s")
    monkeypatch.setenv("STREAMPROXY_MAX_CONNECTIONS", "100")
    _, settings = settings_from_args(["serve", "--keepalive-timeout", "1m"])
    assert (settings.header_timeout, settings.keepalive_timeout, settings.max_connections) == (2, 60, 100)
    _, settings = settings_from_args(["serve", "--header-timeout", "0", "--max-connections", "0"])
    assert (settings.header_timeout, settings.max_connections) == (0, 0)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["serve", "--header-timeout", "-1"], "--header-timeout"),
        (["serve", "--header-timeout", "soon"], "--header-timeout"),
        (["serve", "--keepalive-timeout", "0"], "--keepalive-timeout"),
        (["serve", "--max-connections", "-5"], "--max-connections"),
        (["serve", "--max-connections", "10", "--max-concurrent-uploads", "64"], "--max-concurrent-uploads"),
    ],
)
def test_bad_connection_flags_are_one_line(argv: list[str], needle: str) -> None:
    assert needle in config_error(*argv)
