"""deploy/nginx/streamproxy.conf with Debian's nginx: TLS in front, request bodies streamed, never spooled."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.certs import self_signed
from tests.helpers import required
from tests.servers import free_port, rss_kib, stop, streamproxy_server

MIB = 1024 * 1024
CONF = Path(__file__).resolve().parent.parent / "deploy" / "nginx" / "streamproxy.conf"
SPOOL_WARNING = "a client request body is buffered to a temporary file"


def nginx_binary() -> str:
    """Debian's nginx; CI installs it (.ci/run), so there it must exist."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    return required(found, "nginx is not installed (apt-get install nginx-light)")


def substitute(text: str, pattern: str, replacement: str) -> str:
    """Replace exactly one directive, so a changed deploy file fails here loudly instead of silently."""
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert count == 1, f"expected one match for {pattern!r} in {CONF.name}, found {count}"
    return new


def site_config(
    *, port: int, upstream: str, cert: Path, key: Path, buffering: str = "off", http_version: str = "1.1"
) -> str:
    """The deploy file with only its addresses and certificate paths swapped for the test's."""
    text = CONF.read_text()
    text = substitute(text, r"^    listen 443 ssl;$", f"    listen 127.0.0.1:{port} ssl;")
    text = substitute(text, r"^    listen \[::\]:443 ssl;\n", "")
    text = substitute(text, r"^    server 127\.0\.0\.1:8080 ", f"    server {upstream} ")
    text = substitute(text, r"^    ssl_certificate \S+;$", f"    ssl_certificate {cert};")
    text = substitute(text, r"^    ssl_certificate_key \S+;$", f"    ssl_certificate_key {key};")
    text = substitute(text, r"^    proxy_http_version 1\.1;$", f"    proxy_http_version {http_version};")
    return substitute(text, r"^    proxy_request_buffering off;$", f"    proxy_request_buffering {buffering};")


@dataclass
class Nginx:
    """A running nginx (one process: master_process off) and where it could spool request bodies."""

    proc: subprocess.Popen[bytes]
    base: str
    body_temp: Path
    error_log: Path
    seen_spooled: set[str] = field(default_factory=set)

    def spool_files(self) -> set[str]:
        """Files in client_body_temp_path, and files under it that nginx holds open.

        nginx unlinks a non-persistent body temp file right after creating it, so the open
        descriptors in /proc are what show a spooled body; the listing catches the rest.
        """
        found = {str(p) for p in self.body_temp.rglob("*") if p.is_file()}
        fd_dir = Path(f"/proc/{self.proc.pid}/fd")
        try:
            entries = list(fd_dir.iterdir())
        except OSError:
            return found
        for entry in entries:
            try:
                target = os.readlink(entry)
            except OSError:
                continue
            if target.startswith(str(self.body_temp) + "/"):
                found.add(target)
        return found


