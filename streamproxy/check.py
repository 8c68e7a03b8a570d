"""``streamproxy check``: what a new user runs first. Validates, resolves, probes, and prints a verdict.

The configuration has already been validated when this runs (a bad flag stops the command line
with exit 2). Each step prints one line, ``ok``, ``FAIL`` or ``--`` (not tested), and the last line
is the verdict; the exit status is 0 only if nothing failed. Secrets are never printed: the
credentials line names their source and shows the access key id masked.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .config import MIB, Settings
from .errors import KeyExists, StorageError
from .sinks.fs import TEMP_PREFIX, TEMP_SUFFIX
from .wiring import build_s3_sink

if TYPE_CHECKING:
    from .sinks.s3 import S3Sink

__all__ = ["run_check"]

_CREDENTIAL_SOURCES = {
    "env": "environment variables (AWS_ACCESS_KEY_ID, ...)",
    "shared-credentials-file": "shared credentials file (~/.aws/credentials or AWS_SHARED_CREDENTIALS_FILE)",
    "config-file": "AWS config file (~/.aws/config or AWS_CONFIG_FILE)",
    "assume-role": "an assumed role (profile role_arn)",
    "assume-role-with-web-identity": "web identity token (AWS_WEB_IDENTITY_TOKEN_FILE, e.g. EKS IRSA)",
    "sso": "AWS IAM Identity Center (SSO)",
    "custom-process": "credential_process in the AWS config",
    "container-role": "container credentials (ECS task role / EKS Pod Identity)",
    "iam-role": "EC2 instance role (instance metadata)",
}

_HINTS = {
    "NoSuchBucket": "create the bucket, or fix the bucket name in --storage",
    "AccessDenied": "the credentials lack a permission on this bucket (see the IAM policy in the README)",
    "InvalidAccessKeyId": "the access key is not known to this endpoint",
    "SignatureDoesNotMatch": "the secret key does not match the access key",
    "ExpiredToken": "the session token has expired",
    "PermanentRedirect": "the bucket is in another region: set --s3-region",
    "AuthorizationHeaderMalformed": "the bucket is in another region: set --s3-region",
    "Connection": "check --s3-endpoint-url, DNS and the network path to the endpoint",
    "Timeout": "the endpoint did not answer: check the network path and --s3-endpoint-url",
    "NoCredentials": "provide credentials (environment, profile, or an instance/pod role)",
}


class _Report:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.problems: list[str] = []

    def fact(self, name: str, value: str) -> None:
        print(f"  {name:<12} {value}", file=self.out)

    def ok(self, what: str) -> None:
        print(f"ok    {what}", file=self.out)

    def skip(self, what: str) -> None:
        print(f"--    {what}", file=self.out)

    def fail(self, what: str, error: StorageError | KeyExists | str) -> None:
        if isinstance(error, str):
            message, hint = error, None
        else:
            message = error.message
            hint = _HINTS.get(getattr(error, "storage_code", None) or "")
        self.problems.append(what)
        print(f"FAIL  {what}: {message}" + (f" ({hint})" if hint else ""), file=self.out)


async def run_check(settings: Settings, out: TextIO = sys.stdout) -> int:
    """Check ``settings`` against the real storage; print the findings and return the exit status."""
    report = _Report(out)
    print(f"streamproxy check: {settings.storage}", file=out)
    budget = settings.max_buffer_bytes // settings.part_size
    report.ok(
        f"configuration: part size {settings.part_size / MIB:g} MiB, buffer budget {budget} parts "
        f"({budget * settings.part_size / MIB:g} MiB), largest upload {settings.max_upload_bytes / MIB:g} MiB"
    )
    if settings.storage.scheme == "s3":
        await _check_s3(settings, report)
    else:
        await asyncio.to_thread(_check_directory, settings.storage.path, settings.write_probe, report)
    if report.problems:
        print(f"verdict: FAILED ({len(report.problems)} problem(s): {', '.join(report.problems)})", file=out)
        return 1
    tested = "" if settings.write_probe else " (writes not tested: add --write-probe)"
    print(f"verdict: OK, streamproxy can store recordings in {settings.storage}{tested}", file=out)
    return 0


async def _check_s3(settings: Settings, report: _Report) -> None:
    from aiobotocore.session import get_session

    from .sinks.s3 import STAGING_DIR

    session = get_session()
    endpoint = settings.endpoint_url
    source = "--s3-endpoint-url" if settings.s3_endpoint_url else "environment" if endpoint else "AWS default"
    report.fact("endpoint", f"{endpoint or 'AWS (from the region)'} ({source})")
    region = settings.s3_region or session.get_config_variable("region")
    report.fact("region", region or "not set (us-east-1 is assumed)")
    if os.environ.get("AWS_PROFILE"):
        report.fact("profile", os.environ["AWS_PROFILE"])
    try:
        credentials = await session.get_credentials()
    except Exception as exc:
        report.fail("credentials", f"could not be resolved: {type(exc).__name__}: {exc}")
        return
    if credentials is None:
        report.fail("credentials", "none found (tried environment, profile files, web identity, container, instance)")
        return
    frozen = await credentials.get_frozen_credentials()
    key_id = frozen.access_key or ""
    masked = f"{key_id[:4]}...{key_id[-4:]}" if len(key_id) >= 12 else "***"
    label = _CREDENTIAL_SOURCES.get(credentials.method, credentials.method)
    report.ok(f"credentials: from {label}, access key {masked}" + (", with session token" if frozen.token else ""))

    sink = build_s3_sink(settings)
    bucket, prefix = settings.storage.bucket, settings.storage.prefix
    await sink.start()
    try:
        try:
            await sink.admin.probe()
        except StorageError as exc:
            report.fail("bucket", exc)
            return
        report.ok(f"bucket: {bucket!r} exists and answers (listed incomplete uploads under {prefix or '/'!r})")
        await _object_lock(sink, settings, report)
        if not settings.write_probe:
            report.skip("write: not tested (add --write-probe to put and delete a probe object)")
            return
        key = f"{prefix}{STAGING_DIR}check-{uuid.uuid4().hex}"
        await _step(report, "write", f"put and deleted {key!r}", _put_delete(sink, bucket, key))
        await _step(report, "multipart", "created and aborted a multipart upload", _create_abort(sink, bucket, key))
    finally:
        await sink.close()


async def _object_lock(sink: S3Sink, settings: Settings, report: _Report) -> None:
    """Say whether the bucket has Object Lock; fail only if the settings ask for retention it cannot give."""
    bucket = settings.storage.bucket
    wanted = settings.object_lock_mode is not None or settings.object_lock_legal_hold
    try:
        config = await sink.admin.object_lock()
    except StorageError as exc:
        if wanted:
            report.fail("object lock", exc)
        else:
            report.skip(f"object lock: not checked ({exc.storage_code or exc.message})")
        return
    if config is None:
        if wanted:
            report.fail(
                "object lock",
                f"not enabled on {bucket!r}, but --object-lock-mode/--object-lock-legal-hold is set "
                "(Object Lock is chosen when a bucket is created: use a bucket created with it)",
            )
        else:
            report.ok(f"object lock: not enabled on {bucket!r} (recordings are not write-once)")
        return
    retention = config.get("Rule", {}).get("DefaultRetention", {})
    default = (
        f"default retention {retention['Mode']} {retention.get('Days') or retention.get('Years')}"
        f" {'days' if 'Days' in retention else 'years'}"
        if retention.get("Mode")
        else "no default retention"
    )
    ours = (
        f"; each recording: {settings.object_lock_mode} {settings.object_lock_days} days"
        if settings.object_lock_mode
        else ""
    )
    hold = "; legal hold on each recording" if settings.object_lock_legal_hold else ""
    report.ok(f"object lock: enabled on {bucket!r} ({default}{ours}{hold})")


async def _put_delete(sink: S3Sink, bucket: str, key: str) -> None:
    await sink.client.call("PutObject", Bucket=bucket, Key=key, Body=b"streamproxy check\n", ContentType="text/plain")
    await sink.client.call("DeleteObject", Bucket=bucket, Key=key)


async def _create_abort(sink: S3Sink, bucket: str, key: str) -> None:
    created = await sink.client.call("CreateMultipartUpload", Bucket=bucket, Key=key)
    await sink.client.call("AbortMultipartUpload", Bucket=bucket, Key=key, UploadId=created["UploadId"])


async def _step(report: _Report, name: str, success: str, action: Awaitable[None]) -> None:
    try:
        await action
    except (StorageError, KeyExists) as exc:
        report.fail(name, exc)
        return
    report.ok(f"{name}: {success}")


def _writable(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def _check_directory(root: Path, write_probe: bool, report: _Report) -> None:
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != root:
        if not _writable(existing):
            report.fail(
                "directory", f"{root} does not exist and {existing} is not a writable directory to create it in"
            )
            return
        if not write_probe:
            report.ok(f"directory: {root} does not exist yet; serve will create it in {existing}")
            report.skip("write: not tested (add --write-probe to create the directory and write a probe file)")
            return
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            report.fail("directory", f"could not create {root}: {exc.strerror or exc}")
            return
        report.ok(f"directory: created {root} (serve would have created it too)")
    if not root.is_dir():
        report.fail("directory", f"{root} is not a directory")
        return
    if not _writable(root):
        report.fail("directory", f"{root} is not writable by this user (uid {os.getuid()})")
        return
    free = shutil.disk_usage(root).free
    report.ok(f"directory: {root} exists and is writable ({free / 2**30:.1f} GiB free)")
    if not write_probe:
        report.skip("write: not tested (add --write-probe to create, fsync and remove a probe file)")
        return
    probe = root / f"{TEMP_PREFIX}check-{uuid.uuid4().hex}{TEMP_SUFFIX}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"streamproxy check\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        probe.unlink(missing_ok=True)
        report.fail("write", f"{probe}: {exc.strerror or exc}")
        return
    report.ok(f"write: created, fsynced and removed {probe.name}")
