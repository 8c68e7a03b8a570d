"""Sweeping leftovers of interrupted uploads: age threshold, prefix scope, dry run, and the CLI.

moto reports one fixed ``Initiated`` date (in 2010) for every multipart upload, so the S3 age
tests pass ``now`` relative to the date moto actually reports instead of relying on the clock.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from streamproxy.sinks.fs import FileSink
from streamproxy.sinks.s3 import STAGING_DIR, S3Options, S3Sink
from streamproxy.sweep import format_age
from tests.helpers import PART, incomplete_uploads, objects, s3_settings

HOUR = 3600.0


def _start_upload(s3: Any, bucket: str, key: str) -> str:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * PART)
    return str(upload_id)


def _initiated(s3: Any, bucket: str) -> float:
    return float(s3.list_multipart_uploads(Bucket=bucket)["Uploads"][0]["Initiated"].timestamp())


async def _sink(moto_endpoint: str, bucket: str, prefix: str = "rec/") -> S3Sink:
    sink = S3Sink(S3Options.from_settings(s3_settings(moto_endpoint, bucket, prefix)))
    await sink.start()
    return sink


async def test_s3_sweep_aborts_only_old_uploads_under_the_prefix(moto_endpoint, bucket, s3) -> None:
    """Uploads younger than the threshold stay; older ones under the prefix are aborted; others are untouched."""
    _start_upload(s3, bucket, "rec/a.wav")
    _start_upload(s3, bucket, f"rec/{STAGING_DIR}token1")
    _start_upload(s3, bucket, "other/b.wav")
    initiated = _initiated(s3, bucket)
    sink = await _sink(moto_endpoint, bucket)
    try:
        assert await sink.sweep(HOUR, dry_run=False, now=initiated + 0.5 * HOUR) == []
        assert len(incomplete_uploads(s3, bucket)) == 3

        listed = await sink.sweep(HOUR, dry_run=True, now=initiated + 2 * HOUR)
        assert sorted((i.kind, i.key) for i in listed) == [
            ("multipart_upload", "rec/.streamproxy-staging/token1"),
            ("multipart_upload", "rec/a.wav"),
        ]
        assert all(i.age_seconds == pytest.approx(2 * HOUR) and i.error is None for i in listed)
        assert len(incomplete_uploads(s3, bucket)) == 3  # a dry run removes nothing

        swept = await sink.sweep(HOUR, dry_run=False, now=initiated + 2 * HOUR)
        assert sorted(i.key for i in swept) == ["rec/.streamproxy-staging/token1", "rec/a.wav"]
        assert incomplete_uploads(s3, bucket) == ["other/b.wav"]
    finally:
        await sink.close()


async def test_s3_sweep_deletes_old_staging_objects_only(moto_endpoint, bucket, s3) -> None:
    """Staging objects are judged by LastModified; recordings and other prefixes are never touched."""
    s3.put_object(Bucket=bucket, Key=f"rec/{STAGING_DIR}orphan", Body=b"half")
    s3.put_object(Bucket=bucket, Key="rec/keep.wav", Body=b"recording")
    s3.put_object(Bucket=bucket, Key=f"other/{STAGING_DIR}orphan", Body=b"x")
    sink = await _sink(moto_endpoint, bucket)
    try:
        assert await sink.sweep(HOUR, dry_run=False) == []  # just written: young
        swept = await sink.sweep(HOUR, dry_run=False, now=time.time() + 2 * HOUR)
        assert [(i.kind, i.key) for i in swept] == [("staging_object", f"rec/{STAGING_DIR}orphan")]
        assert swept[0].age_seconds == pytest.approx(2 * HOUR, abs=60)
    finally:
        await sink.close()
    assert set(objects(s3, bucket)) == {"rec/keep.wav", f"other/{STAGING_DIR}orphan"}


async def test_s3_sweep_of_a_missing_bucket_raises(moto_endpoint, s3) -> None:
    """A listing failure is an error, not an empty sweep."""
    from streamproxy.errors import StorageError

    sink = await _sink(moto_endpoint, "missing-bucket-for-sweep")
    try:
        with pytest.raises(StorageError, match="NoSuchBucket"):
            await sink.sweep(HOUR, dry_run=True)
    finally:
        await sink.close()


def _touch(path: Path, age: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"partial")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


async def test_file_sweep_removes_old_temp_files_only(tmp_path) -> None:
    """Old temp files go (in subdirectories too); young ones and recordings stay; a dry run removes nothing."""
    old = _touch(tmp_path / ".streamproxy-aaa.tmp", 2 * HOUR)
    old_nested = _touch(tmp_path / "c-9" / ".streamproxy-bbb.tmp", 3 * HOUR)
    young = _touch(tmp_path / ".streamproxy-ccc.tmp", 60)
    recording = _touch(tmp_path / "call.wav", 10 * HOUR)
    lookalike = _touch(tmp_path / ".streamproxy-ddd.wav", 10 * HOUR)
    sink = FileSink(tmp_path)
    listed = await sink.sweep(HOUR, dry_run=True)
    assert sorted(i.key for i in listed) == [".streamproxy-aaa.tmp", "c-9/.streamproxy-bbb.tmp"]
    assert old.exists() and old_nested.exists()
    swept = await sink.sweep(HOUR, dry_run=False)
    assert {i.kind for i in swept} == {"temp_file"}
    assert not old.exists() and not old_nested.exists()
    assert young.exists() and recording.exists() and lookalike.exists()
    assert await sink.sweep(30, dry_run=False, now=time.time() + HOUR) != []  # the young one, an hour later
    assert not young.exists()


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamproxy", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def test_sweep_command_on_s3(moto_endpoint, bucket, s3) -> None:
    """`streamproxy sweep` lists with --dry-run, then aborts what is older; flags may come from the environment."""
    _start_upload(s3, bucket, "rec/crashed.wav")  # moto dates it 2010: older than any threshold
    s3.put_object(Bucket=bucket, Key=f"rec/{STAGING_DIR}fresh", Body=b"live upload")
    storage = ["--storage", f"s3://{bucket}/rec/", "--s3-endpoint-url", moto_endpoint]
    dry = _cli("sweep", *storage, "--older-than", "7d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove  multipart_upload  rec/crashed.wav" in dry.stdout
    assert "fresh" not in dry.stdout
    assert "summary: 1 found, 0 removed, 0 failed" in dry.stdout
    assert incomplete_uploads(s3, bucket) == ["rec/crashed.wav"]

    real = _cli(
        "sweep",
        "--s3-endpoint-url",
        moto_endpoint,
        env={"STREAMPROXY_STORAGE": f"s3://{bucket}/rec/", "STREAMPROXY_OLDER_THAN": "24h"},
    )
    assert real.returncode == 0, real.stderr
    assert "aborted       multipart_upload  rec/crashed.wav" in real.stdout
    assert "summary: 1 found, 1 removed, 0 failed" in real.stdout
    assert incomplete_uploads(s3, bucket) == []
    assert set(objects(s3, bucket)) == {f"rec/{STAGING_DIR}fresh"}


def test_sweep_command_on_files(tmp_path) -> None:
    """`streamproxy sweep` on a directory removes old temp files and reports them."""
    old = _touch(tmp_path / ".streamproxy-old.tmp", 2 * HOUR)
    result = _cli("sweep", "--storage", tmp_path.as_uri(), "--older-than", "90m")
    assert result.returncode == 0, result.stderr
    assert "deleted       temp_file         .streamproxy-old.tmp  (age 2h0m)" in result.stdout
    assert not old.exists()


def test_sweep_command_failures(moto_endpoint, tmp_path, s3) -> None:
    """No --older-than or a bad duration: exit 2 with one line; an unusable bucket: exit 1."""
    missing = _cli("sweep", "--storage", tmp_path.as_uri())
    assert missing.returncode == 2 and "--older-than" in missing.stderr
    bad = _cli("sweep", "--storage", tmp_path.as_uri(), "--older-than", "soon")
    assert bad.returncode == 2 and "--older-than" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    gone = _cli(
        "sweep", "--storage", "s3://no-such-bucket-sw/", "--s3-endpoint-url", moto_endpoint, "--older-than", "1d"
    )
    assert gone.returncode == 1 and "NoSuchBucket" in gone.stdout


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59.9, "59s"), (90, "1m30s"), (2 * HOUR, "2h0m"), (3 * 86400 + 4 * HOUR, "3d4h")]
)
def test_format_age(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


def test_documented_lifecycle_rule_is_valid(s3, bucket) -> None:
    """The lifecycle JSON in docs/observability.md is accepted by the S3 API as written."""
    import json
    import re

    doc = (Path(__file__).parent.parent / "docs" / "observability.md").read_text()
    (block,) = [b for b in re.findall(r"```json\n(.*?)```", doc, re.S) if "AbortIncompleteMultipartUpload" in b]
    rules = json.loads(block)
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=rules)
    stored = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    by_id = {rule["ID"]: rule for rule in stored}
    assert by_id["streamproxy-abort-incomplete-uploads"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert by_id["streamproxy-expire-staging"]["Filter"] == {"Prefix": f"calls/{STAGING_DIR}"}
