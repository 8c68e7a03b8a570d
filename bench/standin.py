"""A stand-in S3 endpoint for benchmarks: answers the multipart API and discards bodies.

It keeps, per stored object, its size and the crc32 of every part in order (a few bytes), so a
benchmark can prove an upload byte-exact without storing it. crc32 runs at several GiB/s here,
so the digest costs the stand-in little; ``--md5-etags`` makes ETags real MD5s (clients that
check ETags want them), at the price of MD5 in the stand-in (~0.7 GiB/s on one core).

Run: ``python -m bench.standin --port 9000``. ``GET /_bench/object/{bucket}/{key}`` returns the
record of a stored object as JSON; ``GET /_bench/stats`` returns byte and request counters.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

READ_BUFSIZE = 4 * 1024 * 1024
XMLNS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
_PART_RE = re.compile(rb"<PartNumber>(\d+)</PartNumber>")


@dataclass
class Part:
    size: int
    crc32: int
    etag: str


@dataclass
class Pending:
    key: str
    parts: dict[int, Part] = field(default_factory=dict)


class StandIn:
    def __init__(self, md5_etags: bool) -> None:
        self.md5_etags = md5_etags
        self.uploads: dict[str, Pending] = {}
        self.objects: dict[str, dict[str, Any]] = {}
        self.stats = {"bytes": 0, "requests": 0}

    async def consume(self, request: web.Request) -> Part:
        crc = 0
        size = 0
        md5 = hashlib.md5() if self.md5_etags else None
        async for chunk in request.content.iter_any():
            size += len(chunk)
            crc = zlib.crc32(chunk, crc)
            if md5 is not None:
                md5.update(chunk)
        self.stats["bytes"] += size
        etag = md5.hexdigest() if md5 is not None else f"{crc:08x}{size:024x}"
        return Part(size, crc, etag)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.stats["requests"] += 1
        path = request.match_info["path"]
        if path.startswith("_bench/"):
            return self.control(path)
        bucket, _, key = path.partition("/")
        q = request.query
        m = request.method
        if not key:
            if m in ("PUT", "HEAD"):
                return web.Response(status=200)
            if m == "GET":
                return xml(f"<ListBucketResult {XMLNS}><Name>{bucket}</Name><KeyCount>0</KeyCount></ListBucketResult>")
            return web.Response(status=405)
        name = f"{bucket}/{key}"
        if m == "POST" and "uploads" in q:
            upload_id = uuid.uuid4().hex
            self.uploads[upload_id] = Pending(name)
            return xml(
                f"<InitiateMultipartUploadResult {XMLNS}><Bucket>{bucket}</Bucket><Key>{key}</Key>"
                f"<UploadId>{upload_id}</UploadId></InitiateMultipartUploadResult>"
            )
        if m == "PUT" and "partNumber" in q:
            pending = self.uploads.get(q.get("uploadId", ""))
            if pending is None:
                await request.read()
                return no_such_upload()
            part = await self.consume(request)
            pending.parts[int(q["partNumber"])] = part
            return web.Response(status=200, headers={"ETag": f'"{part.etag}"'})
        if m == "POST" and "uploadId" in q:
            pending = self.uploads.pop(q["uploadId"], None)
            body = await request.read()
            if pending is None:
                return no_such_upload()
            numbers = [int(n) for n in _PART_RE.findall(body)]
            parts = [pending.parts[n] for n in numbers]
            etag = f"{uuid.uuid4().hex}-{len(parts)}"
            self.objects[name] = {
                "size": sum(p.size for p in parts),
                "parts": [[p.size, p.crc32] for p in parts],
                "etag": etag,
            }
            return xml(
                f"<CompleteMultipartUploadResult {XMLNS}><Bucket>{bucket}</Bucket><Key>{key}</Key>"
                f'<ETag>"{etag}"</ETag></CompleteMultipartUploadResult>'
            )
        if m == "DELETE" and "uploadId" in q:
            self.uploads.pop(q["uploadId"], None)
            return web.Response(status=204)
        if "tagging" in q:
            await request.read()
            return web.Response(status=200)
        if m == "PUT":
            part = await self.consume(request)
            self.objects[name] = {"size": part.size, "parts": [[part.size, part.crc32]], "etag": part.etag}
            return web.Response(status=200, headers={"ETag": f'"{part.etag}"'})
        if m in ("HEAD", "GET"):
            obj = self.objects.get(name)
            if obj is None:
                return web.Response(status=404) if m == "HEAD" else error(404, "NoSuchKey")
            return web.Response(
                status=200,
                headers={"Content-Length": str(obj["size"]), "ETag": f'"{obj["etag"]}"', "Content-Type": "audio/wav"},
            )
        if m == "DELETE":
            self.objects.pop(name, None)
            return web.Response(status=204)
        return web.Response(status=405)

    def control(self, path: str) -> web.Response:
        if path == "_bench/stats":
            return web.json_response({**self.stats, "objects": len(self.objects), "open_uploads": len(self.uploads)})
        if path == "_bench/reset":
            self.objects.clear()
            self.uploads.clear()
            return web.json_response({})
        name = path.removeprefix("_bench/object/")
        obj = self.objects.get(name)
        return web.json_response(obj, status=200 if obj else 404)


def xml(text: str) -> web.Response:
    return web.Response(
        body=('<?xml version="1.0" encoding="UTF-8"?>\n' + text).encode(), content_type="application/xml"
    )


def error(status: int, code: str) -> web.Response:
    return web.Response(
        status=status,
        body=f"<Error><Code>{code}</Code><Message>{code}</Message></Error>".encode(),
        content_type="application/xml",
    )


def no_such_upload() -> web.Response:
    return error(404, "NoSuchUpload")


def make_app(md5_etags: bool = False) -> web.Application:
    app = web.Application(client_max_size=1024**3, handler_args={"read_bufsize": READ_BUFSIZE})
    standin = StandIn(md5_etags)
    app.router.add_route("*", "/{path:.*}", standin.handle)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--md5-etags", action="store_true")
    args = parser.parse_args()
    import uvloop

    web.run_app(
        make_app(args.md5_etags),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
