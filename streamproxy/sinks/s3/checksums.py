"""The S3 arguments of ``--checksum``: per-part values, the announcement, the full-object value.

The values themselves come from ``streamproxy.checksums`` (computed in a worker thread, next to
the payload sha256 the signer needs). botocore >= 1.36 computes CRC checksums by default and
sends them as aws-chunked trailers that several S3-compatible stores reject; the client asks for
checksums only when required, and the part checksum is sent explicitly as a header.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ...checksums import FULL_OBJECT, ObjectChecksum, digest, encode

__all__ = ["complete_args", "create_args", "part_args", "part_digests"]

# The botocore parameter (and so the header) that carries each mode's value.
ARGUMENT = {
    "md5": "ContentMD5",
    "crc32": "ChecksumCRC32",
    "crc32c": "ChecksumCRC32C",
    "crc64nvme": "ChecksumCRC64NVME",
    "sha256": "ChecksumSHA256",
}


def part_digests(mode: str, body: memoryview, payload_sha256: bool) -> tuple[bytes | None, str | None]:
    """Return the part's raw checksum (``None`` for ``none``) and, if the signer needs it, the payload sha256.

    Run in a worker thread: neither needs the event loop.
    """
    raw = digest(mode, body) if mode in ARGUMENT else None
    return raw, hashlib.sha256(body).hexdigest() if payload_sha256 else None


def part_args(mode: str, raw: bytes | None) -> dict[str, str]:
    """Return the ``UploadPart``/``PutObject`` argument that carries a part's checksum."""
    return {} if raw is None else {ARGUMENT[mode]: encode(raw)}


def create_args(mode: str) -> dict[str, str]:
    """Return the ``CreateMultipartUpload`` arguments that announce the parts' checksum."""
    if mode == "crc64nvme":
        return {"ChecksumAlgorithm": "CRC64NVME", "ChecksumType": FULL_OBJECT}
    if mode in ("crc32", "crc32c", "sha256"):
        return {"ChecksumAlgorithm": mode.upper()}
    return {}


def complete_args(checksum: ObjectChecksum | None) -> dict[str, Any]:
    """Return the ``CompleteMultipartUpload`` arguments: the whole object's value, for a full-object checksum."""
    if checksum is None or checksum.type != FULL_OBJECT:
        return {}
    return {ARGUMENT[checksum.mode]: encode(checksum.full()), "ChecksumType": FULL_OBJECT}
