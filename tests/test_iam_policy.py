"""deploy/iam-policy.json grants every S3 action the code calls, and nothing beyond the documented set."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POLICY = json.loads((ROOT / "deploy" / "iam-policy.json").read_text())

# S3 API operation -> the IAM action that authorizes it
ACTION_FOR = {
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "UploadPartCopy": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "HeadObject": "s3:GetObject",
    "GetObject": "s3:GetObject",
    "PutObjectTagging": "s3:PutObjectTagging",
    "DeleteObject": "s3:DeleteObject",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "ListObjectsV2": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
    # signed locally; whoever opens the link is authorized by the signer's s3:GetObject
    "GeneratePresignedUrl": "s3:GetObject",
}
# Calls whose refusal the code tolerates (reported, not fatal): documented as optional grants.
OPTIONAL_ACTION_FOR = {
    "GetObjectLockConfiguration": "s3:GetBucketObjectLockConfiguration",  # `check`'s Object Lock line
}


def _operations() -> set[str]:
    """Every S3 operation streamproxy's source calls (sink.call, final writes, paginators, direct client calls)."""
    found: set[str] = set()
    for path in (ROOT / "streamproxy").rglob("*.py"):
        text = path.read_text()
        found |= set(re.findall(r"(?:\bcall|\bfinal_write)\(\s*\"([A-Z][A-Za-z0-9]+)\"", text))
        snakes = re.findall(r"get_paginator\(\s*\"([a-z0-9_]+)\"", text)
        snakes += [name for name in re.findall(r"_client\.([a-z][a-z0-9_]*)\(", text) if name != "get_paginator"]
        for snake in snakes:
            found.add("".join(word.capitalize() for word in snake.split("_")))
    return found


def _granted() -> dict[str, list[str]]:
    grants: dict[str, list[str]] = {}
    for statement in POLICY["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        for action in actions:
            grants.setdefault(action, []).append(statement["Resource"])
    return grants


def test_policy_covers_every_operation_the_code_calls() -> None:
    """A new S3 call in the code without its IAM action in the policy fails here."""
    operations = _operations()
    assert {"PutObject", "CompleteMultipartUpload", "AbortMultipartUpload", "HeadObject"} <= operations
    unknown = operations - set(ACTION_FOR) - set(OPTIONAL_ACTION_FOR)
    assert not unknown, f"map these operations to IAM actions and grant them: {unknown}"
    granted = _granted()
    for operation in operations - set(OPTIONAL_ACTION_FOR):
        assert ACTION_FOR[operation] in granted, operation
    documented = (ROOT / "docs" / "security.md").read_text()
    for action in OPTIONAL_ACTION_FOR.values():
        assert action in documented, action


def test_policy_is_least_privilege() -> None:
    """Only the documented actions; objects only under the prefix; deletes only on the staging prefix; no wildcards."""
    granted = _granted()
    assert set(granted) == {
        "s3:PutObject",
        "s3:PutObjectTagging",
        "s3:GetObject",
        "s3:AbortMultipartUpload",
        "s3:DeleteObject",
        "s3:ListBucket",
        "s3:ListBucketMultipartUploads",
    }
    assert granted["s3:DeleteObject"] == ["arn:aws:s3:::RECORDINGS-BUCKET/calls/.streamproxy-staging/*"]
    for action in ("s3:PutObject", "s3:GetObject", "s3:PutObjectTagging", "s3:AbortMultipartUpload"):
        assert granted[action] == ["arn:aws:s3:::RECORDINGS-BUCKET/calls/*"]
    assert not any("*" in action for action in granted)
    documented = (ROOT / "docs" / "security.md").read_text()
    for statement in POLICY["Statement"]:
        assert statement["Sid"] in documented, statement["Sid"]
