"""The S3 signer takes a part's payload sha256 from the worker thread, and signs exactly as botocore would."""

from __future__ import annotations

import hashlib

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from streamproxy.sinks.s3.checksums import part_digests
from streamproxy.sinks.s3.transport import PartBody, PrehashedS3SigV4Auth

DATA = bytes(range(256)) * 4096


def _signed(
    auth_class: type,
    body: PartBody,
    url: str = "http://127.0.0.1:9000/b/k?partNumber=1&uploadId=u",
    headers: dict[str, str] | None = None,
) -> dict[str, str]:
    request = AWSRequest(method="PUT", url=url, data=body, headers={"Content-MD5": "x"} if headers is None else headers)
    request.context["timestamp"] = "20260101T000000Z"
    request.context["client_config"] = Config(s3={})
    request.context["has_streaming_input"] = True  # as botocore marks UploadPart and PutObject bodies
    auth_class(Credentials("AKID", "secret"), "s3", "us-east-1").add_auth(request)
    return dict(request.headers)


def test_precomputed_digest_gives_the_same_signature_over_http() -> None:
    digest = hashlib.sha256(DATA).hexdigest()
    ours = _signed(PrehashedS3SigV4Auth, PartBody(memoryview(DATA), digest))
    botocore = _signed(S3SigV4Auth, PartBody(memoryview(DATA)))
    assert ours["X-Amz-Content-SHA256"] == digest
    assert ours == botocore


def test_the_signer_uses_the_digest_it_is_given_instead_of_reading_the_body() -> None:
    ours = _signed(PrehashedS3SigV4Auth, PartBody(memoryview(DATA), "0" * 64))
    assert ours["X-Amz-Content-SHA256"] == "0" * 64


def test_without_a_digest_the_signer_hashes_the_body_itself() -> None:
    ours = _signed(PrehashedS3SigV4Auth, PartBody(memoryview(DATA)))
    assert ours["X-Amz-Content-SHA256"] == hashlib.sha256(DATA).hexdigest()


def test_https_with_content_md5_stays_unsigned_payload() -> None:
    url = "https://s3.amazonaws.com/b/k?partNumber=1&uploadId=u"
    ours = _signed(PrehashedS3SigV4Auth, PartBody(memoryview(DATA), "0" * 64), url=url)
    assert ours["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"


@pytest.mark.parametrize("header", ["x-amz-checksum-crc64nvme", "x-amz-checksum-crc32c", "x-amz-checksum-sha256"])
def test_https_with_an_explicit_checksum_header_stays_unsigned_payload(header: str) -> None:
    """Like Content-MD5: a CRC the store verifies, over TLS, needs no sha256 of the body (--checksum auto on AWS)."""
    url = "https://s3.amazonaws.com/b/k?partNumber=1&uploadId=u"
    ours = _signed(PrehashedS3SigV4Auth, PartBody(memoryview(DATA)), url=url, headers={header: "AAAAAAAAAAA="})
    assert ours["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"


def test_https_without_any_checksum_signs_the_body() -> None:
    url = "https://s3.amazonaws.com/b/k?partNumber=1&uploadId=u"
    ours = _signed(PrehashedS3SigV4Auth, PartBody(memoryview(DATA)), url=url, headers={"x-amz-checksum-type": "x"})
    assert ours["X-Amz-Content-SHA256"] == hashlib.sha256(DATA).hexdigest()


def test_plain_http_with_a_checksum_header_still_signs_the_body() -> None:
    ours = _signed(PrehashedS3SigV4Auth, PartBody(memoryview(DATA)), headers={"x-amz-checksum-crc64nvme": "A"})
    assert ours["X-Amz-Content-SHA256"] == hashlib.sha256(DATA).hexdigest()


def test_part_digests_hash_only_when_the_signer_needs_it() -> None:
    raw, digest = part_digests("md5", memoryview(DATA), True)
    assert digest == hashlib.sha256(DATA).hexdigest()
    assert raw == hashlib.md5(DATA).digest()
    assert part_digests("md5", memoryview(DATA), False)[1] is None
    assert part_digests("none", memoryview(DATA), False) == (None, None)


async def test_install_replaces_the_crt_signer_botocore_picks_with_awscrt_installed() -> None:
    """awscrt (a dependency, for CRC64NVME) makes botocore sign with its CRT signer, which hashes parts on the loop."""
    from botocore import auth
    from botocore.crt.auth import CrtS3SigV4Auth

    from streamproxy.sinks.s3 import transport

    saved = auth.AUTH_TYPE_MAPS["s3v4"]
    try:
        auth.AUTH_TYPE_MAPS["s3v4"] = CrtS3SigV4Auth
        transport._install_once.cache_clear()
        transport.install()
        assert auth.AUTH_TYPE_MAPS["s3v4"] is PrehashedS3SigV4Auth
    finally:
        auth.AUTH_TYPE_MAPS["s3v4"] = saved
        transport._install_once.cache_clear()
        transport.install()
