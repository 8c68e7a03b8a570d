"""The notification outbox in an S3 bucket (``streamproxy.sinks.outbox``), beside the recordings.

Objects live under ``<prefix>.streamproxy-outbox/``. ``put_new`` is a ``PutObject`` with
``If-None-Match: *``: the store refuses it with 412 when the name exists, which makes the lease
exclusive between servers on stores that honour the condition (AWS, MinIO, Ceph's PutObject;
``streamproxy check`` reports stores that ignore it, where two servers may occasionally deliver
an event twice). Outbox objects get the sink's encryption but no retention or legal hold: they
are deleted once delivered.

The client is called directly rather than through ``S3Sink.call``: a missing lease or event is
the normal case here (``None``), not a storage error worth a warning and an S3 error metric.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from ...errors import KeyExists
from ..outbox import OUTBOX_DIR, check_name
from .client import S3Client, map_error

__all__ = ["S3Outbox"]


class S3Outbox:
    """Outbox objects under ``<prefix>.streamproxy-outbox/`` in the sink's bucket, through the sink's client."""

    def __init__(self, client: S3Client) -> None:
        self._s3 = client
        self.bucket = client.options.bucket
        self.root = f"{client.options.prefix}{OUTBOX_DIR}/"
        self._write_args = client.options.encryption_args()
        self.description = f"s3://{self.bucket}/{self.root}"

    @property
    def _client(self) -> Any:
        return self._s3.raw  # created by the sink's start()

    def _key(self, name: str) -> str:
        return self.root + check_name(name)

    async def _put(self, name: str, data: bytes, *, exclusive: bool) -> None:
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._key(name),
            "Body": data,
            "ContentType": "application/json",
            **self._write_args,
        }
        if exclusive:
            args["IfNoneMatch"] = "*"
        try:
            await self._client.put_object(**args)
        except Exception as exc:
            raise map_error("PutObject", exc) from exc

    async def put(self, name: str, data: bytes, *, durable: bool = True) -> None:
        """Write ``name``, replacing it (every S3 write is durable)."""
        await self._put(name, data, exclusive=False)

    async def put_new(self, name: str, data: bytes, *, durable: bool = True) -> bool:
        """Write ``name`` only if it does not exist (412 from the store: ``False``)."""
        try:
            await self._put(name, data, exclusive=True)
        except KeyExists:
            return False
        return True

    async def get(self, name: str) -> bytes | None:
        """Read ``name``, or ``None`` if there is no such object."""
        try:
            response = await self._client.get_object(Bucket=self.bucket, Key=self._key(name))
            async with response["Body"] as body:
                data: bytes = await body.read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise map_error("GetObject", exc) from exc
        except Exception as exc:
            raise map_error("GetObject", exc) from exc
        return data

    async def delete(self, name: str) -> None:
        """Delete ``name`` (S3 answers 204 for a missing key too)."""
        try:
            await self._client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except Exception as exc:
            raise map_error("DeleteObject", exc) from exc

    async def list(self, prefix: str, *, after: str = "", limit: int = 100) -> list[str]:
        """One ``ListObjectsV2`` page: names under ``prefix`` after ``after``, in key order."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.root + prefix, "MaxKeys": limit}
        if after:
            args["StartAfter"] = self.root + after
        try:
            response = await self._client.list_objects_v2(**args)
        except Exception as exc:
            raise map_error("ListObjectsV2", exc) from exc
        return [item["Key"].removeprefix(self.root) for item in response.get("Contents", [])]
