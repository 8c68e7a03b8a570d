"""The capability probe: what this S3-compatible store really does, found with real calls.

Every feature streamproxy relies on is tried once under ``<prefix>.streamproxy-probe/<id>/`` and
the probe objects are removed afterwards. A feature counts as present only if the store does
what S3 documents; a store that *ignores* a header (answers 200 and does something else) is
reported apart from one that *refuses* it (answers an error), because the two need different
adaptations: an ignored ``If-None-Match`` silently replaces a recording, a refused one fails it.

The probe never raises for a missing feature; it raises ``ProbeError`` only when the store cannot
be probed at all (the bucket is unreachable or the first write is refused), which is a
configuration problem and not a capability.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from .capabilities import CHECKSUM_MODES, Capabilities
from .pin import capabilities_to_json

__all__ = [
    "PROBE_DIR",
    "ProbeError",
    "ProbeReport",
    "capability_rows",
    "log_fields",
    "probe",
]

PROBE_DIR = ".streamproxy-probe/"
_BODY = b"streamproxy capability probe\n" * 37  # about 1 KiB: a single (last) part needs no minimum size
_OTHER = _BODY[::-1]  # a checksum of these bytes sent with _BODY is wrong: a verifying store refuses it


class ProbeError(Exception):
    """The store could not be probed at all (not a missing feature)."""

    def __init__(self, step: str, error: BaseException) -> None:
        super().__init__(f"{step}: {_describe(error)}")
        self.step = step
        self.error = error


@dataclass
class ProbeReport:
    """The capabilities plus one line of evidence per feature, for ``check`` and the log."""

    capabilities: Capabilities
    evidence: dict[str, str] = field(default_factory=dict)
    leftovers: list[str] = field(default_factory=list)  # probe objects or uploads that could not be removed


def _describe(error: BaseException) -> str:
    if isinstance(error, ClientError):
        err = error.response.get("Error", {})
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"{err.get('Code', '?')} (HTTP {status})" + (f": {err['Message']}" if err.get("Message") else "")
    return f"{type(error).__name__}: {error}"


def _code(error: BaseException) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def _is_precondition_failed(error: BaseException) -> bool:
    if not isinstance(error, ClientError):
        return False
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 412 or _code(error) == "PreconditionFailed"


def _crc(mode: str, data: bytes) -> bytes:
    if mode == "crc32":
        return zlib.crc32(data).to_bytes(4, "big")
    from awscrt import checksums  # CRC32C and CRC64NVME are not in the standard library

    if mode == "crc32c":
        return int(checksums.crc32c(data)).to_bytes(4, "big")
    return int(checksums.crc64nvme(data)).to_bytes(8, "big")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _part_checksum(mode: str, data: bytes) -> dict[str, str]:
    if mode == "md5":
        return {"ContentMD5": _b64(hashlib.md5(data).digest())}
    if mode == "sha256":
        return {"ChecksumSHA256": _b64(hashlib.sha256(data).digest())}
    return {f"Checksum{mode.upper()}": _b64(_crc(mode, data))}


class _Probe:
    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket = bucket
        self.base = f"{prefix}{PROBE_DIR}{uuid.uuid4().hex}/"
        self.evidence: dict[str, str] = {}
        self.objects: set[str] = set()
        self.uploads: dict[str, str] = {}  # upload id -> key, until completed or aborted
        self.abort_works = True
        self.verified: set[str] = set()  # checksum modes whose wrong value the store refused

    def key(self, name: str) -> str:
        return self.base + name

    async def call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """Call ``operation`` (its S3 name, as in the IAM policy) on the bucket; errors stay botocore's."""
        snake = "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")
        method: Callable[..., Awaitable[dict[str, Any]]] = getattr(self.client, snake)
        try:
            return await method(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            # A server error (after botocore's retries) says nothing about the feature: reading it as
            # "missing" would weaken the strategy for good, so the probe fails instead. 501 is an answer.
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if status >= 500 and status != 501:
                raise ProbeError(operation, exc) from exc
            raise

    async def put(self, name: str, **kwargs: Any) -> dict[str, Any]:
        key = self.key(name)
        answer = await self.call("PutObject", Key=key, Body=_BODY, **kwargs)
        self.objects.add(key)
        return answer

    async def multipart(
        self,
        name: str,
        *,
        create: dict[str, Any] | None = None,
        part: dict[str, Any] | None = None,
        complete: dict[str, Any] | None = None,
        entry: dict[str, str] | None = None,
        copy_from: str | None = None,
        wrong: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create, upload (or copy) one part and complete; ``cleanup`` aborts what did not complete.

        With ``wrong`` (a part checksum of other bytes), part 1 is first sent with that value: a store
        that verifies refuses it, one that only accepts the header stores it (and part 1 is then sent
        again, correctly, which replaces it).
        """
        key = self.key(name)
        upload_id = (await self.call("CreateMultipartUpload", Key=key, **(create or {})))["UploadId"]
        self.uploads[upload_id] = key
        if wrong is not None and name.startswith("checksum-"):
            mode = name.removeprefix("checksum-")
            try:
                await self.call("UploadPart", Key=key, UploadId=upload_id, PartNumber=1, Body=_BODY, **wrong)
            except ClientError:
                self.verified.add(mode)
        if copy_from is None:
            answer = await self.call(
                "UploadPart", Key=key, UploadId=upload_id, PartNumber=1, Body=_BODY, **(part or {})
            )
            etag = answer["ETag"]
        else:
            answer = await self.call(
                "UploadPartCopy",
                Key=key,
                UploadId=upload_id,
                PartNumber=1,
                CopySource={"Bucket": self.bucket, "Key": copy_from},
            )
            etag = answer["CopyPartResult"]["ETag"]
        result = await self.call(
            "CompleteMultipartUpload",
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag, **(entry or {})}]},
            **(complete or {}),
        )
        del self.uploads[upload_id]
        self.objects.add(key)
        return result

    # --- one method per capability; each records its evidence and returns the flag -------------

    async def works(self, name: str, attempt: Awaitable[Any]) -> bool:
        """Run the call that exercises feature ``name``: present if the store does it, absent if it refuses."""
        try:
            await attempt
        except ClientError as exc:
            self.evidence[name] = f"refused: {_describe(exc)}"
            return False
        self.evidence[name] = "works"
        return True

    async def honours_if_none_match(self, name: str, fresh: str, write: Callable[[str], Awaitable[Any]]) -> bool:
        """``write(name)`` sends If-None-Match: *; it must store ``fresh`` and answer 412 on ``existing``."""
        try:
            await write(fresh)
        except ClientError as exc:
            self.evidence[name] = f"refused on a new key: {_describe(exc)}"
            return False
        try:
            await write("existing")
        except ClientError as exc:
            if _is_precondition_failed(exc):
                self.evidence[name] = "412 on an existing key"
                return True
            self.evidence[name] = f"unexpected answer on an existing key: {_describe(exc)}"
            return False
        self.evidence[name] = "ignored: an existing key was replaced"
        return False

    async def head_bucket(self) -> bool:
        return await self.works("head_bucket", self.call("HeadBucket"))

    async def conditional_put(self) -> bool:
        # The first write must work at all; anything else is a configuration problem.
        try:
            await self.put("existing")
        except Exception as exc:
            raise ProbeError("PutObject", exc) from exc
        return await self.honours_if_none_match(
            "conditional_put", "fresh", lambda name: self.put(name, IfNoneMatch="*")
        )

    async def conditional_complete(self) -> bool:
        return await self.honours_if_none_match(
            "conditional_complete",
            "fresh-multipart",
            lambda name: self.multipart(name, complete={"IfNoneMatch": "*"}),
        )

    async def checksum(self, mode: str) -> bool:
        create: dict[str, Any] = {}
        complete: dict[str, Any] = {}
        entry: dict[str, str] = {}
        part = _part_checksum(mode, _BODY)
        if mode == "crc64nvme":  # full object: the store checks the whole object's CRC at completion
            create = {"ChecksumAlgorithm": "CRC64NVME", "ChecksumType": "FULL_OBJECT"}
            complete = {"ChecksumType": "FULL_OBJECT", **part}
            entry = part
        elif mode != "md5":  # composite: each part's value is listed in the completion
            create = {"ChecksumAlgorithm": mode.upper()}
            entry = part
        upload = self.multipart(
            f"checksum-{mode}",
            create=create,
            part=part,
            complete=complete,
            entry=entry,
            wrong=_part_checksum(mode, _OTHER),
        )
        if not await self.works(f"checksum_{mode}", upload):
            return False
        verified = mode in self.verified
        self.evidence[f"checksum_{mode}"] = "verified" if verified else "accepted, but a wrong value was not refused"
        return True

    async def tagging(self) -> bool:
        tag_set = {"TagSet": [{"Key": "streamproxy-probe", "Value": "1"}]}
        return await self.works("tagging", self.call("PutObjectTagging", Key=self.key("existing"), Tagging=tag_set))

    async def upload_part_copy(self) -> bool:
        return await self.works("upload_part_copy", self.multipart("copied", copy_from=self.key("existing")))

    async def uploads_listing_and_abort(self) -> tuple[bool, bool]:
        key = self.key("aborted")
        upload_id = (await self.call("CreateMultipartUpload", Key=key))["UploadId"]
        self.uploads[upload_id] = key
        listed = await self._listed(upload_id)
        if listed is None:
            listing = False
        else:
            listing = listed
            if not listed:
                self.evidence["list_multipart_uploads"] = "answers, but without an upload in progress"
        try:
            await self.call("AbortMultipartUpload", Key=key, UploadId=upload_id)
        except ClientError as exc:
            self.evidence["abort_multipart"] = f"refused: {_describe(exc)}"
            self.abort_works = False
            return listing, False
        del self.uploads[upload_id]
        # An abort that answers 204 but keeps the upload would leave parts behind for ever: check.
        gone = await self._upload_gone(key, upload_id, listing)
        self.evidence["abort_multipart"] = "works" if gone else "answers, but the upload still accepts parts"
        return listing, gone

    async def _listed(self, upload_id: str) -> bool | None:
        try:
            answer = await self.call("ListMultipartUploads", Prefix=self.base)
        except ClientError as exc:
            self.evidence["list_multipart_uploads"] = f"refused: {_describe(exc)}"
            return None
        found = any(u.get("UploadId") == upload_id for u in answer.get("Uploads", []))
        if found:
            self.evidence["list_multipart_uploads"] = "works"
        return found

    async def _upload_gone(self, key: str, upload_id: str, listing: bool) -> bool:
        if listing:
            return not await self._listed(upload_id)
        try:
            await self.call("UploadPart", Key=key, UploadId=upload_id, PartNumber=1, Body=_BODY)
        except ClientError as exc:
            return _code(exc) == "NoSuchUpload"
        return False

    async def cleanup(self) -> list[str]:
        left: list[str] = []
        for upload_id, key in list(self.uploads.items()):
            try:
                await self.call("AbortMultipartUpload", Key=key, UploadId=upload_id)
            except ClientError:
                left.append(f"incomplete upload {key} ({upload_id})")
        for key in sorted(self.objects):
            try:
                await self.call("DeleteObject", Key=key)
            except ClientError:
                left.append(key)
        return left


async def probe(client: Any, bucket: str, prefix: str) -> ProbeReport:
    """Probe the store behind ``client`` under ``prefix`` in ``bucket``; remove what the probe wrote."""
    p = _Probe(client, bucket, prefix)
    try:
        flags = {
            "head_bucket": await p.head_bucket(),
            "conditional_put": await p.conditional_put(),
            "conditional_complete": await p.conditional_complete(),
        }
        checksums = await asyncio.gather(*(p.checksum(mode) for mode in CHECKSUM_MODES))
        flags["tagging"] = await p.tagging()
        flags["upload_part_copy"] = await p.upload_part_copy()
        flags["list_multipart_uploads"], flags["abort_multipart"] = await p.uploads_listing_and_abort()
    except ProbeError:
        await p.cleanup()
        raise
    except Exception as exc:
        await p.cleanup()
        raise ProbeError("probe", exc) from exc
    leftovers = await p.cleanup()
    accepted = frozenset(mode for mode, ok in zip(CHECKSUM_MODES, checksums, strict=True) if ok)
    capabilities = Capabilities.from_flags(
        flags,
        # a store that refuses the header outright also refused the wrong value: that is not verification
        checksums=accepted & p.verified,
        accepted_checksums=accepted,
        probed=True,
    )
    return ProbeReport(capabilities, p.evidence, leftovers)


# --- one line per capability, for `check` and the start log ---------------------------------------

_LABELS = {
    "head_bucket": "HeadBucket",
    "conditional_put": "conditional PutObject",
    "conditional_complete": "conditional CompleteMultipartUpload",
    "tagging": "PutObjectTagging",
    "upload_part_copy": "UploadPartCopy",
    "list_multipart_uploads": "ListMultipartUploads",
    "abort_multipart": "AbortMultipartUpload",
}


def capability_rows(capabilities: Capabilities, evidence: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """Return (feature, yes/no/verified, evidence) for every probed feature, in a stable order."""
    evidence = evidence or {}
    rows = [
        (label, "yes" if getattr(capabilities, name) else "NO", evidence.get(name, ""))
        for name, label in _LABELS.items()
    ]
    for mode in CHECKSUM_MODES:
        if mode in capabilities.checksums:
            state = "verified"
        elif mode in capabilities.accepted_checksums:
            state = "unchecked"
        else:
            state = "NO"
        rows.append((f"checksum {mode}", state, evidence.get(f"checksum_{mode}", "")))
    return rows


def log_fields(capabilities: Capabilities) -> dict[str, Any]:
    """Return the fields of the one ``storage_capabilities`` log line."""
    return {**capabilities_to_json(capabilities), "probed": capabilities.probed}
