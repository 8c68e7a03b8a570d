"""One multipart upload (create, part, copy-part, complete, abort) and the conditional final write.

The direct path uploads parts from the pool; the staged path copies ranges of the staging object
server-side (``UploadPartCopy``). Both run through the same ``MultipartUpload``, whose concurrency
is bounded by ``part_concurrency`` and whose every path ends in ``complete`` or ``abort``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from ...checksums import Checksum, ObjectChecksum
from ...errors import KeyExists, StorageError
from ...parts import PartBuffer
from .adapt import Strategy
from .checksums import complete_args, create_args, part_args, part_digests
from .client import S3Client
from .transport import PartBody

__all__ = ["MultipartUpload", "final_write", "put_part"]

log = structlog.get_logger("streamproxy.s3")

_ABORT_ATTEMPTS = 3
_CONFLICT_ATTEMPTS = 4
_SWEEP = "run streamproxy sweep"


async def final_write(
    operation: str,
    client: S3Client,
    key: str,
    kwargs: dict[str, Any],
    *,
    conditional: bool,
    head_check: bool,
    token: str,
) -> None:
    """Make the object visible: a conditional write, serialized per key, safe against lost responses.

    ``conditional``: the write carries ``If-None-Match: *`` (the store refuses to replace a key).
    ``head_check``: the store would not refuse, so a ``HeadObject`` right before the write, under
    the per-key lock, refuses a key that exists (what remains is the race across servers, see
    docs/design.md). If the write answers 412 or ``NoSuchUpload``, the first attempt may have
    succeeded with its response lost: a ``HeadObject`` showing our ``token`` turns that into the
    success it was.
    """
    if conditional:
        kwargs["IfNoneMatch"] = "*"
    async with client.key_lock(key):
        if head_check and await client.exists(key):
            raise KeyExists("the key already exists")
        for attempt in range(_CONFLICT_ATTEMPTS):
            try:
                await client.call(operation, **kwargs)
                return
            except KeyExists:
                if await client.is_ours(key, token):
                    return
                raise
            except StorageError as exc:
                if exc.storage_code == "NoSuchUpload" and await client.is_ours(key, token):
                    return
                # 409 ConditionalRequestConflict: another write to this key is in flight
                # elsewhere; S3 asks to retry, and the retry then sees 412 or succeeds.
                if exc.storage_code != "ConditionalRequestConflict" or attempt == _CONFLICT_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.2 * 2**attempt)


async def put_part(client: S3Client, body: memoryview, mode: str) -> tuple[PartBody, bytes | None]:
    """Return the body and raw checksum (``mode``) of one part; the digests are computed in a worker thread."""
    raw, digest = await asyncio.to_thread(part_digests, mode, body, client.payload_sha256(mode))
    return PartBody(body, digest, client.options.s3_timeout), raw


class MultipartUpload:
    """A multipart upload to ``key``: parts run concurrently in tasks; the first failure is kept in ``error``."""

    def __init__(self, client: S3Client, key: str, strategy: Strategy, *, checksum: str = "none") -> None:
        self.key = key
        self.strategy = strategy
        self.mode = checksum  # the parts' checksum mode (``none`` for copied parts)
        self.checksum = ObjectChecksum(checksum) if checksum != "none" else None
        self.upload_id: str | None = None
        self.error: Exception | None = None
        self._s3 = client
        self._bucket = client.options.bucket
        self._slots = asyncio.Semaphore(client.options.part_concurrency)
        self._tasks: list[asyncio.Task[None]] = []
        self._parts: dict[int, dict[str, Any]] = {}
        self._next_number = 1

    @property
    def part_count(self) -> int:
        """How many parts were stored (meaningful once ``complete`` returned)."""
        return len(self._parts)

    async def create(self, **args: Any) -> None:
        """Start the upload on the store (``args``: content type, metadata, object arguments)."""
        response = await self._s3.call(
            "CreateMultipartUpload", Bucket=self._bucket, Key=self.key, **create_args(self.mode), **args
        )
        self.upload_id = response["UploadId"]

    def skip_first(self) -> None:
        """Start numbering at 2: part 1 is sent last, with ``part(..., number=1)``."""
        self._next_number = max(self._next_number, 2)

    async def part(self, part: PartBuffer, *, number: int | None = None) -> None:
        """Upload the next part (or part ``number``) in a task once a slot is free; released when done."""
        await self._start(self._upload_part, part.release, part, number=number)

    async def copy_part(self, source: dict[str, str], first: int, last: int) -> None:
        """Copy bytes ``first``..``last`` of ``source`` as the next part, server-side."""
        await self._start(self._copy_part, lambda: None, source, first, last)

    async def _start(self, run: Any, release: Any, *args: Any, number: int | None = None) -> None:
        if number is None:
            number = self._next_number
            self._next_number += 1
        try:
            await self._slots.acquire()
        except BaseException:
            release()
            raise
        self._tasks.append(asyncio.ensure_future(self._run(run, release, number, *args)))

    async def _run(self, run: Any, release: Any, number: int, *args: Any) -> None:
        try:
            self._parts[number] = await run(number, *args)
        except Exception as exc:
            if self.error is None:
                self.error = exc
        finally:
            release()
            self._slots.release()

    def _part_args(self, number: int) -> dict[str, Any]:
        return {"Bucket": self._bucket, "Key": self.key, "UploadId": self.upload_id, "PartNumber": number}

    async def _upload_part(self, number: int, part: PartBuffer) -> dict[str, Any]:
        body, raw = await put_part(self._s3, part.view, self.mode)
        checksum = part_args(self.mode, raw)
        if raw is not None and self.checksum is not None:
            self.checksum.add(number, raw, part.length)
        response = await self._s3.call("UploadPart", Body=body, **self._part_args(number), **checksum)
        entry: dict[str, Any] = {"PartNumber": number, "ETag": response["ETag"]}
        entry.update({k: v for k, v in checksum.items() if k.startswith("Checksum")})
        return entry

    async def _copy_part(self, number: int, source: dict[str, str], first: int, last: int) -> dict[str, Any]:
        response = await self._s3.call(
            "UploadPartCopy", CopySource=source, CopySourceRange=f"bytes={first}-{last}", **self._part_args(number)
        )
        return {"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]}

    async def complete(self, *, guard: bool, token: str) -> Checksum | None:
        """Wait for the parts, complete the upload, and return the checksum the store verified.

        ``guard``: the key must not exist yet (``If-None-Match: *`` where the store honours it on
        this call, a ``HeadObject`` under the key lock where it does not). Raises the first
        part's failure.
        """
        await asyncio.gather(*self._tasks)
        self._tasks = []
        if self.error is not None:
            raise self.error
        parts = [self._parts[n] for n in sorted(self._parts)]
        kwargs = dict(
            Bucket=self._bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": parts},
            **complete_args(self.checksum),
        )
        operation = "CompleteMultipartUpload"
        await final_write(
            "CompleteMultipartUpload",
            self._s3,
            self.key,
            kwargs,
            conditional=guard and self.strategy.guarded(operation),
            head_check=guard and self.strategy.head_checks and not self.strategy.guarded(operation),
            token=token,
        )
        self.upload_id = None
        return self.checksum.multipart() if self.checksum is not None else None

    async def abort(self) -> None:
        """Cancel the part tasks and abort the upload on the store (retried; sweep cleans what is left)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        upload_id, self.upload_id = self.upload_id, None
        if upload_id is None:
            return
        if not self.strategy.abort:
            # Logged once per sink (S3Sink.capabilities); the store's lifecycle rule or sweep removes it.
            return
        for attempt in range(_ABORT_ATTEMPTS):
            try:
                await self._s3.call("AbortMultipartUpload", Bucket=self._bucket, Key=self.key, UploadId=upload_id)
                return
            except StorageError as exc:
                if exc.storage_code == "NoSuchUpload":
                    return
                if attempt == _ABORT_ATTEMPTS - 1:
                    log.error("abort_failed", key=self.key, upload_id=upload_id, error=exc.message, hint=_SWEEP)
                    return
                await asyncio.sleep(0.5 * 2**attempt)
