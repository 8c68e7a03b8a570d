"""S3 object tags: parsing ``--tag KEY=VALUE``, sanitizing field values, and S3's limits.

S3 allows 10 tags per object; a key has 1 to 128 characters, a value 0 to 256, both made of
letters, digits, spaces and ``_ . : / = + - @``, and keys starting with ``aws:`` are reserved.
streamproxy itself writes up to three tags (``sha256``, ``size``, ``audio``) after a direct
multipart upload, so configured tags are limited to ``MAX_CONFIGURED_TAGS``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, urlencode

__all__ = [
    "MAX_CONFIGURED_TAGS",
    "MAX_TAGS",
    "RESERVED_TAGS",
    "encode_tagging",
    "merge_tags",
    "parse_tag",
    "sanitize_tag_key",
    "sanitize_tag_value",
]

MAX_TAGS = 10
RESERVED_TAGS = ("sha256", "size", "audio")
MAX_CONFIGURED_TAGS = MAX_TAGS - len(RESERVED_TAGS)
MAX_KEY_CHARS = 128
MAX_VALUE_CHARS = 256
_UNSAFE = re.compile(r"[^\w .:/=+\-@]")


def sanitize_tag_key(name: str) -> str:
    """Return ``name`` reduced to S3's tag-key rules (unsafe characters become ``_``)."""
    key = _UNSAFE.sub("_", name).strip()[:MAX_KEY_CHARS]
    if key.lower().startswith("aws:"):
        key = "_" + key[1:]
    return key


def sanitize_tag_value(value: str) -> str:
    """Return ``value`` reduced to S3's tag-value rules (unsafe characters become ``_``, at most 256)."""
    return _UNSAFE.sub("_", value).strip()[:MAX_VALUE_CHARS]


def parse_tag(text: str) -> tuple[str, str]:
    """Parse ``KEY=VALUE`` as given on the command line; raise ``ValueError`` naming the rule it breaks."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"{text!r} is not KEY=VALUE")
    if sanitize_tag_key(key) != key or sanitize_tag_value(value) != value:
        raise ValueError(
            f"{text!r}: S3 tags take 1-128 (key) and 0-256 (value) letters, digits, spaces and _ . : / = + - @"
            " and keys must not start with aws:"
        )
    if key in RESERVED_TAGS:
        raise ValueError(f"{text!r}: the tag {key!r} is written by streamproxy itself")
    return key, value


def merge_tags(*sets: Mapping[str, str]) -> dict[str, str]:
    """Merge tag sets (later ones win) and keep at most S3's 10, the last-given first."""
    merged: dict[str, str] = {}
    for tags in sets:
        for key, value in tags.items():
            merged.pop(key, None)
            merged[key] = value
    return dict(list(merged.items())[-MAX_TAGS:])


def encode_tagging(tags: Iterable[tuple[str, str]]) -> str:
    """Encode tags for the ``x-amz-tagging`` header (a URL query string)."""
    return urlencode(list(tags), quote_via=quote)
