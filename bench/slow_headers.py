"""Slow-header connections against ``streamproxy serve``: how long they stay open, and what they cost.

    python -m bench.slow_headers --connections 2000 --header-timeout 10s

It starts a ``streamproxy serve`` subprocess (filesystem storage) on loopback, opens
``--connections`` connections that each send half a request head and then nothing, and prints the
server's RSS before, while they are held and after, how many the server has closed ``--wait``
seconds after the last one opened, and how long a normal 8 MiB upload takes meanwhile. With
``--header-timeout 0`` (the guard off) it shows the behaviour before the guard: none is closed.
"""

from __future__ import annotations

import argparse
import hashlib
import select
import socket
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.servers import rss_kib, streamproxy_server

HALF_HEAD = b"PUT /recordings/slow HTTP/1.1\r\nHost: streamproxy\r\nX-Padding: " + b"p" * 2000


def _closed(connections: list[socket.socket]) -> int:
    """How many of ``connections`` the server has closed (EOF or reset readable right now)."""
    closed = 0
    for connection in connections:
        poller = select.poll()  # not select(): file descriptors above 1023
        poller.register(connection, select.POLLIN)
        if poller.poll(0):
            try:
                while connection.recv(65536):
                    pass
            except OSError:
                pass
            closed += 1
    return closed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--header-timeout", default="10s")
    parser.add_argument(
        "--wait", type=float, default=15.0, help="seconds after the last connection opened to count the closed ones"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        flags = ["--storage", Path(scratch).as_uri(), "--header-timeout", args.header_timeout]
        flags += ["--max-connections", str(args.connections + 100)]
        with streamproxy_server(flags) as (process, base):
            port = int(base.rsplit(":", 1)[1])
            idle = rss_kib(process.pid, "VmRSS")
            started = time.monotonic()
            held = []
            for _ in range(args.connections):
                connection = socket.create_connection(("127.0.0.1", port), timeout=30)
                connection.sendall(HALF_HEAD)
                held.append(connection)
            all_open = time.monotonic()
            opened = all_open - started
            time.sleep(1)
            holding = rss_kib(process.pid, "VmRSS")
            data = hashlib.sha256(b"bench").digest() * (8 * 1024 * 1024 // 32)
            request = urllib.request.Request(
                f"{base}/recordings/meanwhile", data=data, method="PUT", headers={"Content-Type": "audio/wav"}
            )
            upload_started = time.monotonic()
            with urllib.request.urlopen(request, timeout=120) as answer:
                status = answer.status
            upload_seconds = time.monotonic() - upload_started
            time.sleep(max(0.0, args.wait - (time.monotonic() - all_open)))
            closed = _closed(held)
            after = rss_kib(process.pid, "VmRSS")
            for connection in held:
                connection.close()
    print(f"connections held                 {args.connections} (opened in {opened:.1f} s)")
    print(f"header timeout                   {args.header_timeout}")
    print(f"RSS idle / holding / after       {idle / 1024:.1f} / {holding / 1024:.1f} / {after / 1024:.1f} MiB")
    print(f"8 MiB upload meanwhile           HTTP {status} in {upload_seconds:.2f} s")
    print(f"closed by the server {args.wait:.0f} s later   {closed} of {args.connections}")


if __name__ == "__main__":
    main()
