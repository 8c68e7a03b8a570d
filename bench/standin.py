"""A stand-in S3 endpoint for benchmarks: answers the multipart API and discards bodies.

It keeps, per stored object, its size and the crc32 of every part in order (a few bytes), so a
benchmark can prove an upload byte-exact without storing it. crc32 runs at several GiB/s here,
so the digest costs the stand-in little; ``--md5-etags`` makes ETags real MD5s (clients that
check ETags want them), at the price of MD5 in the stand-in (~0.7 GiB/s on one core).

Run: ``python -m bench.standin --port 9000``. ``GET /_bench/object/{bucket}/{key}`` returns the
record of a stored object as JSON; ``GET /_bench/stats`` returns byte and request counters.

It accepts the checksum headers S3 accepts (``Content-MD5``, ``x-amz-checksum-<algorithm>`` on parts
and objects, ``x-amz-checksum-algorithm`` / ``x-amz-checksum-type`` when a multipart upload starts,
the full-object value on ``CompleteMultipartUpload``), echoes them as S3 does, and keeps the object's
value in its record (``checksum``), so a benchmark can check it against the file afterwards.
``--verify-checksums`` also recomputes every CRC32C/CRC64NVME value and the full-object CRC64NVME
inline and refuses a mismatch with ``400 BadDigest``, as S3 does (at the price of the CRC in the stand-in).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import re
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from awscrt import checksums as crt

READ_BUFSIZE = 4 * 1024 * 1024
XMLNS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
_PART_RE = re.compile(rb"<PartNumber>(\d+)</PartNumber>")
_CHECKSUM_PREFIX = "x-amz-checksum-"
# CRCs the stand-in can recompute (``--verify-checksums``): running function, width, combination.
_CRCS: dict[str, tuple[Callable[[bytes, int], int], int, Callable[[int, int, int], int]]] = {
    "crc32c": (crt.crc32c, 4, crt.combine_crc32c),
    "crc64nvme": (crt.crc64nvme, 8, crt.combine_crc64nvme),
}


def sent_checksum(request: web.Request) -> tuple[str, str] | None:
    """The ``x-amz-checksum-<algorithm>`` value a request carries (algorithm, base64 value), if any."""
    for name, value in request.headers.items():
        lower = name.lower()
        if lower.startswith(_CHECKSUM_PREFIX) and lower not in ("x-amz-checksum-type", "x-amz-checksum-algorithm"):
            return lower.removeprefix(_CHECKSUM_PREFIX), value
    return None


def b64(value: int, width: int) -> str:
    return base64.b64encode(value.to_bytes(width, "big")).decode()


@dataclass
class Part:
    size: int
    crc32: int
    etag: str
    crc: int | None = None  # the part's CRC in the upload's algorithm, when verified


@dataclass
class Pending:
    key: str
    algorithm: str | None = None  # x-amz-checksum-algorithm, lowercase
    type: str = "COMPOSITE"  # x-amz-checksum-type
    parts: dict[int, Part] = field(default_factory=dict)


class StandIn:
    def __init__(self, md5_etags: bool, verify_checksums: bool = False) -> None:
        self.md5_etags = md5_etags
        self.verify_checksums = verify_checksums
        self.uploads: dict[str, Pending] = {}
        self.objects: dict[str, dict[str, Any]] = {}
        self.stats = {"bytes": 0, "requests": 0}

    async def consume(self, request: web.Request) -> Part:
        crc = 0
        size = 0
        md5 = hashlib.md5() if self.md5_etags else None
        sent = sent_checksum(request)
        verify = _CRCS.get(sent[0]) if sent is not None and self.verify_checksums else None
        other = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            crc = zlib.crc32(chunk, crc)
            if md5 is not None:
                md5.update(chunk)
            if verify is not None:
                other = verify[0](chunk, other)
        self.stats["bytes"] += size
        etag = md5.hexdigest() if md5 is not None else f"{crc:08x}{size:024x}"
        if verify is not None and sent is not None and b64(other, verify[1]) != sent[1]:
            raise BadDigest(f"{sent[0]} of the body is {b64(other, verify[1])}, not {sent[1]}")
        return Part(size, crc, etag, other if verify is not None else None)

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
            algorithm = request.headers.get("x-amz-checksum-algorithm")
            self.uploads[upload_id] = Pending(
                name,
                algorithm.lower() if algorithm else None,
                request.headers.get("x-amz-checksum-type", "COMPOSITE"),
            )
            return xml(
                f"<InitiateMultipartUploadResult {XMLNS}><Bucket>{bucket}</Bucket><Key>{key}</Key>"
                f"<UploadId>{upload_id}</UploadId></InitiateMultipartUploadResult>"
            )
        if m == "PUT" and "partNumber" in q:
            pending = self.uploads.get(q.get("uploadId", ""))
            if pending is None:
                await request.read()
                return no_such_upload()
            try:
                part = await self.consume(request)
            except BadDigest as exc:
                return error(400, "BadDigest", str(exc))
            pending.parts[int(q["partNumber"])] = part
            return web.Response(status=200, headers={"ETag": f'"{part.etag}"', **echo(request)})
        if m == "POST" and "uploadId" in q:
            pending = self.uploads.get(q["uploadId"])  # kept after a refused complete, as S3 does
            body = await request.read()
            if pending is None:
                return no_such_upload()
            numbers = [int(n) for n in _PART_RE.findall(body)]
            parts = [pending.parts[n] for n in numbers]
            etag = f"{uuid.uuid4().hex}-{len(parts)}"
            sent = sent_checksum(request)
            checksum = None
            if sent is not None:
                checksum = {"algorithm": sent[0], "type": request.headers.get("x-amz-checksum-type", pending.type)}
                checksum["value"] = sent[1]
                problem = self.verify_full(pending, parts, sent)
                if problem:
                    return error(400, "BadDigest", problem)
            del self.uploads[q["uploadId"]]
            self.objects[name] = {
                "size": sum(p.size for p in parts),
                "parts": [[p.size, p.crc32] for p in parts],
                "etag": etag,
                "checksum": checksum,
            }
            answer = ""
            if sent is not None and checksum is not None:
                tag = f"Checksum{sent[0].upper()}"
                answer = f"<{tag}>{sent[1]}</{tag}><ChecksumType>{checksum['type']}</ChecksumType>"
            return xml(
                f"<CompleteMultipartUploadResult {XMLNS}><Bucket>{bucket}</Bucket><Key>{key}</Key>"
                f'<ETag>"{etag}"</ETag>{answer}</CompleteMultipartUploadResult>'
            )
        if m == "DELETE" and "uploadId" in q:
            self.uploads.pop(q["uploadId"], None)
            return web.Response(status=204)
        if "tagging" in q:
            await request.read()
            return web.Response(status=200)
        if m == "PUT":
            try:
                part = await self.consume(request)
            except BadDigest as exc:
                return error(400, "BadDigest", str(exc))
            sent = sent_checksum(request)
            self.objects[name] = {
                "size": part.size,
                "parts": [[part.size, part.crc32]],
                "etag": part.etag,
                "checksum": {"algorithm": sent[0], "type": "FULL_OBJECT", "value": sent[1]} if sent else None,
            }
            return web.Response(status=200, headers={"ETag": f'"{part.etag}"', **echo(request)})
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

    def verify_full(self, pending: Pending, parts: list[Part], sent: tuple[str, str]) -> str | None:
        """With ``--verify-checksums``, the reason a full-object CRC does not match the parts, else None."""
        crc = _CRCS.get(sent[0])
        if not self.verify_checksums or crc is None or pending.type != "FULL_OBJECT":
            return None
        if any(p.crc is None for p in parts):
            return "a part was sent without its checksum"
        value: int | None = None
        for part in parts:
            assert part.crc is not None
            value = part.crc if value is None else crc[2](value, part.crc, part.size)
        computed = b64(value or 0, crc[1])
        return None if computed == sent[1] else f"full-object {sent[0]} is {computed}, not {sent[1]}"

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


class BadDigest(Exception):
    """A body whose checksum is not the one its header announced."""


def echo(request: web.Request) -> dict[str, str]:
    """The checksum header S3 answers with: the one the request carried."""
    sent = sent_checksum(request)
    return {f"{_CHECKSUM_PREFIX}{sent[0]}": sent[1]} if sent else {}


def error(status: int, code: str, message: str | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=f"<Error><Code>{code}</Code><Message>{message or code}</Message></Error>".encode(),
        content_type="application/xml",
    )


def no_such_upload() -> web.Response:
    return error(404, "NoSuchUpload")


def make_app(md5_etags: bool = False, verify_checksums: bool = False) -> web.Application:
    app = web.Application(client_max_size=1024**3, handler_args={"read_bufsize": READ_BUFSIZE})
    standin = StandIn(md5_etags, verify_checksums)
    app.router.add_route("*", "/{path:.*}", standin.handle)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--md5-etags", action="store_true")
    parser.add_argument("--verify-checksums", action="store_true")
    args = parser.parse_args()
    import uvloop

    web.run_app(
        make_app(args.md5_etags, args.verify_checksums),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
