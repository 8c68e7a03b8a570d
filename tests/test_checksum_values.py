"""streamproxy.checksums against independent, bit-by-bit reference CRCs and the published check values."""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproxy.checksums import COMPOSITE, FULL_OBJECT, MODES, ObjectChecksum, digest


def _reflected_crc(data: bytes, poly: int, width: int) -> int:
    """A textbook reflected CRC with all-ones init and final xor (CRC-32, CRC-32C and CRC-64/NVME all are)."""
    mask = (1 << width) - 1
    crc = mask
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
    return crc ^ mask


def ref_crc64nvme(data: bytes) -> bytes:
    return _reflected_crc(data, 0x9A6C9329AC4BC9B5, 64).to_bytes(8, "big")


def ref_crc32c(data: bytes) -> bytes:
    return _reflected_crc(data, 0x82F63B78, 32).to_bytes(4, "big")


def ref_crc32(data: bytes) -> bytes:
    return _reflected_crc(data, 0xEDB88320, 32).to_bytes(4, "big")


REFERENCE = {
    "crc64nvme": ref_crc64nvme,
    "crc32c": ref_crc32c,
    "crc32": ref_crc32,
    "md5": lambda d: hashlib.md5(d).digest(),
    "sha256": lambda d: hashlib.sha256(d).digest(),
}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_published_check_values() -> None:
    """The catalogue's check value of each CRC over b"123456789"."""
    assert digest("crc64nvme", b"123456789").hex() == "ae8b14860a799888"
    assert digest("crc32c", b"123456789").hex() == "e3069283"
    assert digest("crc32", b"123456789").hex() == "cbf43926"


@pytest.mark.parametrize("mode", MODES)
def test_digest_matches_reference_on_memoryview(mode: str) -> None:
    data = os.urandom(3001)
    assert digest(mode, memoryview(bytearray(data))) == REFERENCE[mode](data)


@settings(max_examples=40, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=600),
    cuts=st.lists(st.integers(min_value=1, max_value=599), max_size=6),
    mode=st.sampled_from(["crc64nvme", "crc32c", "crc32"]),
)
def test_full_object_crc_combines_parts_in_any_order(data: bytes, cuts: list[int], mode: str) -> None:
    """Parts finishing out of order still give the CRC of the whole recording, as the store computes it."""
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    acc = ObjectChecksum(mode)
    for number in reversed(range(1, len(pieces) + 1)):
        piece = pieces[number - 1]
        acc.add(number, digest(mode, piece), len(piece))
    assert acc.full() == REFERENCE[mode](data)


def test_crc64nvme_is_full_object_and_reports_the_whole_recording() -> None:
    part = 5 * 1024 * 1024
    data = os.urandom(2 * part + 7)
    acc = ObjectChecksum("crc64nvme")
    for number, start in enumerate(range(0, len(data), part), start=1):
        acc.add(number, digest("crc64nvme", data[start : start + part]), len(data[start : start + part]))
    result = acc.multipart()
    assert acc.type == FULL_OBJECT
    assert (result.algorithm, result.type) == ("crc64nvme", FULL_OBJECT)
    assert result.value == b64(digest("crc64nvme", data))  # awscrt over the whole, one pass
    assert result.as_json() == {"algorithm": "crc64nvme", "type": "FULL_OBJECT", "value": result.value}


@pytest.mark.parametrize("mode", ["crc32", "crc32c", "sha256", "md5"])
def test_composite_value_is_checksum_of_part_checksums(mode: str) -> None:
    """S3's composite form: checksum over the concatenated raw part checksums, then -N."""
    pieces = [os.urandom(1000), os.urandom(1000), os.urandom(17)]
    acc = ObjectChecksum(mode)
    for number, piece in enumerate(pieces, start=1):
        acc.add(number, digest(mode, piece), len(piece))
    joined = b"".join(REFERENCE[mode](p) for p in pieces)
    result = acc.multipart()
    assert acc.type == COMPOSITE
    assert result.value == f"{b64(REFERENCE[mode](joined))}-3"
    assert result.type == COMPOSITE


def test_md5_multipart_value_is_the_s3_etag_construction() -> None:
    """For md5 the composite value is the multipart ETag S3 shows (hex there, base64 here)."""
    pieces = [b"a" * 10, b"b" * 3]
    acc = ObjectChecksum("md5")
    for number, piece in enumerate(pieces, start=1):
        acc.add(number, digest("md5", piece), len(piece))
    etag = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in pieces)).hexdigest() + "-2"
    value, count = acc.multipart().value.split("-")
    assert base64.b64decode(value).hex() + "-" + count == etag


def test_single_put_reports_a_plain_full_object_value() -> None:
    data = b"recording"
    acc = ObjectChecksum("crc32")
    result = acc.single(digest("crc32", data))
    assert result.type == FULL_OBJECT
    assert result.value == b64(zlib.crc32(data).to_bytes(4, "big"))


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown checksum mode"):
        ObjectChecksum("crc16")
    with pytest.raises(ValueError, match="unknown checksum mode"):
        digest("none", b"")
