"""`streamproxy check`: findings, a clear verdict, a non-zero exit on any problem, and no secrets printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import incomplete_uploads, objects
from tests.servers import free_port

ACCESS_KEY = "AKIACHECKTEST1234WXYZ"
SECRET_KEY = "check-secret-value-never-printed"


def _check(
    *args: str, env: dict[str, str] | None = None, drop: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, **(env or {})}
    for name in drop:
        environment.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "streamproxy", "check", "--log-format", "json", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )


def _verdict(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout.strip().splitlines()[-1]


def test_check_passes_on_a_usable_bucket(moto_endpoint, bucket, s3) -> None:
    """Reachable bucket, environment credentials: exit 0, the credential source named, the secret never shown."""
    result = _check("--storage", f"s3://{bucket}/rec/", "--s3-endpoint-url", moto_endpoint)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok    credentials: from environment variables" in result.stdout
    assert "AKIA...WXYZ" in result.stdout
    assert f"ok    bucket: '{bucket}' exists" in result.stdout
    assert "--    write: not tested" in result.stdout
    assert _verdict(result).startswith(f"verdict: OK, streamproxy can store recordings in s3://{bucket}/rec/")
    for output in (result.stdout, result.stderr):
        assert SECRET_KEY not in output and ACCESS_KEY not in output


def test_write_probe_puts_and_deletes(moto_endpoint, bucket, s3) -> None:
    """--write-probe writes and removes a probe object and a multipart upload, leaving the bucket as it was."""
    result = _check("--storage", f"s3://{bucket}/rec/", "--s3-endpoint-url", moto_endpoint, "--write-probe")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok    write: put and deleted 'rec/.streamproxy-staging/check-" in result.stdout
    assert "ok    multipart: created and aborted a multipart upload" in result.stdout
    assert _verdict(result) == f"verdict: OK, streamproxy can store recordings in s3://{bucket}/rec/"
    assert objects(s3, bucket) == {} and incomplete_uploads(s3, bucket) == []


def test_missing_bucket_fails(moto_endpoint, s3) -> None:
    """A bucket that does not exist: FAIL with the S3 code and a hint, exit 1."""
    result = _check("--storage", "s3://check-missing-bucket/", "--s3-endpoint-url", moto_endpoint, "--write-probe")
    assert result.returncode == 1
    assert "FAIL  bucket:" in result.stdout and "NoSuchBucket" in result.stdout and "create the bucket" in result.stdout
    assert _verdict(result).startswith("verdict: FAILED (1 problem(s): bucket)")


def test_unreachable_endpoint_fails(bucket) -> None:
    """Nothing listens at the endpoint: FAIL naming the connection problem, exit 1."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    result = _check("--storage", f"s3://{bucket}/", "--s3-endpoint-url", endpoint, "--s3-max-attempts", "1")
    assert result.returncode == 1
    assert "FAIL  bucket:" in result.stdout and "cannot reach storage" in result.stdout
    assert "verdict: FAILED" in _verdict(result)


def test_no_credentials_fails(moto_endpoint, bucket) -> None:
    """No credential source at all: FAIL credentials, exit 1, and no network traffic attempted beyond loopback."""
    result = _check(
        "--storage",
        f"s3://{bucket}/",
        "--s3-endpoint-url",
        moto_endpoint,
        drop=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    )
    assert result.returncode == 1
    assert "FAIL  credentials: none found" in result.stdout
    assert "verdict: FAILED (1 problem(s): credentials)" in _verdict(result)


def test_bad_configuration_is_exit_2(tmp_path) -> None:
    """Configuration errors stop check like serve: one line, exit 2."""
    result = _check("--storage", tmp_path.as_uri(), "--part-size", "1MiB")
    assert result.returncode == 2 and result.stderr.startswith("streamproxy: error: --part-size")


def test_directory_checks(tmp_path: Path) -> None:
    """A writable directory passes (with a write probe that leaves nothing); one that will be created passes too."""
    result = _check("--storage", tmp_path.as_uri(), "--write-probe")
    assert result.returncode == 0, result.stdout
    assert f"ok    directory: {tmp_path} exists and is writable" in result.stdout
    assert "ok    write: created, fsynced and removed .streamproxy-check-" in result.stdout
    assert list(tmp_path.iterdir()) == []
    later = tmp_path / "new" / "rec"
    result = _check("--storage", later.as_uri())
    assert result.returncode == 0 and "does not exist yet; serve will create it" in result.stdout
    assert not later.exists()
    result = _check("--storage", later.as_uri(), "--write-probe")
    assert result.returncode == 0 and f"ok    directory: created {later}" in result.stdout
    assert "ok    write: created, fsynced and removed" in result.stdout
    assert later.is_dir() and list(later.iterdir()) == []


@pytest.mark.parametrize("target", ["file", "below-file"])
def test_unusable_directory_fails(tmp_path: Path, target: str) -> None:
    """A path that is a file, or lies below a file, cannot hold recordings: exit 1."""
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    root = blocker if target == "file" else blocker / "rec"
    result = _check("--storage", root.as_uri())
    assert result.returncode == 1
    assert "FAIL  directory:" in result.stdout and "verdict: FAILED" in _verdict(result)
