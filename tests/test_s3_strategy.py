"""The upload strategy decided from a store's capabilities and the flags (pure decisions, no store)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from streamproxy.sinks.s3.adapt import is_aws, resolve_checksum, strategy
from tests.store_profiles import CAPABILITIES

FULL = CAPABILITIES["s3"]
CEPH16 = CAPABILITIES["ceph16"]
SWIFT = CAPABILITIES["swift"]
S3RVER = CAPABILITIES["s3rver"]


@pytest.mark.parametrize(
    ("endpoint", "aws"),
    [
        (None, True),
        ("", True),
        ("https://s3.eu-central-1.amazonaws.com", True),
        ("https://bucket.s3.cn-north-1.amazonaws.com.cn", True),
        ("http://127.0.0.1:7480", False),
        ("https://amazonaws.com.evil.example", False),
        ("https://r2.cloudflarestorage.com", False),
    ],
)
def test_is_aws(endpoint: str | None, aws: bool) -> None:
    assert is_aws(endpoint) is aws


def test_auto_is_full_object_crc64nvme_on_aws_whatever_was_probed() -> None:
    assert resolve_checksum("auto", None, None) == "crc64nvme"
    assert resolve_checksum("auto", CEPH16, "https://s3.us-east-1.amazonaws.com") == "crc64nvme"


@pytest.mark.parametrize(
    ("found", "picked"),
    [
        ({"md5", "crc32", "crc32c", "crc64nvme", "sha256"}, "crc64nvme"),
        ({"md5", "crc32", "crc32c", "sha256"}, "crc32c"),
        ({"md5", "crc32", "sha256"}, "crc32"),
        ({"md5", "sha256"}, "md5"),
        ({"sha256"}, "none"),
        (set(), "none"),
    ],
)
def test_auto_elsewhere_takes_the_strongest_mode_found(found: set[str], picked: str) -> None:
    caps = replace(FULL, checksums=frozenset(found))
    assert resolve_checksum("auto", caps, "http://127.0.0.1:9000") == picked


def test_auto_on_an_unprobed_store_is_md5() -> None:
    assert resolve_checksum("auto", None, "http://127.0.0.1:9000") == "md5"


@pytest.mark.parametrize("choice", ["md5", "crc32", "crc32c", "crc64nvme", "sha256", "none"])
def test_an_explicit_choice_is_kept(choice: str) -> None:
    assert resolve_checksum(choice, S3RVER, "http://127.0.0.1:4568") == choice
    assert resolve_checksum(choice, None, None) == choice


def test_full_store_is_store_enforced_with_single_puts() -> None:
    s = strategy(FULL, overwrite=False, checksum="auto", endpoint_url=None)
    assert (s.single_put, s.conditional_put, s.conditional_complete, s.part_copy) == (True, True, True, True)
    assert s.protection == "store-enforced"
    assert s.guarded("PutObject") and s.guarded("CompleteMultipartUpload") and not s.guarded("CopyObject")


def test_swift_sends_small_recordings_as_one_part_multipart_uploads() -> None:
    s = strategy(SWIFT, overwrite=False, checksum="auto", endpoint_url="http://127.0.0.1:8089")
    assert not s.single_put and not s.conditional_put and s.conditional_complete
    assert s.checksum == "md5" and not s.tagging
    assert s.protection == "store-enforced"


def test_ceph_16_is_best_effort_with_head_checks() -> None:
    s = strategy(CEPH16, overwrite=False, checksum="auto", endpoint_url="http://127.0.0.1:7480")
    assert s.single_put and s.conditional_put and not s.conditional_complete
    assert s.head_checks and not s.guarded("CompleteMultipartUpload")
    assert s.protection == "best-effort"


def test_s3rver_copies_with_copy_object_and_never_aborts() -> None:
    s = strategy(S3RVER, overwrite=False, checksum="auto", endpoint_url="http://127.0.0.1:4568")
    assert s.single_put and not s.part_copy and not s.abort
    assert s.checksum == "none"
    assert s.protection == "best-effort"


def test_overwrite_sends_no_condition_and_checks_nothing() -> None:
    s = strategy(FULL, overwrite=True, checksum="md5", endpoint_url=None)
    assert not s.conditional_put and not s.conditional_complete and not s.head_checks
    assert s.single_put
    assert s.protection == "none"


def test_store_without_part_copy_is_best_effort_on_the_file_before_name_path() -> None:
    s = strategy(replace(FULL, upload_part_copy=False), overwrite=False, checksum="auto", endpoint_url=None)
    assert s.protection == "best-effort"


def test_unknown_capabilities_assume_what_s3_documents() -> None:
    s = strategy(None, overwrite=False, checksum="md5", endpoint_url="http://127.0.0.1:5000")
    assert s.protection == "store-enforced" and s.tagging and s.abort and s.single_put
