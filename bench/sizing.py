"""Peak RSS of a streamproxy server when concurrent uploads keep its whole buffer budget in use.

The memory limits in deploy/ (Kubernetes, systemd, compose) come from this measurement:

    python -m bench.sizing --uploads 32 --size-mib 40 --budget 128MiB --max-concurrent 32

It starts moto's S3 server and a ``streamproxy serve`` subprocess on loopback, sends ``--uploads``
PUTs of ``--size-mib`` MiB at once, and prints the idle RSS, the peak RSS (VmHWM), and what is
left per upload after the budget: the "~1.6 MiB per upload in flight" of the sizing formula.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import AsyncIterator

import aiohttp
import boto3
from moto.server import ThreadedMotoServer

from streamproxy.config import MIB, parse_size
from tests.servers import rss_kib, streamproxy_server


async def _body(size_mib: int) -> AsyncIterator[bytes]:
    block = os.urandom(MIB)
    for _ in range(size_mib):
        yield block
        await asyncio.sleep(0)


async def _upload_all(base: str, uploads: int, size_mib: int) -> list[int]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session:

        async def one(index: int) -> int:
            resp = await session.put(
                f"{base}/recordings/sizing-{index}", data=_body(size_mib), headers={"Content-Type": "audio/wav"}
            )
            await resp.read()
            return resp.status

        return await asyncio.gather(*(one(i) for i in range(uploads)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=32)
    parser.add_argument("--size-mib", type=int, default=40)
    parser.add_argument("--budget", default="128MiB", help="--max-buffer-bytes of the server")
    parser.add_argument("--part-size", default="8MiB")
    parser.add_argument("--max-concurrent", type=int, default=32, help="--max-concurrent-uploads of the server")
    args = parser.parse_args()

    for name in [n for n in os.environ if n.startswith(("AWS_", "STREAMPROXY_"))]:
        del os.environ[name]
    os.environ.update(
        AWS_ACCESS_KEY_ID="sizing",
        AWS_SECRET_ACCESS_KEY="sizing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="sizing")
        server_args = [
            "--storage",
            "s3://sizing/",
            "--s3-endpoint-url",
            endpoint,
            "--max-buffer-bytes",
            args.budget,
            "--part-size",
            args.part_size,
            "--max-concurrent-uploads",
            str(args.max_concurrent),
        ]
        with streamproxy_server(server_args) as (proc, base):
            idle = rss_kib(proc.pid, "VmRSS") * 1024
            started = time.monotonic()
            statuses = asyncio.run(_upload_all(base, args.uploads, args.size_mib))
            elapsed = time.monotonic() - started
            peak = rss_kib(proc.pid) * 1024
    finally:
        moto.stop()
    budget = parse_size(args.budget)
    per_upload = (peak - idle - budget) / args.uploads
    print(f"{args.uploads} uploads of {args.size_mib} MiB, budget {budget / MIB:.0f} MiB, statuses {set(statuses)}")
    print(f"idle RSS {idle / MIB:.1f} MiB, peak RSS {peak / MIB:.1f} MiB, {elapsed:.1f} s")
    print(f"beyond idle + budget: {(peak - idle - budget) / MIB:.1f} MiB = {per_upload / MIB:.2f} MiB per upload")


if __name__ == "__main__":
    main()
