"""Capabilities an operator fixes instead of probing them: read from a JSON file, or AWS's documented set.

``--s3-capabilities`` chooses: ``probe`` (the default: probe at start), ``aws`` (assume what AWS S3
documents, no probe), or the path of a JSON file, usually written by
``streamproxy check --save-capabilities FILE`` and reviewed. This module imports no botocore, so
the configuration can validate a pin without loading the S3 client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .capabilities import AWS_DOCUMENTED, CHECKSUM_MODES, FLAGS, Capabilities

__all__ = ["AWS_DOCUMENTED", "capabilities_from_json", "capabilities_to_json", "load_pin"]

_SETS = ("checksums", "accepted_checksums")


def capabilities_to_json(capabilities: Capabilities) -> dict[str, Any]:
    """Return the JSON form of ``capabilities`` that ``capabilities_from_json`` reads back (for pinning)."""
    out: dict[str, Any] = {name: getattr(capabilities, name) for name in FLAGS}
    out.update({name: sorted(getattr(capabilities, name)) for name in _SETS})
    return out


def capabilities_from_json(data: Any) -> Capabilities:
    """Read pinned capabilities (``probed=False``); raise ``ValueError`` naming what is wrong.

    Every flag must be given: a pin that silently defaulted a missing flag to "supported" could
    turn duplicate protection off without anyone deciding it.
    """
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    unknown = sorted(set(data) - set(FLAGS) - set(_SETS))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}")
    missing = [name for name in (*FLAGS, "checksums") if name not in data]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    for name in FLAGS:
        if not isinstance(data[name], bool):
            raise ValueError(f"{name} must be true or false")
    sets: dict[str, frozenset[str]] = {}
    for name in _SETS:
        value = data.get(name, data["checksums"])  # accepted defaults to the verified modes
        if not isinstance(value, list) or not all(isinstance(m, str) and m in CHECKSUM_MODES for m in value):
            raise ValueError(f"{name} must be a list of {', '.join(CHECKSUM_MODES)}")
        sets[name] = frozenset(value)
    if not sets["checksums"] <= sets["accepted_checksums"]:
        raise ValueError("checksums (verified) must be a subset of accepted_checksums")
    return Capabilities.from_flags(
        data, checksums=sets["checksums"], accepted_checksums=sets["accepted_checksums"], probed=False
    )


def load_pin(choice: str) -> Capabilities | None:
    """Return the capabilities ``--s3-capabilities`` fixes, or None for ``probe``; ``ValueError`` if unusable."""
    if choice == "probe":
        return None
    if choice == "aws":
        return AWS_DOCUMENTED
    try:
        data = json.loads(Path(choice).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {choice!r}: {exc}") from exc
    return capabilities_from_json(data)
