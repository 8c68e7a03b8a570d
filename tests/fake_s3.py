"""An in-process fake of the S3 client API for writer tests, able to behave like the stores that differ from S3.

``FakeS3`` keeps objects and multipart uploads in dicts and records every call with its arguments.
Its knobs imitate the measured stores (docs/storage-compatibility.md):

* ``conditional_put``: ``"honour"`` (S3), ``"refuse"`` (Swift: 501 on any ``If-None-Match``),
  ``"ignore"`` (s3rver, Garage: the write replaces the key);
* ``conditional_complete``: ``"honour"`` or ``"ignore"`` (Ceph 16, s3rver, Garage, GCS);
* ``tagging``, ``part_copy``, ``abort``: ``False`` answers as Swift (tagging) and s3rver do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

from botocore.exceptions import ClientError

from streamproxy.parts import BufferPool

__all__ = ["FakeS3", "error", "write_recording"]


def error(code: str, status: int, operation: str) -> ClientError:
    """A botocore error as the client raises it."""
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


def _bytes(body: Any) -> bytes:
    """A request body's bytes (a ``PartBody`` over a pooled buffer, or plain bytes)."""
    return bytes(body.view) if hasattr(body, "view") else bytes(body)


class _Body:
    """A GetObject body: an async context manager with ``read(n)``, as aiobotocore's StreamingBody."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._position = 0

    async def __aenter__(self) -> _Body:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else min(len(self._data), self._position + size)
        chunk = self._data[self._position : end]
        self._position = end
        return chunk


class FakeS3:
    """Just enough of the S3 client API for the writer: objects and multipart uploads in dicts."""

    def __init__(
        self,
        *,
        conditional_put: str = "honour",
        conditional_complete: str = "honour",
        tagging: bool = True,
        part_copy: bool = True,
        abort: bool = True,
    ) -> None:
        self.meta = SimpleNamespace(region_name="us-east-1")
        self.objects: dict[str, tuple[bytes, dict[str, str]]] = {}
        self.uploads: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.requests: list[tuple[str, dict[str, Any]]] = []  # every call with its arguments (bodies as bytes)
        self.fail: dict[str, ClientError] = {}  # operation -> error to raise once
        self.lose_answer: set[str] = set()  # operations that take effect, then fail with 412 once
        self.conditional_put = conditional_put
        self.conditional_complete = conditional_complete
        self.tagging = tagging
        self.part_copy = part_copy
        self.abort = abort
        self._next_upload = 0

    def _enter(self, operation: str, kwargs: dict[str, Any]) -> None:
        self.calls.append(operation)
        body = kwargs.get("Body")
        self.requests.append((operation, {**kwargs, "Body": _bytes(body)} if body is not None else dict(kwargs)))
        if operation in self.fail:
            raise self.fail.pop(operation)

    def of(self, operation: str) -> list[dict[str, Any]]:
        """The arguments of every call of ``operation``, in order."""
        return [kwargs for name, kwargs in self.requests if name == operation]

    def _store(self, operation: str, key: str, data: bytes, metadata: dict[str, str], honour: bool) -> None:
        if honour and key in self.objects:
            raise error("PreconditionFailed", 412, operation)
        self.objects[key] = (data, metadata)
        if operation in self.lose_answer:
            self.lose_answer.discard(operation)
            raise error("PreconditionFailed", 412, operation)

    async def put_object(self, **kwargs: Any) -> dict[str, Any]:
        self._enter("PutObject", kwargs)
        if kwargs.get("IfNoneMatch") is not None and self.conditional_put == "refuse":
            raise error("NotImplemented", 501, "PutObject")
        honour = kwargs.get("IfNoneMatch") == "*" and self.conditional_put == "honour"
        self._store("PutObject", kwargs["Key"], _bytes(kwargs["Body"]), kwargs.get("Metadata", {}), honour)
        return {"ETag": '"x"'}

    async def copy_object(self, **kwargs: Any) -> dict[str, Any]:
        self._enter("CopyObject", kwargs)
        if kwargs.get("IfNoneMatch") is not None and self.conditional_put == "refuse":
            raise error("NotImplemented", 501, "CopyObject")
        source = self.objects[kwargs["CopySource"]["Key"]]
        metadata = kwargs.get("Metadata", {}) if kwargs.get("MetadataDirective") == "REPLACE" else source[1]
        honour = kwargs.get("IfNoneMatch") == "*" and self.conditional_put == "honour"
        self._store("CopyObject", kwargs["Key"], source[0], metadata, honour)
        return {"CopyObjectResult": {"ETag": '"c"'}}

    async def get_object(self, **kwargs: Any) -> dict[str, Any]:
        self._enter("GetObject", kwargs)
        if kwargs["Key"] not in self.objects:
            raise error("NoSuchKey", 404, "GetObject")
        return {"Body": _Body(self.objects[kwargs["Key"]][0])}

    async def create_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        self._enter("CreateMultipartUpload", kwargs)
        upload_id = f"u{self._next_upload}"
        self._next_upload += 1
        self.uploads[upload_id] = {"key": kwargs["Key"], "metadata": kwargs.get("Metadata", {}), "parts": {}}
        return {"UploadId": upload_id}

    async def upload_part(self, **kwargs: Any) -> dict[str, Any]:
        self._enter("UploadPart", kwargs)
        upload = self.uploads.get(kwargs["UploadId"])
        if upload is None:
            raise error("NoSuchUpload", 404, "UploadPart")
        upload["parts"][kwargs["PartNumber"]] = _bytes(kwargs["Body"])
        return {"ETag": f'"{kwargs["PartNumber"]}"'}

    async def upload_part_copy(self, **kwargs: Any) -> dict[str, Any]:
        self._enter("UploadPartCopy", kwargs)
        if not self.part_copy:
            raise error("NotImplemented", 501, "UploadPartCopy")
        first, last = (int(n) for n in kwargs["CopySourceRange"].removeprefix("bytes=").split("-"))
        data = self.objects[kwargs["CopySource"]["Key"]][0][first : last + 1]
        self.uploads[kwargs["UploadId"]]["parts"][kwargs["PartNumber"]] = data
        return {"CopyPartResult": {"ETag": f'"{kwargs["PartNumber"]}"'}}

    async def complete_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        self._enter("CompleteMultipartUpload", kwargs)
        upload = self.uploads.get(kwargs["UploadId"])
        if upload is None:
            raise error("NoSuchUpload", 404, "CompleteMultipartUpload")
        data = b"".join(upload["parts"][p["PartNumber"]] for p in kwargs["MultipartUpload"]["Parts"])
        honour = kwargs.get("IfNoneMatch") == "*" and self.conditional_complete == "honour"
        self._store("CompleteMultipartUpload", upload["key"], data, upload["metadata"], honour)
        del self.uploads[kwargs["UploadId"]]
        return {}

    async def abort_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        self._enter("AbortMultipartUpload", kwargs)
        if not self.abort:
            raise error("MethodNotAllowed", 405, "AbortMultipartUpload")
        if self.uploads.pop(kwargs["UploadId"], None) is None:
            raise error("NoSuchUpload", 404, "AbortMultipartUpload")
        return {}

    async def head_object(self, **kwargs: Any) -> dict[str, Any]:
        self._enter("HeadObject", kwargs)
        if kwargs["Key"] not in self.objects:
            raise error("404", 404, "HeadObject")
        return {"Metadata": self.objects[kwargs["Key"]][1]}

    async def delete_object(self, **kwargs: Any) -> dict[str, Any]:
        self._enter("DeleteObject", kwargs)
        self.objects.pop(kwargs["Key"], None)
        return {}

    async def put_object_tagging(self, **kwargs: Any) -> dict[str, Any]:
        self._enter("PutObjectTagging", kwargs)
        if not self.tagging:
            raise error("NotImplemented", 501, "PutObjectTagging")
        return {}

    def factory(self) -> Any:
        """A ``ClientFactory`` that hands out this fake."""

        @asynccontextmanager
        async def make(options: Any) -> AsyncIterator[FakeS3]:
            yield self

        return make


async def write_recording(pool: BufferPool, writer: Any, data: bytes) -> None:
    """Hand ``data`` to ``writer`` as ingest does: whole buffers from ``pool``, the last one marked."""
    size = pool.part_size
    chunks = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    for number, chunk in enumerate(chunks, start=1):
        part = await pool.acquire()
        part.data[: len(chunk)] = chunk
        part.length = len(chunk)
        await writer.write(part, last=number == len(chunks))
