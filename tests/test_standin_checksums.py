"""The benchmark's stand-in S3 takes full-object checksums as S3 does, and (verifying) refuses wrong ones."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from bench.run import Bench, free_port, start_standin, stop
from streamproxy.checksums import ObjectChecksum, digest, encode

PART = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def standin() -> Iterator[tuple[Any, Bench]]:
    port = free_port()
    proc = start_standin(port, "--verify-checksums")
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(request_checksum_calculation="when_required", response_checksum_validation="when_required"),
    )
    try:
        yield client, Bench(Any, endpoint, lambda _: None)  # type: ignore[arg-type]  # only record() is used
    finally:
        stop(proc)


def _upload(client: Any, key: str, data: bytes, *, spoil_part: bool = False, spoil_full: bool = False) -> Any:
    created = client.create_multipart_upload(
        Bucket="bench", Key=key, ChecksumAlgorithm="CRC64NVME", ChecksumType="FULL_OBJECT"
    )
    upload_id = created["UploadId"]
    acc = ObjectChecksum("crc64nvme")
    parts = []
    for number, start in enumerate(range(0, len(data), PART), start=1):
        piece = data[start : start + PART]
        raw = digest("crc64nvme", piece)
        acc.add(number, raw, len(piece))
        sent = encode(digest("crc64nvme", piece + b"x")) if spoil_part else encode(raw)
        answer = client.upload_part(
            Bucket="bench", Key=key, UploadId=upload_id, PartNumber=number, Body=piece, ChecksumCRC64NVME=sent
        )
        assert answer["ChecksumCRC64NVME"] == sent  # echoed, as S3 does
        parts.append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumCRC64NVME": sent})
    full = acc.multipart().value
    return client.complete_multipart_upload(
        Bucket="bench",
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": parts},
        ChecksumCRC64NVME=encode(digest("crc64nvme", b"other")) if spoil_full else full,
        ChecksumType="FULL_OBJECT",
    )


def test_full_object_crc64nvme_is_accepted_and_recorded(standin: tuple[Any, Bench]) -> None:
    client, bench = standin
    data = os.urandom(2 * PART + 11)
    answer = _upload(client, "ok.wav", data)
    expected = encode(digest("crc64nvme", data))
    assert answer["ChecksumCRC64NVME"] == expected
    assert answer["ChecksumType"] == "FULL_OBJECT"
    record = bench.record("ok.wav")
    assert record is not None
    assert record["checksum"] == {"algorithm": "crc64nvme", "type": "FULL_OBJECT", "value": expected}


def test_a_wrong_part_checksum_is_refused(standin: tuple[Any, Bench]) -> None:
    client, _ = standin
    with pytest.raises(ClientError, match="BadDigest"):
        _upload(client, "bad-part.wav", os.urandom(PART + 1), spoil_part=True)


def test_a_wrong_full_object_checksum_is_refused(standin: tuple[Any, Bench]) -> None:
    client, bench = standin
    with pytest.raises(ClientError, match="BadDigest"):
        _upload(client, "bad-full.wav", os.urandom(PART + 1), spoil_full=True)
    assert bench.record("bad-full.wav") is None


def test_single_put_checksum_is_recorded(standin: tuple[Any, Bench]) -> None:
    client, bench = standin
    value = encode(digest("crc64nvme", b"short recording"))
    client.put_object(Bucket="bench", Key="one.wav", Body=b"short recording", ChecksumCRC64NVME=value)
    record = bench.record("one.wav")
    assert record is not None
    assert record["checksum"] == {"algorithm": "crc64nvme", "type": "FULL_OBJECT", "value": value}
    with pytest.raises(ClientError, match="BadDigest"):
        client.put_object(Bucket="bench", Key="two.wav", Body=b"short recording", ChecksumCRC64NVME=encode(b"\0" * 8))


def test_byte_exact_checks_a_recorded_full_object_crc(tmp_path: Any) -> None:
    """The benchmark's byte-exact verdict fails when the recorded CRC64NVME is not the file's."""
    import zlib

    from bench.measure import byte_exact

    data = os.urandom(3000)
    file = tmp_path / "f.bin"
    file.write_bytes(data)
    record: dict[str, object] = {"size": 3000, "parts": [[3000, zlib.crc32(data)]]}
    right = {"algorithm": "crc64nvme", "type": "FULL_OBJECT", "value": encode(digest("crc64nvme", data))}
    assert byte_exact(file, {**record, "checksum": right})
    assert not byte_exact(file, {**record, "checksum": {**right, "value": encode(b"\0" * 8)}})
