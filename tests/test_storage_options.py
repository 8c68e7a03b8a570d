"""Storage options reach S3 on every write path: encryption, storage class, Object Lock, tags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import pytest

from streamproxy.cli import settings_from_args
from streamproxy.config import ConfigError
from streamproxy.tags import merge_tags, parse_tag, sanitize_tag_key, sanitize_tag_value
from tests.audio_tools import big_wav
from tests.helpers import KMS_KEY, PART, form, incomplete_uploads, objects, payload, s3_settings

PATHS = {
    "single_put": (100, "filename_first"),
    "multipart": (2 * PART + 7, "filename_first"),
    "staged_small": (100, "file_first"),
    "staged_multipart": (2 * PART + 7, "file_first"),
}


async def _upload(client: Any, size: int, order: str, call_id: str = "C-1/2 x") -> dict[str, Any]:
    data = big_wav(size) if size > 1000 else payload(size)
    fields: list[tuple[str, str | bytes]] = [("call_id", call_id), ("filename", "rec-1"), ("recording", data)]
    if order == "file_first":
        fields = [("recording", data), ("call_id", call_id), ("filename", "rec-1")]
    resp = await client.post("/recordings", data=form(fields))
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200, body
    return body


@pytest.mark.parametrize("path", list(PATHS))
async def test_every_option_reaches_s3_on_every_path(client_for, recorder, locked_bucket, s3, path) -> None:
    """SSE-KMS, storage class, retention, legal hold and tags on the write that creates the object."""
    size, order = PATHS[path]
    settings = s3_settings(
        recorder.url,
        locked_bucket,
        sse="aws:kms",
        sse_kms_key_id=KMS_KEY,
        storage_class="STANDARD_IA",
        object_lock_mode="GOVERNANCE",
        object_lock_days=3,
        object_lock_legal_hold=True,
        tags=(("team", "ivr"), ("env", "test")),
        tag_fields=("call_id",),
    )
    client = await client_for(settings)
    started = datetime.now(UTC).replace(microsecond=0)
    await _upload(client, size, order)
    key = "rec/rec-1.wav"

    [create] = recorder.final_writes(key)
    assert create.operation == ("PutObject" if path == "single_put" else "CreateMultipartUpload")
    h = create.headers
    assert h["x-amz-server-side-encryption"] == "aws:kms"
    assert h["x-amz-server-side-encryption-aws-kms-key-id"] == KMS_KEY
    assert h["x-amz-storage-class"] == "STANDARD_IA"
    assert h["x-amz-object-lock-mode"] == "GOVERNANCE"
    until = datetime.fromisoformat(h["x-amz-object-lock-retain-until-date"].replace("Z", "+00:00"))
    assert started + timedelta(days=3) <= until <= datetime.now(UTC) + timedelta(days=3)
    assert h["x-amz-object-lock-legal-hold"] == "ON"
    assert dict(parse_qsl(h["x-amz-tagging"])) == {"team": "ivr", "env": "test", "call_id": "C-1/2 x"}

    staging = [c for c in recorder.calls if ".streamproxy-staging/" in c.key and c.operation != "DeleteObject"]
    assert bool(staging) == (order == "file_first")
    for call in staging:
        if call.operation in ("PutObject", "CreateMultipartUpload"):
            # encrypted at rest like the recording, but neither retained nor tagged: it is deleted after the copy
            assert call.headers["x-amz-server-side-encryption"] == "aws:kms"
            assert not any(k.startswith("x-amz-object-lock") for k in call.headers)
            assert "x-amz-tagging" not in call.headers

    head = s3.head_object(Bucket=locked_bucket, Key=key)
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == KMS_KEY
    assert head["StorageClass"] == "STANDARD_IA"
    if path == "single_put":  # moto keeps Object Lock only from PutObject; the headers above cover the rest
        assert head["ObjectLockMode"] == "GOVERNANCE" and head["ObjectLockLegalHoldStatus"] == "ON"
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=locked_bucket, Key=key)["TagSet"]}
    expected = {"team": "ivr", "env": "test", "call_id": "C-1/2 x"}
    if path == "multipart":  # the facts join the tags after a direct multipart upload
        assert set(tags) == {*expected, "sha256", "size", "audio"}
        assert [c.operation for c in recorder.calls if c.key == key][-1] == "PutObjectTagging"
    else:
        assert tags == expected
    assert set(objects(s3, locked_bucket)) == {key}
    assert incomplete_uploads(s3, locked_bucket) == []


async def test_tag_field_values_are_sanitized_and_late_fields_count(client_for, recorder, bucket, s3) -> None:
    """A field value with characters S3 refuses is cleaned; a field sent after the file still becomes a tag."""
    client = await client_for(s3_settings(recorder.url, bucket, tag_fields=("call_id", "agent")))
    data = payload(2 * PART + 1)
    fields: list[tuple[str, str | bytes]] = [
        ("filename", "t-1"),
        ("call_id", "a;b<c>é\u2603"),
        ("recording", data),
        ("agent", "x" * 300),
    ]
    resp = await client.post("/recordings", data=form(fields))
    assert resp.status == 200, await resp.text()
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key="rec/t-1.wav")["TagSet"]}
    assert tags["call_id"] == "a_b_c_é_" and tags["agent"] == "x" * 256
    assert {"sha256", "size"} <= set(tags)


async def test_sse_aes256_on_the_filesystem_is_refused() -> None:
    """S3-only options stop the server at start when the storage is a directory."""
    for argv in (
        ["--sse", "AES256"],
        ["--storage-class", "GLACIER_IR"],
        ["--object-lock-mode", "COMPLIANCE", "--object-lock-days", "5"],
        ["--object-lock-legal-hold"],
        ["--tag", "a=b"],
        ["--tag-field", "call_id"],
    ):
        with pytest.raises(ConfigError, match="applies to s3:// storage only"):
            settings_from_args(["serve", *argv])


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--sse", "aes256"], "--sse 'aes256'"),
        (["--sse", "AES256", "--sse-kms-key-id", "k"], "needs --sse aws:kms"),
        (["--storage-class", "COLD"], "--storage-class 'COLD'"),
        (["--object-lock-mode", "STRICT", "--object-lock-days", "1"], "GOVERNANCE or COMPLIANCE"),
        (["--object-lock-mode", "COMPLIANCE"], "go together"),
        (["--object-lock-days", "3"], "go together"),
        (["--object-lock-mode", "COMPLIANCE", "--object-lock-days", "0"], "1 to 36500"),
        (["--object-lock-legal-hold", "--checksum", "none"], "requires a checksum"),
        (["--tag", "novalue"], "KEY=VALUE"),
        (["--tag", "a=b;c"], "S3 tags take"),
        (["--tag", "aws:x=1"], "aws:"),
        (["--tag", "sha256=1"], "written by streamproxy"),
        (["--tag-field", "bad;name"], "--tag-field"),
        (
            [
                "--tag",
                "a=1",
                "--tag",
                "b=2",
                "--tag",
                "c=3",
                "--tag",
                "d=4",
                "--tag-field",
                "e",
                "--tag-field",
                "f",
                "--tag-field",
                "g",
                "--tag-field",
                "h",
            ],
            "at most 7",
        ),
    ],
)
def test_storage_option_validation(argv: list[str], needle: str) -> None:
    """Every wrong storage option is one line naming the flag."""
    with pytest.raises(ConfigError) as info:
        settings_from_args(["serve", "--storage", "s3://calls/", *argv])
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_repeatable_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """--tag and --tag-field repeat; in the environment they are comma-separated."""
    _, settings = settings_from_args(
        ["serve", "--storage", "s3://calls/", "--tag", "team=ivr", "--tag", "cost center=42", "--tag-field", "call_id"]
    )
    assert settings.tags == (("team", "ivr"), ("cost center", "42")) and settings.tag_fields == ("call_id",)
    monkeypatch.setenv("STREAMPROXY_TAG", "team=ivr,env=prod")
    monkeypatch.setenv("STREAMPROXY_TAG_FIELD", "call_id,agent")
    monkeypatch.setenv("STREAMPROXY_SSE", "aws:kms")
    _, settings = settings_from_args(["serve", "--storage", "s3://calls/"])
    assert settings.tags == (("team", "ivr"), ("env", "prod")) and settings.tag_fields == ("call_id", "agent")
    assert settings.sse == "aws:kms"


def test_tag_rules() -> None:
    """Sanitizing keeps what S3 allows, replaces the rest, and never yields an aws: key; merging keeps 10."""
    assert sanitize_tag_key("aws:thing") == "_ws:thing"
    assert sanitize_tag_value("ok +-=._:/@ 123") == "ok +-=._:/@ 123"
    assert sanitize_tag_value("a,b;c\n") == "a_b_c_"
    assert parse_tag("k=") == ("k", "")
    merged = merge_tags({f"t{i}": "x" for i in range(9)}, {"sha256": "h", "size": "1", "audio": "a"})
    assert len(merged) == 10 and {"sha256", "size", "audio"} <= set(merged)
