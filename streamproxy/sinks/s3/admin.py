"""What only ``check`` and ``sweep`` use: the probe, the bucket's Object Lock, and the sweep of leftovers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from ...errors import KeyExists, StorageError
from .. import SweepItem
from .client import S3Client, map_error
from .writer import STAGING_DIR

__all__ = ["S3Admin"]


class S3Admin:
    """Administrative calls on the sink's bucket and prefix, through the sink's client."""

    def __init__(self, client: S3Client) -> None:
        self._s3 = client
        self.options = client.options

    @property
    def _client(self) -> Any:
        return self._s3.raw

    async def probe(self) -> None:
        """List at most one incomplete multipart upload under the prefix: proves endpoint, credentials and bucket.

        ``ListMultipartUploads`` needs ``s3:ListBucketMultipartUploads``, which sweeping needs anyway;
        ``HeadBucket`` would need ``s3:ListBucket``, a right the proxy otherwise has no use for.
        The client is called directly: a probe is neither an upload's call (metrics) nor worth a log line.
        """
        try:
            await self._client.list_multipart_uploads(
                Bucket=self.options.bucket, Prefix=self.options.prefix, MaxUploads=1
            )
        except Exception as exc:
            raise map_error("ListMultipartUploads", exc) from exc

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
        ``error`` and the sweep goes on; listing failures raise.
        """
        moment = datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)
        found: list[SweepItem] = []
        bucket, prefix = self.options.bucket, self.options.prefix
        try:
            uploads = [
                u async for page in self._pages("list_multipart_uploads", prefix) for u in page.get("Uploads", [])
            ]
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
