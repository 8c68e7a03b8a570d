"""--checksum: each part carries the integrity value S3 verifies, on the single-PUT and multipart paths."""

from __future__ import annotations

import base64
import hashlib
import zlib

import pytest
from awscrt import checksums as crt

from tests.helpers import PART, form, incomplete_uploads, objects, payload, s3_settings

HEADERS = {
    "md5": "content-md5",
    "crc32": "x-amz-checksum-crc32",
    "crc32c": "x-amz-checksum-crc32c",
    "crc64nvme": "x-amz-checksum-crc64nvme",
    "sha256": "x-amz-checksum-sha256",
}


def raw(algorithm: str, data: bytes) -> bytes:
    """The checksum of ``data`` under ``algorithm``, computed here independently of streamproxy.checksums."""
    if algorithm == "md5":
        return hashlib.md5(data).digest()
    if algorithm == "crc32":
        return zlib.crc32(data).to_bytes(4, "big")
    if algorithm == "crc32c":
        return crt.crc32c(data).to_bytes(4, "big")
    if algorithm == "crc64nvme":
        return crt.crc64nvme(data).to_bytes(8, "big")
    return hashlib.sha256(data).digest()


def expected(algorithm: str, data: bytes) -> str:
    """The header value S3 expects for ``data`` under ``algorithm``."""
    return base64.b64encode(raw(algorithm, data)).decode()


@pytest.mark.parametrize("algorithm", ["md5", "crc32", "crc32c", "crc64nvme", "sha256", "none"])
@pytest.mark.parametrize("size", [100, 2 * PART + 7])
async def test_each_part_carries_its_checksum(client_for, recorder, bucket, s3, algorithm: str, size: int) -> None:
    """The stored object is byte-exact, and every body-carrying request sent the checksum of its own bytes."""
    client = await client_for(s3_settings(recorder.url, bucket, checksum=algorithm))
    data = payload(size, seed=size)
    resp = await client.post("/recordings", data=form([("filename", "sum"), ("recording", data)]))
    assert resp.status == 200, await resp.text()
    assert objects(s3, bucket) == {"rec/sum.wav": data}
    assert incomplete_uploads(s3, bucket) == []

    writes = [c for c in recorder.calls if c.operation in ("PutObject", "UploadPart")]
    pieces = [data[i : i + PART] for i in range(0, size, PART)]
    assert len(writes) == len(pieces)
    for call in writes:
        piece = pieces[int(call.query["partNumber"][0]) - 1] if call.operation == "UploadPart" else data
        sent = {name: call.headers.get(header) for name, header in HEADERS.items()}
        if algorithm == "none":
            assert sent == dict.fromkeys(HEADERS)
        else:
            assert sent[algorithm] == expected(algorithm, piece)
            assert all(value is None for name, value in sent.items() if name != algorithm)
    creates = [c for c in recorder.calls if c.operation == "CreateMultipartUpload"]
    for call in creates:  # additional checksums must be announced when the multipart upload starts
        announced = call.headers.get("x-amz-checksum-algorithm")
        assert announced == (algorithm.upper() if algorithm not in ("md5", "none") else None)
        assert call.headers.get("x-amz-checksum-type") == ("FULL_OBJECT" if algorithm == "crc64nvme" else None)
    completes = [c for c in recorder.calls if c.operation == "CompleteMultipartUpload"]
    for call in completes:  # only a full-object checksum is sent whole, for the store to recompute
        whole = expected(algorithm, data) if algorithm == "crc64nvme" else None
        assert call.headers.get("x-amz-checksum-crc64nvme") == whole

    answer = await resp.json()
    if algorithm == "none":
        assert answer["checksum"] is None
    elif len(pieces) == 1 or algorithm == "crc64nvme":
        assert answer["checksum"] == {"algorithm": algorithm, "type": "FULL_OBJECT", "value": expected(algorithm, data)}
    else:
        composite = base64.b64encode(raw(algorithm, b"".join(raw(algorithm, p) for p in pieces))).decode()
        value = f"{composite}-{len(pieces)}"
        assert answer["checksum"] == {"algorithm": algorithm, "type": "COMPOSITE", "value": value}
