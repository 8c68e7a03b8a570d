"""What the S3 sink needs to know, taken from the settings by name: one place to add an S3 option.

``S3Options`` has no defaults of its own: every field that repeats a ``Settings`` field carries
that field's name and is copied by ``from_settings``; only the derived fields are computed there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ...tags import encode_tagging, merge_tags

if TYPE_CHECKING:  # sinks import no configuration at run time; the wiring hands the settings in
    from ...config import Settings

__all__ = ["S3Options"]

# Fields computed from the settings rather than copied by name.
_DERIVED = frozenset({"bucket", "prefix", "endpoint_url", "connect_timeout", "max_pool_connections"})


@dataclass(frozen=True)
class S3Options:
    """The S3 part of the settings (field names are ``Settings`` names where they repeat one)."""

    bucket: str
    prefix: str
    endpoint_url: str | None
    s3_region: str | None
    part_size: int
    part_concurrency: int
    overwrite: bool
    checksum: str
    max_pool_connections: int
    s3_max_attempts: int
    connect_timeout: float
    s3_timeout: float  # bounds every phase of one S3 request (see transport.PartBody.stall_timeout)
    s3_ca_bundle: str | None  # PEM file of CAs to trust; certificates are verified either way
    url_mode: str
    presign_expires: int
    sse: str | None
    sse_kms_key_id: str | None
    storage_class: str | None
    object_lock_mode: str | None
    object_lock_days: int | None
    object_lock_legal_hold: bool
    tags: tuple[tuple[str, str], ...]

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> S3Options:
        """Take every same-named field from ``settings``; ``overrides`` replace any (tests, tools)."""
        copied = {f.name: getattr(settings, f.name) for f in fields(cls) if f.name not in _DERIVED}
        capacity = settings.max_buffer_bytes // settings.part_size
        values: dict[str, Any] = {
            **copied,
            "bucket": settings.storage.bucket,
            "prefix": settings.storage.prefix,
            "endpoint_url": settings.endpoint_url,
            "connect_timeout": min(10.0, settings.s3_timeout),
            # every buffer in the budget may be on the wire at once, plus room for control calls
            "max_pool_connections": capacity + 8,
        }
        values.update(overrides)
        return cls(**values)

    def encryption_args(self) -> dict[str, str]:
        """Server-side encryption arguments: every object streamproxy writes gets them, staging included."""
        args: dict[str, str] = {}
        if self.sse:
            args["ServerSideEncryption"] = self.sse
        if self.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.sse_kms_key_id
        return args

    def object_args(self, tags: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Arguments for a final object: encryption, storage class, retention, legal hold and tags.

        Staging objects get only the encryption: they are deleted after the copy, which a
        retention period would forbid.
        """
        args: dict[str, Any] = self.encryption_args()
        if self.storage_class:
            args["StorageClass"] = self.storage_class
        if self.object_lock_mode and self.object_lock_days:
            args["ObjectLockMode"] = self.object_lock_mode
            args["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(days=self.object_lock_days)
        if self.object_lock_legal_hold:
            args["ObjectLockLegalHoldStatus"] = "ON"
        merged = merge_tags(dict(self.tags), tags or {})
        if merged:
            args["Tagging"] = encode_tagging(merged.items())
        return args