@contextmanager
def running_nginx(tmp: Path, upstream: str, **overrides: str) -> Iterator[Nginx]:
    """Start nginx on a free loopback port with the deploy config, and stop it afterwards."""
    binary = nginx_binary()
    port = free_port()
    cert, key = self_signed(tmp)
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
        (tmp / name).mkdir()
    site = tmp / "streamproxy.conf"
    site.write_text(site_config(port=port, upstream=upstream, cert=cert, key=key, **overrides))
    error_log = tmp / "logs" / "error.log"
    main = tmp / "nginx.conf"
    main.write_text(
        f"""
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {error_log} info;
events {{ worker_connections 64; }}
http {{
    access_log {tmp}/logs/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {site};
}}
"""
    )
    check = subprocess.run([binary, "-t", "-p", str(tmp), "-c", str(main)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([binary, "-p", str(tmp), "-c", str(main)], stderr=subprocess.PIPE)
    nginx = Nginx(proc, f"https://127.0.0.1:{port}", tmp / "body", error_log)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, f"nginx exited: {error_log.read_text() if error_log.exists() else ''}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not start listening"
                time.sleep(0.05)
        yield nginx
    finally:
        stop(proc)


@contextmanager
def watching_spool(nginx: Nginx) -> Iterator[None]:
    """Poll for spooled request bodies while the block runs."""
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            nginx.seen_spooled |= nginx.spool_files()
            stop.wait(0.005)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        nginx.seen_spooled |= nginx.spool_files()


async def multipart_stream(size: int, hasher: hashlib._Hash, boundary: str) -> AsyncIterator[bytes]:
    """A multipart form (filename, recording) whose recording is generated 1 MiB at a time."""
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="filename"\r\n\r\nlong-call\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="recording"; filename="call.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    block = hashlib.sha256(b"nginx").digest() * (MIB // 32)
    for index in range(size // MIB):
        chunk = index.to_bytes(8, "big") + block[8:]
        hasher.update(chunk)
        yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


def client_ssl(nginx_dir: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(nginx_dir / "streamproxy-test.crt"))


async def upload_through(nginx: Nginx, tls: ssl.SSLContext, size: int) -> tuple[int, dict[str, object], str, str]:
    """Stream a generated form of ``size`` recording bytes (chunked) through nginx; return the answer."""
    sent = hashlib.sha256()
    boundary = "nginx-test-boundary"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        resp = await session.post(
            f"{nginx.base}/recordings",
            data=multipart_stream(size, sent, boundary),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            ssl=tls,
        )
        body = await resp.json()
        return resp.status, body, resp.headers.get("X-Request-ID", ""), sent.hexdigest()


@pytest.mark.slow
async def test_large_upload_streams_through_nginx_tls_without_spooling(tmp_path: Path) -> None:
    """128 MiB pass byte-exact through nginx's TLS; nginx writes no body temp file and stays small."""
    size = 128 * MIB
    store = tmp_path / "store"
    proxy_dir = tmp_path / "nginx"
    proxy_dir.mkdir()
    args = ["--storage", store.as_uri(), "--max-buffer-bytes", "64MiB"]
    with streamproxy_server(args) as (_, upstream), running_nginx(proxy_dir, upstream.removeprefix("http://")) as nginx:
        tls = client_ssl(proxy_dir)
        with watching_spool(nginx):
            status, body, request_id, sent_sha = await upload_through(nginx, tls, size)
        nginx_peak = rss_kib(nginx.proc.pid) * 1024

        async with aiohttp.ClientSession() as session:
            declared = await session.post(
                f"{nginx.base}/recordings",
                data=b"",
                headers={"Content-Type": "audio/wav", "Content-Length": str(9 * 1024 * MIB)},
                ssl=tls,
            )
            too_large = (declared.status, await declared.json())
            own_id = await session.get(f"{nginx.base}/healthz", headers={"X-Request-ID": "ivr-42"}, ssl=tls)
            echoed = own_id.headers.get("X-Request-ID")

    assert status == 200, body
    assert body["size"] == size and body["sha256"] == sent_sha
    stored = store / "long-call.wav"
    digest = hashlib.sha256()
    with stored.open("rb") as fh:
        while chunk := fh.read(4 * MIB):
            digest.update(chunk)
    assert stored.stat().st_size == size and digest.hexdigest() == sent_sha
    assert re.fullmatch(r"[0-9a-f]{32}", request_id), "nginx's $request_id reaches streamproxy and comes back"
    assert echoed == "ivr-42"

    assert nginx.seen_spooled == set(), f"nginx spooled the body: {nginx.seen_spooled}"
    assert list(nginx.body_temp.iterdir()) == []
    assert SPOOL_WARNING not in nginx.error_log.read_text()
    print(f"nginx peak RSS {nginx_peak / MIB:.1f} MiB for a {size // MIB} MiB upload")
    assert nginx_peak < 32 * MIB, "nginx held the body in memory"
    assert too_large == (413, {"status": "failure", "error": "too_large", "message": too_large[1]["message"]})


@pytest.mark.slow
async def test_nginx_answers_json_when_streamproxy_is_down(tmp_path: Path) -> None:
    """With no upstream listening, the client gets the JSON failure shape with 503 and Retry-After."""
    with running_nginx(tmp_path, f"127.0.0.1:{free_port()}") as nginx:
        async with aiohttp.ClientSession() as session:
            resp = await session.put(
                f"{nginx.base}/recordings/c1",
                data=b"RIFF",
                headers={"Content-Type": "audio/wav"},
                ssl=client_ssl(tmp_path),
            )
            body = await resp.json()
    assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    assert body["status"] == "failure" and body["error"] == "storage_unavailable"


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides", [{"buffering": "on"}, {"http_version": "1.0"}], ids=["request_buffering_on", "http_1_0"]
)
async def test_the_spool_check_sees_a_buffered_body(tmp_path: Path, overrides: dict[str, str]) -> None:
    """Control: with buffering on, or HTTP/1.0 to the upstream (chunked bodies), the same checks see the temp file."""
    store = tmp_path / "store"
    proxy_dir = tmp_path / "nginx"
    proxy_dir.mkdir()
    args = ["--storage", store.as_uri()]
    with (
        streamproxy_server(args) as (_, upstream),
        running_nginx(proxy_dir, upstream.removeprefix("http://"), **overrides) as nginx,
        watching_spool(nginx),
    ):
        status, body, _, sent_sha = await upload_through(nginx, client_ssl(proxy_dir), 32 * MIB)
    assert status == 200 and body["sha256"] == sent_sha
    assert SPOOL_WARNING in nginx.error_log.read_text()
    assert nginx.seen_spooled, "the poller missed the spooled body"
