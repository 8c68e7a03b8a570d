"""docs/operations.md stays true: its lifecycle example is the shipped file, and S3 accepts it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.helpers import fs_settings

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "operations.md"
LIFECYCLE = ROOT / "deploy" / "s3-lifecycle.json"


def json_blocks(text: str) -> list[Any]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)]


def test_documented_lifecycle_rules_are_the_shipped_file() -> None:
    """The JSON example in the guide is deploy/s3-lifecycle.json, so copying either gives the same rules."""
    assert json.loads(LIFECYCLE.read_text()) in json_blocks(DOC.read_text())


def test_s3_accepts_the_lifecycle_rules(s3: Any, bucket: str) -> None:
    """The rules apply to a bucket as they are and read back unchanged."""
    rules = json.loads(LIFECYCLE.read_text())
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=rules)
    stored = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    by_id = {rule["ID"]: rule for rule in stored}
    abort = by_id["streamproxy-abort-incomplete-uploads"]
    assert abort["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert abort["Filter"] == {"Prefix": "calls/"} and abort["Status"] == "Enabled"
    staging = by_id["streamproxy-expire-staging"]
    assert staging["Expiration"] == {"Days": 1} and staging["Filter"] == {"Prefix": "calls/.streamproxy-staging/"}


async def test_metrics_the_guide_alerts_on_exist(client_for, tmp_path) -> None:
    """Every streamproxy_* name in the guide (its alert rules) is a metric /metrics really serves."""
    client = await client_for(fs_settings(tmp_path))
    resp = await client.get("/metrics")
    served = set(re.findall(r"^# TYPE (streamproxy_\w+) ", await resp.text(), flags=re.MULTILINE))
    named = set(re.findall(r"\b(streamproxy_[a-z0-9_]+)", DOC.read_text()))
    assert named and named <= served, f"not served: {sorted(named - served)}"
