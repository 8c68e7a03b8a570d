"""``S3Writer``: one upload into S3, as a single PUT, a direct multipart upload, or staged then copied.

Each step follows the sink's ``Strategy`` (``adapt``), decided from what the store can do:

* A recording that fits one part arrives as a single part marked ``last`` and is stored with one
  ``PutObject``; on a store that cannot guard PutObject but guards CompleteMultipartUpload
  (Swift), with a one-part multipart upload instead, made at ``complete`` when the metadata is known.
* Otherwise a ``MultipartUpload`` with up to ``part_concurrency`` parts in flight (each keeps its
  buffer until S3 accepted it, so botocore can resend it on retry). Any failure aborts it. Where
  the store would not refuse to replace the key, a ``HeadObject`` before it starts refuses a
  known name early, and ``upload.final_write`` checks again under the key lock.
* Each upload writes a random ``streamproxy-upload-id`` into the object's metadata, so the final
  write can tell a lost answer from someone else's object (``upload.final_write``).
* A name that arrives after the file: the bytes go to ``<prefix>.streamproxy-staging/<id>``, and
  ``complete(key=...)`` copies them server-side (a second ``MultipartUpload`` of copy-parts, so
  any size works, with the same guarded complete; without UploadPartCopy one ``CopyObject`` up
  to 5 GiB, or the staged bytes streamed back through the part budget) and deletes the staging object.
* sha256 and size are known only at the end, after a multipart upload's metadata is fixed: they
  are stored as metadata where the object is written whole (single PUT, one-part upload, staged
  copy), as the object tags ``sha256`` / ``size`` on a direct multipart upload, and where the
  store has no tagging, in the sidecar object ``<key>.sha256``.
* ``complete`` returns the checksum the store verified (``Stored.checksum``).
* A header known only at the end (``HeadLast``: WAV in front of headerless G.711, or an encoder's
  header): parts 2..N are uploaded as they come and part 1, header included, last; S3 assembles
  parts by number. The sha256 of the object then needs its first bytes first, so after the
  complete the writer reads the rest of the object back (one streaming ranged GET, hashed in 1 MiB
  pieces in a worker thread) behind the hash of part 1. That costs one download of the recording;
  it also shows that what S3 holds has the expected length. If it fails, the object just written
  is removed again and the upload fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import structlog

from ...checksums import Checksum, ObjectChecksum
from ...errors import KeyExists, StorageError, StorageFailed
from ...parts import BufferPool, PartBuffer
from ...tags import merge_tags
from .. import AS_OPENED, Completion, ObjectSpec, Stored, WriterBase
from .adapt import COPY_OBJECT_LIMIT, SIDECAR_SUFFIX, Strategy
from .checksums import part_args
from .client import UPLOAD_ID_META, S3Client, map_error
from .upload import MultipartUpload, final_write, put_part

__all__ = ["COPY_PART_SIZE", "STAGING_DIR", "S3Writer"]

log = structlog.get_logger("streamproxy.s3")

STAGING_DIR = ".streamproxy-staging/"
COPY_PART_SIZE = 512 * 1024 * 1024  # server-side copy parts: few calls, well under S3's 5 GiB cap
_SWEEP = "run streamproxy sweep"
READ_BACK_CHUNK = 1024 * 1024


class S3Writer(WriterBase):
    """One upload into S3; see the module docstring for the sequence of calls."""

    def __init__(
        self,
        client: S3Client,
        spec: ObjectSpec,
        *,
        strategy: Strategy,
    ) -> None:
        self._s3 = client
        self._o = client.options
        self._strategy = strategy
        self._token = uuid.uuid4().hex
        self._spec = spec
        self._staged = spec.key is None
        self._key = spec.key if spec.key is not None else f"{self._o.prefix}{STAGING_DIR}{self._token}"
        self._metadata = {**spec.metadata, UPLOAD_ID_META: self._token}
        self._single: PartBuffer | None = None
        self._pool: BufferPool | None = None  # the budget the parts came from (to stream a staged object back)
        self._upload: MultipartUpload | None = None  # the direct upload, or the staging object's
        self._copy: MultipartUpload | None = None  # the staged path's server-side copy
        self._staging_written = False
        self._size = 0
        self._finished = False
        self._creating: asyncio.Future[None] | None = None  # CreateMultipartUpload in flight
        self._head_deferred = False
        self._head_sha: Any = None  # hashlib state of part 1 (header included), when it came last
        self._head_length = 0

    def defer_head(self) -> None:
        """Part 1 comes last (``write_head``): the parts that come first are numbered from 2."""
        self._head_deferred = True

    async def write_head(self, part: PartBuffer) -> None:
        """Upload part 1 after the others, or keep it for a single PUT if it is the whole recording."""
        if self._upload is not None and self._upload.error is not None:
            part.release()
            raise self._upload.error
        self._size += part.length
        if self._upload is None:
            self._single = part
            return
        try:
            self._head_sha = await asyncio.to_thread(hashlib.sha256, part.view)
        except BaseException:
            part.release()
            raise
        self._head_length = part.length
        await self._upload.part(part, number=1)

    def _guarded(self, operation: str) -> tuple[bool, bool]:
        """(send If-None-Match, check with HeadObject) for a final write to the final key."""
        if self._staged and operation != "CopyObject":
            return False, False  # the staging key is ours alone
        guarded = self._strategy.guarded(operation)
        return guarded, self._strategy.head_checks and not guarded

    async def write(self, part: PartBuffer, *, last: bool = False) -> None:
        """Keep a lone last part for ``complete``; otherwise run a multipart upload with bounded concurrency."""
        if self._upload is not None and self._upload.error is not None:
            part.release()
            raise self._upload.error
        self._size += part.length
        self._pool = part.pool
        if self._upload is None:
            if last and not self._head_deferred:
                self._single = part  # the whole recording fits one part: complete() stores it
                return
            try:
                # A name the store will not protect is refused before a byte is sent (checked again at the end).
                if self._guarded("CompleteMultipartUpload")[1] and await self._s3.exists(self._key):
                    raise KeyExists("the key already exists")
                upload = MultipartUpload(self._s3, self._key, self._strategy, checksum=self._strategy.checksum)
                if self._head_deferred:
                    upload.skip_first()
                # The creation runs shielded and is registered before it is awaited: a client that
                # vanishes meanwhile cancels this task, but the store may already have created the
                # upload, and abort() must wait for its id to abort it instead of leaving it open.
                self._creating = asyncio.ensure_future(
                    upload.create(
                        ContentType=self._spec.content_type,
                        Metadata=self._metadata,
                        **(self._o.encryption_args() if self._staged else self._o.object_args(self._spec.tags)),
                    )
                )
                self._upload = upload
                await asyncio.shield(self._creating)
            except BaseException:
                part.release()
                raise
        await self._upload.part(part)

    async def complete(self, done: Completion = AS_OPENED) -> Stored:
        """Finish the upload (single PUT, multipart complete, or staged copy); abort and raise on failure.

        ``done.tags`` are added to the configured ones; after a direct multipart upload, whose
        metadata was fixed at its start, ``done.metadata`` joins them as tags too (or the sidecar).
        """
        extra = dict(done.metadata)
        request_tags = done.tags
        digest: str | None = None
        try:
            final_key = done.key_for(self._spec)
            if self._upload is None and (self._strategy.single_put or self._staged):
                checksum = await self._put_single(extra, request_tags)
                etag_parts = 1
            elif self._upload is None:
                checksum = await self._one_part_upload(extra, request_tags)
                etag_parts = 1
            else:
                checksum = await self._upload.complete(guard=not self._staged, token=self._token)
                etag_parts = self._upload.part_count
                if self._head_sha is not None:
                    digest = extra["sha256"] = await self._read_back(self._key)
            if self._staged:
                self._staging_written = True
                await self._move(final_key, extra, request_tags)
            elif etag_parts > 1 and (extra or request_tags):
                facts = merge_tags(dict(self._o.tags), request_tags, extra)
                if self._strategy.tagging:
                    await self._tag(final_key, facts)
                else:
                    await self._sidecar(final_key, extra)
        except BaseException:
            await self.abort()
            raise
        self._finished = True
        return Stored(
            key=final_key,
            url=await self._s3.url_for(final_key),
            bucket=self._o.bucket,
            parts=etag_parts,
            checksum=checksum,
            sha256=digest,
        )

    async def _read_back(self, key: str) -> str:
        """Hash the stored object: part 1's hash continued over the rest, read back (see the module docstring)."""
        sha, expected = self._head_sha, self._size - self._head_length
        read = 0
        try:
            response = await self._s3.call(
                "GetObject", Bucket=self._o.bucket, Key=key, Range=f"bytes={self._head_length}-"
            )
            body = response["Body"]
            try:
                while chunk := await body.read(READ_BACK_CHUNK):
                    await asyncio.to_thread(sha.update, chunk)
                    read += len(chunk)
            except Exception as exc:
                raise map_error("GetObject", exc) from exc
            finally:
                body.close()
            if read != expected:
                raise StorageFailed(f"S3 read back {read} bytes after part 1 of {key!r}, expected {expected}")
        except BaseException:
            if not self._staged:  # a staging object is removed by abort()
                await self._remove_completed(key)
            raise
        return str(sha.hexdigest())

    async def _remove_completed(self, key: str) -> None:
        """Delete the object this upload just completed, so that a failed answer leaves nothing behind."""
        try:
            if await self._s3.is_ours(key, self._token):
                await self._s3.call("DeleteObject", Bucket=self._o.bucket, Key=key)
        except (StorageError, KeyExists) as exc:
            log.error("read_back_cleanup_failed", key=key, error=str(exc), hint="delete the object by hand")

    def _object_args(self, tags: Mapping[str, str]) -> dict[str, Any]:
        return self._o.encryption_args() if self._staged else self._o.object_args(tags)

    async def _put_single(self, extra: Mapping[str, str], tags: Mapping[str, str]) -> Checksum | None:
        single, self._single = self._single, None
        mode = self._strategy.checksum
        try:
            body, raw = await put_part(self._s3, single.view if single is not None else memoryview(b""), mode)
            kwargs: dict[str, Any] = dict(
                Bucket=self._o.bucket,
                Key=self._key,
                Body=body,
                ContentType=self._spec.content_type,
                Metadata={**self._metadata, **extra},
                **part_args(mode, raw),
                **self._object_args(tags),
            )
            conditional, head_check = self._guarded("PutObject")
            await final_write(
                "PutObject",
                self._s3,
                self._key,
                kwargs,
                conditional=conditional,
                head_check=head_check,
                token=self._token,
            )
        finally:
            if single is not None:
                single.release()
        return ObjectChecksum(mode).single(raw) if raw is not None else None

    async def _one_part_upload(self, extra: Mapping[str, str], tags: Mapping[str, str]) -> Checksum | None:
        """Store a one-part recording as a multipart upload: the store guards its complete, not PutObject."""
        single, self._single = self._single, None
        upload = MultipartUpload(self._s3, self._key, self._strategy, checksum=self._strategy.checksum)
        try:
            await upload.create(
                ContentType=self._spec.content_type, Metadata={**self._metadata, **extra}, **self._object_args(tags)
            )
        except BaseException:
            if single is not None:
                single.release()
            raise
        self._upload = upload  # from here on, abort() aborts it
        if single is not None:
            await upload.part(single)
        return await upload.complete(guard=not self._staged, token=self._token)

    async def _move(self, final_key: str, extra: Mapping[str, str], tags: Mapping[str, str]) -> None:
        """Move the staging object to its final key, then delete the staging object."""
        metadata = {**self._metadata, **extra}
        if self._strategy.part_copy:
            await self._copy_parts(final_key, metadata, tags)
        elif self._size <= COPY_OBJECT_LIMIT:
            await self._copy_object(final_key, metadata, tags)
        else:
            await self._stream_back(final_key, metadata, tags)
        # The recording is stored now: a staging copy we cannot delete is sweep's job, not a failure.
        try:
            await self._delete_staging()
        except (StorageError, KeyExists) as exc:
            self._staging_written = False
            log.error("staging_delete_failed", key=self._key, error=str(exc), hint=_SWEEP)

    async def _copy_parts(self, final_key: str, metadata: dict[str, str], tags: Mapping[str, str]) -> None:
        self._copy = MultipartUpload(self._s3, final_key, self._strategy)
        await self._copy.create(ContentType=self._spec.content_type, Metadata=metadata, **self._o.object_args(tags))
        source = {"Bucket": self._o.bucket, "Key": self._key}
        step = max(self._o.part_size, COPY_PART_SIZE)
        for start in range(0, self._size, step):
            await self._copy.copy_part(source, start, min(start + step, self._size) - 1)
        await self._copy.complete(guard=True, token=self._token)

    async def _copy_object(self, final_key: str, metadata: dict[str, str], tags: Mapping[str, str]) -> None:
        """One server-side CopyObject (no UploadPartCopy here), checked with HeadObject under the key lock."""
        args = self._o.object_args(tags)
        kwargs: dict[str, Any] = dict(
            Bucket=self._o.bucket,
            Key=final_key,
            CopySource={"Bucket": self._o.bucket, "Key": self._key},
            MetadataDirective="REPLACE",
            ContentType=self._spec.content_type,
            Metadata=metadata,
            **args,
        )
        if "Tagging" in args:
            kwargs["TaggingDirective"] = "REPLACE"
        _, head_check = self._guarded("CopyObject")
        await final_write(
            "CopyObject", self._s3, final_key, kwargs, conditional=False, head_check=head_check, token=self._token
        )

    async def _stream_back(self, final_key: str, metadata: dict[str, str], tags: Mapping[str, str]) -> None:
        """Beyond CopyObject's 5 GiB, without UploadPartCopy: read the staged object back, part by part.

        Each part is taken whole from the same budget as incoming bytes and filled from the store
        before it is handed on, so the budget's no-deadlock argument (``streamproxy.parts``) holds.
        """
        if self._pool is None:
            raise StorageError("no part budget to stream the staged object back", storage_code="Internal")
        self._copy = MultipartUpload(self._s3, final_key, self._strategy, checksum=self._strategy.checksum)
        await self._copy.create(ContentType=self._spec.content_type, Metadata=metadata, **self._o.object_args(tags))
        answer = await self._s3.call("GetObject", Bucket=self._o.bucket, Key=self._key)
        async with answer["Body"] as stream:
            async for part in _parts(stream, self._pool):
                await self._copy.part(part)
        await self._copy.complete(guard=True, token=self._token)

    async def _tag(self, key: str, extra: Mapping[str, str]) -> None:
        # The object is stored at this point: a failed tag is worth a warning, not a failed upload.
        # PutObjectTagging replaces the whole set, so ``extra`` is the merged set (at most 10).
        tags = [{"Key": k, "Value": v} for k, v in extra.items()]
        try:
            await self._s3.call("PutObjectTagging", Bucket=self._o.bucket, Key=key, Tagging={"TagSet": tags})
        except (StorageError, KeyExists) as exc:
            log.warning("tagging_failed", key=key, error=str(exc))

    async def _sidecar(self, key: str, facts: Mapping[str, str]) -> None:
        """Record sha256 and size where the store has no tags: ``<key>.sha256``, in ``sha256sum`` format.

        The body is what ``sha256sum -c`` checks; every fact is also in the sidecar's metadata.
        Like a failed tag, a failed sidecar is a warning: the recording is stored.
        """
        if "sha256" not in facts:
            return
        name = key.rsplit("/", 1)[-1]
        body = f"{facts['sha256']}  {name}\n".encode()
        try:
            await self._s3.call(
                "PutObject",
                Bucket=self._o.bucket,
                Key=key + SIDECAR_SUFFIX,
                Body=body,
                ContentType="text/plain; charset=utf-8",
                Metadata=dict(facts),
                **self._o.encryption_args(),
            )
        except (StorageError, KeyExists) as exc:
            log.warning("sidecar_failed", key=key + SIDECAR_SUFFIX, error=str(exc))

    async def _delete_staging(self) -> None:
        if self._staging_written:
            await self._s3.call("DeleteObject", Bucket=self._o.bucket, Key=self._key)
            self._staging_written = False

    async def abort(self) -> None:
        """Cancel part uploads, abort multipart uploads, delete staging bytes. Idempotent."""
        if self._finished:
            return
        self._finished = True
        await asyncio.shield(self._abort())

    async def _abort(self) -> None:
        if self._creating is not None:
            await asyncio.gather(self._creating, return_exceptions=True)  # its upload id, if any
        if self._single is not None:
            self._single.release()
            self._single = None
        for upload in (self._upload, self._copy):
            if upload is not None:
                await upload.abort()
        try:
            await self._delete_staging()
        except (StorageError, KeyExists) as exc:
            log.error("staging_delete_failed", key=self._key, error=str(exc), hint=_SWEEP)


async def _parts(stream: Any, pool: BufferPool) -> AsyncIterator[PartBuffer]:
    """Cut a GetObject body into whole part buffers from ``pool``."""
    while True:
        part = await pool.acquire()
        try:
            while part.length < len(part.data):
                chunk = await stream.read(len(part.data) - part.length)
                if not chunk:
                    break
                part.data[part.length : part.length + len(chunk)] = chunk
                part.length += len(chunk)
        except BaseException:
            part.release()
            raise
        if part.length == 0:
            part.release()
            return
        full = part.length == len(part.data)  # read before yielding: the part may be released at once
        yield part
        if not full:
            return
