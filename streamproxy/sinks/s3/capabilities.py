"""What an S3-compatible store supports: probed at start, never assumed.

``Capabilities`` is produced by ``sinks.s3.probe`` (or pinned by the operator) and consumed by the
writer, which adapts its strategy to it (see docs/storage-compatibility.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["AUTO_ORDER", "AWS_DOCUMENTED", "CHECKSUM_MODES", "FLAGS", "Capabilities"]

# Part-checksum modes a store can be probed for. "crc64nvme" is the full-object CRC64NVME
# (x-amz-checksum-type: FULL_OBJECT); "crc32", "crc32c" and "sha256" are composite (per part).
CHECKSUM_MODES = ("md5", "crc32", "crc32c", "crc64nvme", "sha256")
# --checksum auto picks the first of these that the store supports: full-object CRC, composite CRC, MD5.
AUTO_ORDER = ("crc64nvme", "crc32c", "crc32", "md5")


@dataclass(frozen=True)
class Capabilities:
    """One flag per S3 feature streamproxy relies on."""

    conditional_put: bool  # PutObject with If-None-Match: * answers 412 on an existing key
    conditional_complete: bool  # CompleteMultipartUpload with If-None-Match: * answers 412 on an existing key
    checksums: frozenset[str]  # the CHECKSUM_MODES the store accepts through CompleteMultipartUpload
    tagging: bool  # PutObjectTagging
    upload_part_copy: bool  # UploadPartCopy
    list_multipart_uploads: bool  # ListMultipartUploads
    abort_multipart: bool  # AbortMultipartUpload removes the upload
    head_bucket: bool  # HeadBucket
    probed: bool = True  # False: pinned or assumed by the operator instead of probed
    # Added with the probe (stores branch). `checksums` holds the modes the store accepts *and* verifies
    # (it refuses a wrong value): only those protect a recording, so only those count for --checksum auto.
    # This holds every mode the store accepts at all, verified or not: Ceph 16 accepts CRC and SHA256
    # headers without checking them, s3rver and moto check nothing, not even Content-MD5. An explicit
    # --checksum outside this set is refused at start; one inside it but outside `checksums` works
    # without protection.
    accepted_checksums: frozenset[str] = frozenset()

    @classmethod
    def from_flags(
        cls,
        flags: Mapping[str, bool],
        *,
        checksums: frozenset[str],
        accepted_checksums: frozenset[str],
        probed: bool,
    ) -> Capabilities:
        """Build from one value per name in ``FLAGS`` (probed, pinned or assumed); ``KeyError`` if one is missing."""
        return cls(
            **{name: flags[name] for name in FLAGS},
            checksums=checksums,
            accepted_checksums=accepted_checksums,
            probed=probed,
        )


# The yes/no features of ``Capabilities``, in the order ``check`` shows them.
FLAGS = (
    "conditional_put",
    "conditional_complete",
    "tagging",
    "upload_part_copy",
    "list_multipart_uploads",
    "abort_multipart",
    "head_bucket",
)

# What AWS S3 documents (docs/storage-compatibility.md): every feature, every checksum verified.
# Also what the writer assumes of a store it has no capabilities for.
AWS_DOCUMENTED = Capabilities.from_flags(
    dict.fromkeys(FLAGS, True),
    checksums=frozenset(CHECKSUM_MODES),
    accepted_checksums=frozenset(CHECKSUM_MODES),
    probed=False,
)
