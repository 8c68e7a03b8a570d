"""HTTPS in front of the stand-in: nginx terminates TLS and streams each request on, unbuffered.

Production S3 is HTTPS: TLS costs the client CPU, and botocore signs differently there (it sends
``UNSIGNED-PAYLOAD`` when the request carries a checksum, where over plain HTTP it hashes every
part body for the signature). A TLS stand-in in Python would make the sink the bottleneck;
nginx decrypts at several GB/s on one core. The certificate is self-signed for 127.0.0.1 and
passed to each contender as its CA bundle (``--s3-ca-bundle``, ``--ca-cert``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.certs import self_signed


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not found:
        raise RuntimeError("nginx is not installed (apt-get install nginx-light); or run with --no-https")
    return found


def config(workdir: Path, port: int, upstream: int, cert: Path, key: Path) -> str:
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    upstream standin {{ server 127.0.0.1:{upstream}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests 100000;
        client_max_body_size 0;
        # Stream bodies both ways, as S3 does; never spool them.
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        location / {{ proxy_pass http://standin; }}
    }}
}}
"""


def start_tls_front(workdir: Path, port: int, upstream: int) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Start nginx with TLS on ``port`` in front of ``upstream``; return it, its URL and the CA to trust."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / name).mkdir(exist_ok=True)
    cert, key = self_signed(workdir, "bench-standin")
    conf = workdir / "nginx.conf"
    conf.write_text(config(workdir, port, upstream, cert, key))
    binary = nginx_binary()
    argv = [binary, "-t", "-p", str(workdir), "-c", str(conf)]
    check = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise RuntimeError(check.stderr)
    proc = subprocess.Popen([binary, "-p", str(workdir), "-c", str(conf)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited: {(workdir / 'error.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    return proc, f"https://127.0.0.1:{port}", cert
