"""Part checksums (``--checksum``) and the payload digest the signer needs, computed in a worker thread.

botocore >= 1.36 computes CRC checksums by default and sends them as aws-chunked trailers that
several S3-compatible stores reject; the client asks for checksums only when required and the
part checksum chosen by ``--checksum`` is sent explicitly (``Content-MD5`` by default, which
every S3-compatible store verifies).
"""

from __future__ import annotations

import base64
import hashlib
import zlib

__all__ = ["checksum_args", "multipart_checksum_algorithm", "part_digests"]


def part_digests(algorithm: str, body: memoryview, payload_sha256: bool) -> tuple[dict[str, str], str | None]:
    """Return the part checksum arguments and, if the signer needs it, the payload sha256 (run in a thread)."""
    return checksum_args(algorithm, body), hashlib.sha256(body).hexdigest() if payload_sha256 else None


def checksum_args(algorithm: str, body: memoryview) -> dict[str, str]:
    """Return the ``UploadPart``/``PutObject`` checksum argument for ``algorithm`` (none for ``none``)."""
    if algorithm == "md5":
        return {"ContentMD5": base64.b64encode(hashlib.md5(body).digest()).decode()}
    if algorithm == "crc32":
        return {"ChecksumCRC32": base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()}
    if algorithm == "sha256":
        return {"ChecksumSHA256": base64.b64encode(hashlib.sha256(body).digest()).decode()}
    return {}


def multipart_checksum_algorithm(algorithm: str) -> dict[str, str]:
    """Return the ``CreateMultipartUpload`` argument that announces the parts' checksum algorithm."""
    return {"ChecksumAlgorithm": algorithm.upper()} if algorithm in ("crc32", "sha256") else {}
