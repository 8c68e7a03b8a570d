"""Contender "direct": upload a file with aiobotocore multipart, no proxy hop (the client library's ceiling).

It makes the calls streamproxy makes: 8 MiB parts, 4 in flight, Content-MD5 per part computed in
a worker thread, checksums only when required, uvloop. ``--checksum none`` sends no checksum at
all and turns off payload signing (``UNSIGNED-PAYLOAD``, over HTTP too): the bare transport, the
ceiling any integrity costs are measured against. Prints one JSON line.

Run: ``python -m bench.direct FILE s3://bucket/key --endpoint-url URL [--checksum none] [--ca-bundle PEM]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import time

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

MIB = 1024 * 1024


def _md5(data: memoryview) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


async def upload(
    path: str,
    bucket: str,
    key: str,
    endpoint: str,
    part_size: int,
    concurrency: int,
    checksum: str = "md5",
    ca_bundle: str | None = None,
) -> dict[str, float]:
    s3_config: dict[str, object] = {"addressing_style": "path"}
    if checksum == "none":
        s3_config["payload_signing_enabled"] = False
    config = AioConfig(
        max_pool_connections=concurrency + 4,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3=s3_config,
    )
    session = get_session()
    async with session.create_client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", config=config, verify=ca_bundle
    ) as s3:
        started = time.perf_counter()
        create = await s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="audio/wav")
        upload_id = create["UploadId"]
        slots = asyncio.Semaphore(concurrency)
        free: list[bytearray] = []
        parts: dict[int, str] = {}

        async def send(number: int, buffer: bytearray, length: int) -> None:
            try:
                body = memoryview(buffer)[:length]
                extra = {"ContentMD5": await asyncio.to_thread(_md5, body)} if checksum == "md5" else {}
                data = buffer if length == part_size else bytes(body)  # botocore takes bytes or bytearray
                response = await s3.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data, **extra
                )
                parts[number] = response["ETag"]
            finally:
                free.append(buffer)
                slots.release()

        tasks = []
        with open(path, "rb", buffering=0) as source:  # noqa: ASYNC230  # reads run in a thread
            number = 0
            while True:
                await slots.acquire()
                buffer = free.pop() if free else bytearray(part_size)
                length = await asyncio.to_thread(source.readinto, buffer)
                if not length:
                    free.append(buffer)
                    slots.release()
                    break
                number += 1
                tasks.append(asyncio.ensure_future(send(number, buffer, length)))
                if length < part_size:
                    break
        await asyncio.gather(*tasks)
        await s3.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": parts[n]} for n in sorted(parts)]},
        )
        return {"seconds": time.perf_counter() - started, "size": os.path.getsize(path)}  # noqa: ASYNC240


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("target", help="s3://bucket/key")
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--part-size", type=int, default=8 * MIB)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--checksum", choices=("md5", "none"), default="md5")
    parser.add_argument("--ca-bundle", help="PEM of the CA to trust for an https endpoint")
    args = parser.parse_args()
    bucket, _, key = args.target.removeprefix("s3://").partition("/")
    import uvloop

    result = uvloop.run(
        upload(
            args.file, bucket, key, args.endpoint_url, args.part_size, args.concurrency, args.checksum, args.ca_bundle
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
