"""Integrity values a store verifies: one per part while streaming, and the whole object's at the end.

Two kinds exist in S3, and both are computed here without reading a byte twice:

* **Full object** (``crc64nvme``): the CRC of the whole recording. Each part's CRC is computed
  once, in the worker thread that handles the part, and the parts' CRCs are *combined*
  (``awscrt.checksums.combine_crc64nvme``: a CRC of ``A || B`` from ``crc(A)``, ``crc(B)`` and
  ``len(B)``, in O(log n)) into the object's value. The store recomputes the same value over the
  bytes it holds when the multipart upload completes, so a corrupted or lost part fails the upload.
* **Composite** (``crc32``, ``crc32c``, ``sha256``, and ``md5`` as Content-MD5): each part carries
  its own value, which the store checks on ``UploadPart``. The object's value is the checksum of
  the parts' raw checksums followed by ``-N`` (the same construction S3 uses for these, and for the
  ETag of a multipart upload from MD5s).

A recording stored with one ``PutObject`` has a plain full-object value in every mode.

This module computes; it names no S3 request. ``awscrt`` computes CRC32C and CRC64NVME at several
GiB/s; ``zlib``'s CRC32 and ``hashlib`` release the GIL on large buffers, so all of them run in a
worker thread next to the recording's own sha256.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from awscrt import checksums as crt

__all__ = [
    "COMPOSITE",
    "FULL_OBJECT",
    "MODES",
    "Checksum",
    "ObjectChecksum",
    "digest",
    "encode",
]

FULL_OBJECT = "FULL_OBJECT"
COMPOSITE = "COMPOSITE"

# Every mode a part can carry, and how its whole-object value is formed.
MODES = ("md5", "crc32", "crc32c", "crc64nvme", "sha256")
_TYPE = {"md5": COMPOSITE, "crc32": COMPOSITE, "crc32c": COMPOSITE, "crc64nvme": FULL_OBJECT, "sha256": COMPOSITE}
_WIDTH = {"crc32": 4, "crc32c": 4, "crc64nvme": 8}
_CRC: dict[str, Callable[[bytes | memoryview], int]] = {
    "crc32": zlib.crc32,  # releases the GIL; faster here than awscrt's crc32
    "crc32c": crt.crc32c,
    "crc64nvme": crt.crc64nvme,
}
_COMBINE: dict[str, Callable[[int, int, int], int]] = {
    "crc32": crt.combine_crc32,
    "crc32c": crt.combine_crc32c,
    "crc64nvme": crt.combine_crc64nvme,
}


def digest(mode: str, data: bytes | memoryview) -> bytes:
    """Return the raw checksum of ``data`` in ``mode`` (big-endian for CRCs, as S3 encodes them).

    Meant for a worker thread: the CRCs and hashlib do not need the event loop.
    """
    if mode in _CRC:
        return _CRC[mode](data).to_bytes(_WIDTH[mode], "big")
    if mode == "md5":
        return hashlib.md5(data).digest()
    if mode == "sha256":
        return hashlib.sha256(data).digest()
    raise ValueError(f"unknown checksum mode {mode!r}")


def encode(raw: bytes) -> str:
    """Base64, the form S3 uses in ``Content-MD5`` and ``x-amz-checksum-*``."""
    return base64.b64encode(raw).decode()


@dataclass(frozen=True)
class Checksum:
    """The whole-object checksum a store verified, as the answer and the manifest report it."""

    algorithm: str  # one of MODES
    type: str  # FULL_OBJECT or COMPOSITE
    value: str  # base64; a composite value ends in "-<parts>"

    def as_json(self) -> dict[str, str]:
        """Return the answer's ``checksum`` object."""
        return {"algorithm": self.algorithm, "type": self.type, "value": self.value}


@dataclass
class ObjectChecksum:
    """Collect the parts' raw checksums (in any order) and form the object's value at the end."""

    mode: str
    _parts: dict[int, tuple[bytes, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown checksum mode {self.mode!r}")

    @property
    def type(self) -> str:
        """``FULL_OBJECT`` or ``COMPOSITE``: what ``CreateMultipartUpload`` must announce."""
        return _TYPE[self.mode]

    def add(self, number: int, raw: bytes, length: int) -> None:
        """Record part ``number``'s checksum; parts may finish in any order."""
        self._parts[number] = (raw, length)

    def discard(self) -> None:
        """Forget the parts (a new multipart upload starts over)."""
        self._parts.clear()

    def full(self) -> bytes:
        """Return the raw full-object CRC over the parts in order (only for the CRC modes)."""
        combine = _COMBINE[self.mode]
        value: int | None = None
        for number in sorted(self._parts):
            raw, length = self._parts[number]
            crc = int.from_bytes(raw, "big")
            value = crc if value is None else combine(value, crc, length)
        return (value or 0).to_bytes(_WIDTH[self.mode], "big")

    def multipart(self) -> Checksum:
        """Return the value of the object ``CompleteMultipartUpload`` assembles from the recorded parts."""
        if self.type == FULL_OBJECT:
            return Checksum(self.mode, FULL_OBJECT, encode(self.full()))
        joined = b"".join(self._parts[n][0] for n in sorted(self._parts))
        return Checksum(self.mode, COMPOSITE, f"{encode(digest(self.mode, joined))}-{len(self._parts)}")

    def single(self, raw: bytes) -> Checksum:
        """Return the value of an object written whole by one ``PutObject`` (its only part's value)."""
        return Checksum(self.mode, FULL_OBJECT, encode(raw))
