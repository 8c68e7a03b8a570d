"""How uploads adapt to what the store can do: one ``Strategy``, decided from ``Capabilities`` and the flags.

What each gap changes (measured stores in docs/storage-compatibility.md):

* **No conditional PutObject** (Swift refuses ``If-None-Match`` on PutObject with 501): a recording
  that fits one part goes as a one-part multipart upload, whose conditional complete the store
  honours. If the complete is not conditional either, a plain PutObject after a HeadObject.
* **No conditional CompleteMultipartUpload** (Ceph 16, Garage, GCS, s3rver ignore it): without
  ``--overwrite``, a ``HeadObject`` before ``CreateMultipartUpload`` refuses a known name early, and a
  second one right before the final write, under the per-key lock, refuses it for certain within this
  process. Across several servers a window remains between that HeadObject and the final write
  (docs/design.md); ``--require-conditional-writes`` refuses to start on such a store.
* **No UploadPartCopy** (s3rver): the file-before-name path moves the staged object with CopyObject
  (up to 5 GiB, S3's limit for one copy) or, beyond, streams it back through a multipart upload.
  CopyObject's ``If-None-Match`` is honoured by no measured store without UploadPartCopy, so that
  move is always checked with HeadObject.
* **No tagging** (Swift, R2, B2): sha256 and size of a multipart recording go into a sidecar object
  ``<key>.sha256`` (``sha256sum`` format, size in its metadata) instead of object tags.
* **No AbortMultipartUpload** (s3rver): not called; logged once per sink with the reason.

``--checksum auto`` picks full-object CRC64NVME on AWS, else the first mode of ``AUTO_ORDER`` the
probe found verified, else none.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from .capabilities import AUTO_ORDER, AWS_DOCUMENTED, Capabilities

__all__ = [
    "BEST_EFFORT",
    "COPY_OBJECT_LIMIT",
    "NO_PROTECTION",
    "SIDECAR_SUFFIX",
    "STORE_ENFORCED",
    "Strategy",
    "is_aws",
    "protection_gaps",
    "resolve_checksum",
    "strategy",
]

COPY_OBJECT_LIMIT = 5 * 1024**3  # S3's limit for one CopyObject
SIDECAR_SUFFIX = ".sha256"

STORE_ENFORCED = "store-enforced"
BEST_EFFORT = "best-effort"
NO_PROTECTION = "none"


def is_aws(endpoint_url: str | None) -> bool:
    """Whether the endpoint is AWS S3 itself (unset, or a host under amazonaws.com)."""
    if not endpoint_url:
        return True
    host = (urlsplit(endpoint_url).hostname or "").lower()
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


def resolve_checksum(choice: str, capabilities: Capabilities | None, endpoint_url: str | None) -> str:
    """Return the checksum mode uploads use: an explicit choice as given, ``auto`` adapted to the store.

    On AWS, full-object CRC64NVME (verified over the whole object at completion). Elsewhere the
    strongest mode in ``AUTO_ORDER`` the probe found; a store never probed gets MD5, which every
    S3-compatible store measured verifies; a store that verifies none of them gets none.
    """
    if choice != "auto":
        return choice
    if is_aws(endpoint_url):
        return "crc64nvme"
    if capabilities is None:
        return "md5"
    return next((mode for mode in AUTO_ORDER if mode in capabilities.checksums), "none")


@dataclass(frozen=True)
class Strategy:
    """The decisions one sink's writers follow (see the module docstring)."""

    checksum: str  # a CHECKSUM_MODES entry, or "none"
    conditional_put: bool  # PutObject carries If-None-Match: *
    conditional_complete: bool  # CompleteMultipartUpload carries If-None-Match: *
    single_put: bool  # a one-part recording goes as PutObject (else as a one-part multipart upload)
    head_checks: bool  # a final write the store does not guard is checked with HeadObject first
    part_copy: bool  # the staged path copies with UploadPartCopy (else CopyObject, or streams back)
    tagging: bool  # sha256/size as object tags after a multipart upload (else the sidecar)
    abort: bool  # AbortMultipartUpload removes an upload

    def guarded(self, operation: str) -> bool:
        """Whether the store itself refuses to replace a key on this final write."""
        if operation == "PutObject":
            return self.conditional_put
        if operation == "CompleteMultipartUpload":
            return self.conditional_complete
        return False  # CopyObject: no store without UploadPartCopy honours its condition

    @property
    def protection(self) -> str:
        """Duplicate protection: ``store-enforced``, ``best-effort`` (HeadObject checks) or ``none``."""
        if not self.head_checks and not self.conditional_complete:
            return NO_PROTECTION  # --overwrite
        small = self.conditional_put if self.single_put else self.conditional_complete
        if small and self.conditional_complete and self.part_copy:
            return STORE_ENFORCED
        return BEST_EFFORT


def protection_gaps(capabilities: Capabilities) -> list[str]:
    """Why a store cannot refuse duplicates itself on every path (empty: it can)."""
    gaps = []
    if not capabilities.conditional_complete:
        gaps.append("CompleteMultipartUpload does not honour If-None-Match")
        if not capabilities.conditional_put:
            gaps.append("PutObject does not honour If-None-Match")
    if not capabilities.upload_part_copy:
        gaps.append("no UploadPartCopy, so a recording sent before its name is moved by an unguarded CopyObject")
    return gaps


def strategy(
    capabilities: Capabilities | None, *, overwrite: bool, checksum: str, endpoint_url: str | None
) -> Strategy:
    """Decide how uploads go on this store; ``capabilities=None`` assumes everything S3 documents."""
    caps = capabilities or AWS_DOCUMENTED
    return Strategy(
        checksum=resolve_checksum(checksum, capabilities, endpoint_url),
        conditional_put=caps.conditional_put and not overwrite,
        conditional_complete=caps.conditional_complete and not overwrite,
        # Swift: PutObject cannot be guarded but a one-part multipart upload's complete can.
        single_put=overwrite or caps.conditional_put or not caps.conditional_complete,
        head_checks=not overwrite,
        part_copy=caps.upload_part_copy,
        tagging=caps.tagging,
        abort=caps.abort_multipart,
    )
