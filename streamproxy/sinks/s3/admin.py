"""What only ``check`` and ``sweep`` use: the probe, the bucket's Object Lock, and the sweep of leftovers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from ...errors import KeyExists, StorageError
from .. import SweepItem
from .capabilities import Capabilities
from .client import S3Client, map_error
from .writer import STAGING_DIR

__all__ = ["LIFECYCLE_RULE", "UNLISTED_UPLOADS", "S3Admin"]

# The sweep's item kind for "this store cannot list incomplete multipart uploads" (its error says why).
UNLISTED_UPLOADS = "unlisted_uploads"
LIFECYCLE_RULE = "deploy/s3-lifecycle.json"
# What stores answer to an operation they do not have (s3rver: 501 NotImplemented; others 405).
_MISSING = frozenset({"NotImplemented", "MethodNotAllowed", "501", "405"})


def _missing(exc: ClientError) -> bool:
    """Whether the store answered that it does not have this operation at all."""
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return code in _MISSING or status in _MISSING


class S3Admin:
    """Administrative calls on the sink's bucket and prefix, through the sink's client."""

    def __init__(self, client: S3Client) -> None:
        self._s3 = client
        self.options = client.options
        self.capabilities: Capabilities | None = None  # set by S3Sink.start

    @property
    def _client(self) -> Any:
        return self._s3.raw

    @property
    def lists_uploads(self) -> bool:
        """Whether this store can list incomplete multipart uploads (assumed until probed)."""
        return self.capabilities is None or self.capabilities.list_multipart_uploads

    async def probe(self) -> str:
        """List at most one incomplete multipart upload under the prefix: proves endpoint, credentials and bucket.

        ``ListMultipartUploads`` needs ``s3:ListBucketMultipartUploads``, which sweeping needs anyway;
        ``HeadBucket`` would need ``s3:ListBucket``, a right the proxy otherwise has no use for. On a
        store without ListMultipartUploads (s3rver) ``HeadBucket`` is used instead: readiness must
        ask a question the store can answer. The client is called directly: a probe is neither an
        upload's call (metrics) nor worth a log line. Returns the operation that answered.
        """
        if not self.lists_uploads:
            await self.head_bucket()
            return "HeadBucket"
        try:
            await self._client.list_multipart_uploads(
                Bucket=self.options.bucket, Prefix=self.options.prefix, MaxUploads=1
            )
        except ClientError as exc:
            if not _missing(exc):
                raise map_error("ListMultipartUploads", exc) from exc
            await self.head_bucket()  # not probed yet, and the store has no such call: ask what it can answer
            return "HeadBucket"
        except Exception as exc:
            raise map_error("ListMultipartUploads", exc) from exc
        return "ListMultipartUploads"

    async def head_bucket(self) -> None:
        """Ask whether the bucket exists and answers these credentials (needs ``s3:ListBucket``)."""
        try:
            await self._client.head_bucket(Bucket=self.options.bucket)
        except Exception as exc:
            raise map_error("HeadBucket", exc) from exc

    async def object_lock(self) -> dict[str, Any] | None:
        """Return the bucket's Object Lock configuration, or ``None`` if Object Lock is not enabled.

        Needs ``s3:GetBucketObjectLockConfiguration``; other errors are raised from the error tree.
        """
        try:
            response = await self._client.get_object_lock_configuration(Bucket=self.options.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ObjectLockConfigurationNotFoundError":
                return None
            raise map_error("GetObjectLockConfiguration", exc) from exc
        except Exception as exc:
            raise map_error("GetObjectLockConfiguration", exc) from exc
        config: dict[str, Any] = response.get("ObjectLockConfiguration", {})
        return config if config.get("ObjectLockEnabled") == "Enabled" else None

    async def sweep(self, older_than: float, *, dry_run: bool, now: float | None = None) -> list[SweepItem]:
        """Abort incomplete multipart uploads and delete staging objects older than ``older_than`` seconds.

        Only uploads under the prefix are touched. A failure to remove one item is recorded in its
        ``error`` and the sweep goes on; listing failures raise. A store that cannot list incomplete
        uploads at all (s3rver) gives one ``UNLISTED_UPLOADS`` item saying so: only a bucket
        lifecycle rule can clean those up, and the staging objects are still swept.
        """
        moment = datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)
        found: list[SweepItem] = []
        bucket, prefix = self.options.bucket, self.options.prefix
        uploads: list[dict[str, Any]] = []
        try:
            if self.lists_uploads:
                uploads = [
                    u async for page in self._pages("list_multipart_uploads", prefix) for u in page.get("Uploads", [])
                ]
            else:
                found.append(
                    SweepItem(UNLISTED_UPLOADS, prefix, 0.0, "the capability probe found no ListMultipartUploads")
                )
        except ClientError as exc:
            if not _missing(exc):
                raise map_error("ListMultipartUploads", exc) from exc
            code = exc.response.get("Error", {}).get("Code") or exc.response.get("ResponseMetadata", {}).get(
                "HTTPStatusCode"
            )
            found.append(SweepItem(UNLISTED_UPLOADS, prefix, 0.0, f"ListMultipartUploads answered {code}"))
        except Exception as exc:
            raise map_error("ListMultipartUploads", exc) from exc
        for upload in uploads:
            age = (moment - upload["Initiated"]).total_seconds()
            if age < older_than or not upload["Key"].startswith(prefix):  # not every store honours Prefix
                continue
            error = None
            if not dry_run:
                try:
                    await self._s3.call(
                        "AbortMultipartUpload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                except StorageError as exc:
                    if exc.storage_code != "NoSuchUpload":  # finished or aborted meanwhile: nothing left
                        error = exc.message
            found.append(SweepItem("multipart_upload", upload["Key"], age, error))
        try:
            staged = [
                o
                async for page in self._pages("list_objects_v2", prefix + STAGING_DIR)
                for o in page.get("Contents", [])
            ]
        except Exception as exc:
            raise map_error("ListObjectsV2", exc) from exc
        for obj in staged:
            age = (moment - obj["LastModified"]).total_seconds()
            if age < older_than or not obj["Key"].startswith(prefix + STAGING_DIR):
                continue
            error = None
            if not dry_run:
                try:
                    await self._s3.call("DeleteObject", Bucket=bucket, Key=obj["Key"])
                except (StorageError, KeyExists) as exc:
                    error = exc.message
            found.append(SweepItem("staging_object", obj["Key"], age, error))
        return found

    def _pages(self, operation: str, prefix: str) -> Any:
        return self._client.get_paginator(operation).paginate(Bucket=self.options.bucket, Prefix=prefix)
