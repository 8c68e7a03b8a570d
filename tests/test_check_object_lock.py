"""`streamproxy check` reports the bucket's Object Lock, and fails when retention is asked of a bucket without it."""

from __future__ import annotations

import io
from typing import Any

from streamproxy.check import run_check
from tests.helpers import s3_settings


async def _check(settings: Any) -> tuple[int, str]:
    out = io.StringIO()
    status = await run_check(settings, out)
    return status, out.getvalue()


async def test_bucket_without_object_lock(moto_endpoint, bucket) -> None:
    """A plain bucket: an informational line, and still OK when no retention is configured."""
    status, text = await _check(s3_settings(moto_endpoint, bucket))
    assert status == 0, text
    assert f"ok    object lock: not enabled on '{bucket}' (recordings are not write-once)" in text


async def test_retention_asked_of_a_bucket_without_object_lock_fails(moto_endpoint, bucket) -> None:
    """--object-lock-mode on a bucket created without Object Lock: FAIL and a failed verdict."""
    settings = s3_settings(moto_endpoint, bucket, object_lock_mode="COMPLIANCE", object_lock_days=10)
    status, text = await _check(settings)
    assert status == 1
    assert f"FAIL  object lock: not enabled on '{bucket}', but --object-lock-mode" in text
    assert text.strip().splitlines()[-1].startswith("verdict: FAILED (1 problem(s): object lock)")


async def test_locked_bucket_with_default_retention(moto_endpoint, locked_bucket, s3) -> None:
    """An Object Lock bucket: enabled, its default rule, and what each recording gets."""
    s3.put_object_lock_configuration(
        Bucket=locked_bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 30}},
        },
    )
    settings = s3_settings(
        moto_endpoint, locked_bucket, object_lock_mode="COMPLIANCE", object_lock_days=3650, object_lock_legal_hold=True
    )
    status, text = await _check(settings)
    assert status == 0, text
    assert (
        f"ok    object lock: enabled on '{locked_bucket}' (default retention GOVERNANCE 30 days; "
        "each recording: COMPLIANCE 3650 days; legal hold on each recording)"
    ) in text


async def test_locked_bucket_without_default_rule(moto_endpoint, locked_bucket) -> None:
    """Enabled without a default rule: said so."""
    status, text = await _check(s3_settings(moto_endpoint, locked_bucket))
    assert status == 0, text
    assert f"ok    object lock: enabled on '{locked_bucket}' (no default retention)" in text
