"""S3 sink on aiobotocore: multipart uploads with bounded concurrency, single PUT for short recordings.

How one upload maps onto S3:

* A recording that fits one part arrives as a single part marked ``last`` and is stored with one
  ``PutObject`` (no multipart upload ever exists for it).
* Otherwise ``CreateMultipartUpload``, up to ``part_concurrency`` ``UploadPart`` calls at once
  (each keeps its buffer until S3 accepted it, so botocore can resend it on retry), then
  ``CompleteMultipartUpload``. Any failure before that aborts the multipart upload.
* Without ``--overwrite`` the final write carries ``If-None-Match: *``, so the store itself refuses
  to replace an existing key. A per-key lock serializes our own final writes as well: S3 makes
  the condition atomic, but some stores (moto among them) do not.
* Each upload writes a random ``streamproxy-upload-id`` into the object's metadata. If a final
  write answers 412 or ``NoSuchUpload``, the first attempt may have succeeded with its response
  lost; a ``HeadObject`` showing our id turns that into the success it was.
* A name that arrives after the file: the bytes go to ``<prefix>.streamproxy-staging/<id>``, and
  ``complete(key=...)`` copies them server-side (``UploadPartCopy``, so any size works, with the
  same conditional complete) and deletes the staging object.
* sha256 and size are known only at the end, after a multipart upload's metadata is fixed: they
  are stored as metadata where the object is written whole (single PUT, staged copy) and as the
  object tags ``sha256`` / ``size`` on a direct multipart upload.
* A header known only at the end (``HeadLast``: WAV in front of headerless G.711): parts 2..N
  are uploaded as they come and part 1, header included, last; S3 assembles parts by number.
  The sha256 of the object then needs its first bytes first, so after the complete the writer
  reads the rest of the object back (one streaming ranged GET, hashed in 1 MiB pieces in a
  worker thread) behind the hash of part 1. That costs one download of the recording; it also
  shows that what S3 holds has the expected length.

Part bodies reach the socket without a copy: botocore gets a small seekable ``PartBody`` over the
pooled buffer (seekable, so a retry resends it) and aiohttp sends its memoryview (a registered
payload type). See ``_zero_copy_writes`` for the one copy aiohttp itself would still make.

botocore >= 1.36 computes CRC checksums by default and sends them as aws-chunked trailers that
several S3-compatible stores reject; the client here asks for checksums only when required and
sends the part checksum chosen by ``--checksum`` explicitly (``Content-MD5`` by default, which
every S3-compatible store verifies).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
import warnings
import zlib
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiohttp import http_writer, payload
from botocore import auth
from botocore.auth import S3SigV4Auth
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from ..errors import BadRequest, KeyExists, StorageError, StorageFailed, StorageTimeout, StorageUnavailable
from ..parts import PartBuffer
from ..tags import encode_tagging, merge_tags
from . import Stored, SweepItem

__all__ = ["STAGING_DIR", "UPLOAD_ID_META", "S3Options", "S3Sink", "S3Writer"]

log = structlog.get_logger("streamproxy.s3")

# aiohttp warns that a large in-memory body "might lock the event loop"; writing a memoryview to a
# non-blocking transport does not, and copying it into a BytesIO to silence this would cost a copy.
warnings.filterwarnings("ignore", message="Sending a large body directly", category=ResourceWarning)

STAGING_DIR = ".streamproxy-staging/"
UPLOAD_ID_META = "streamproxy-upload-id"
COPY_PART_SIZE = 512 * 1024 * 1024  # server-side copy parts: few calls, well under S3's 5 GiB cap
_ABORT_ATTEMPTS = 3
READ_BACK_CHUNK = 1024 * 1024
_CONFLICT_ATTEMPTS = 4


@dataclass(frozen=True)
class S3Options:
    """What the S3 sink needs to know (built from ``Settings``)."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    part_size: int = 8 * 1024 * 1024
    part_concurrency: int = 4
    overwrite: bool = False
    checksum: str = "md5"
    max_pool_connections: int = 64
    max_attempts: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    ca_bundle: str | None = None  # PEM file of CAs to trust; certificates are verified either way
    url_mode: str = "object"
    presign_expires: int = 604800
    sse: str | None = None
    sse_kms_key_id: str | None = None
    storage_class: str | None = None
    object_lock_mode: str | None = None
    object_lock_days: int | None = None
    object_lock_legal_hold: bool = False
    tags: tuple[tuple[str, str], ...] = ()

    def encryption_args(self) -> dict[str, str]:
        """Server-side encryption arguments: every object streamproxy writes gets them, staging included."""
        args: dict[str, str] = {}
        if self.sse:
            args["ServerSideEncryption"] = self.sse
        if self.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.sse_kms_key_id
        return args

    def object_args(self, tags: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Arguments for a final object: encryption, storage class, retention, legal hold and tags.

        Staging objects get only the encryption: they are deleted after the copy, which a
        retention period would forbid.
        """
        args: dict[str, Any] = self.encryption_args()
        if self.storage_class:
            args["StorageClass"] = self.storage_class
        if self.object_lock_mode and self.object_lock_days:
            args["ObjectLockMode"] = self.object_lock_mode
            args["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(days=self.object_lock_days)
        if self.object_lock_legal_hold:
            args["ObjectLockLegalHoldStatus"] = "ON"
        merged = merge_tags(dict(self.tags), tags or {})
        if merged:
            args["Tagging"] = encode_tagging(merged.items())
        return args


def map_error(operation: str, exc: BaseException) -> Exception:
    """Turn a botocore or transport exception into the error tree (``KeyExists`` or ``StorageError``)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        message = f"S3 {operation} failed: {code}: {error.get('Message', '')}".rstrip(": ")
        if code == "PreconditionFailed" or status == 412:
            return KeyExists("the key already exists")
        if code in ("SlowDown", "ServiceUnavailable", "RequestLimitExceeded", "Throttling") or status == 503:
            return StorageUnavailable(message, storage_code=code)
        if code in ("RequestTimeout",) or status == 504:
            return StorageTimeout(message, storage_code=code)
        return StorageFailed(message, storage_code=code)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return StorageFailed(f"S3 {operation} failed: no usable AWS credentials", storage_code="NoCredentials")
    if isinstance(exc, (ReadTimeoutError, asyncio.TimeoutError)):
        return StorageTimeout(f"S3 {operation} timed out", storage_code="Timeout")
    if isinstance(exc, (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, OSError)):
        return StorageUnavailable(f"S3 {operation} failed: cannot reach storage ({exc})", storage_code="Connection")
    if isinstance(exc, BotoCoreError):
        return StorageFailed(f"S3 {operation} failed: {exc}", storage_code=type(exc).__name__)
    return StorageFailed(f"S3 {operation} failed: {type(exc).__name__}", storage_code=type(exc).__name__)


def _zero_copy_writes() -> None:
    """Let aiohttp hand headers and body to the transport as a vector instead of joining them.

    aiohttp joins them (a full copy of every part) on Python < 3.12.9, because asyncio's own
    ``writelines`` was broken or copying there. uvloop's ``writelines`` is native and sound, so
    under uvloop the join only costs a copy per part in flight: 32 MiB at the defaults.
    """
    loop = asyncio.get_running_loop()
    if type(loop).__module__.startswith("uvloop") and getattr(http_writer, "SKIP_WRITELINES", False):
        http_writer.SKIP_WRITELINES = False


class PartBody:
    """A part's bytes as botocore wants a body: sized, readable, seekable (so retries can rewind).

    ``sha256`` is the hex digest of the bytes when it was computed off the event loop; the signer
    then uses it instead of reading the body again (see ``PrehashedS3SigV4Auth``).
    ``stall_timeout`` bounds each slice of the send (see ``_PartPayload``).
    """

    __slots__ = ("_position", "sha256", "stall_timeout", "view")

    def __init__(self, view: memoryview, sha256: str | None = None, stall_timeout: float | None = None) -> None:
        self.view = view
        self.sha256 = sha256
        self.stall_timeout = stall_timeout
        self._position = 0

    def __len__(self) -> int:
        return len(self.view)

    def tell(self) -> int:
        """Return the read position."""
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move the read position (botocore rewinds before each retry)."""
        base = {0: 0, 1: self._position, 2: len(self.view)}[whence]
        self._position = max(0, min(len(self.view), base + offset))
        return self._position

    def read(self, size: int = -1) -> bytes:
        """Return up to ``size`` bytes; used only when botocore signs the payload (plain-HTTP endpoints)."""
        end = len(self.view) if size < 0 else min(len(self.view), self._position + size)
        chunk = bytes(self.view[self._position : end])
        self._position = end
        return chunk


SEND_SLICE = 1024 * 1024


class _PartPayload(payload.BytesPayload):
    """Send a part in slices, each of which must leave within the stall timeout.

    aiohttp starts its read timeout only once the whole body is written, so a store that stops
    reading mid-body would otherwise hold the upload forever on a blocked write.
    """

    def __init__(self, value: memoryview, stall_timeout: float | None, *args: Any, **kwargs: Any) -> None:
        super().__init__(value, *args, **kwargs)
        self._view = value
        self._stall_timeout = stall_timeout

    async def write(self, writer: Any) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        view = self._view if content_length is None else self._view[:content_length]
        for start in range(0, len(view), SEND_SLICE):
            # TimeoutError reaches aiobotocore as ReadTimeoutError: retried, then 504.
            async with asyncio.timeout(self._stall_timeout):
                await writer.write(view[start : start + SEND_SLICE])


def _part_payload(value: PartBody, *args: Any, **kwargs: Any) -> payload.BytesPayload:
    return _PartPayload(value.view, value.stall_timeout, *args, **kwargs)


payload.register_payload(_part_payload, PartBody)  # type: ignore[arg-type]  # any factory works


class PrehashedS3SigV4Auth(S3SigV4Auth):  # type: ignore[misc]  # botocore is untyped
    """SigV4 for S3 that takes a part's payload sha256 from its ``PartBody`` when one was computed.

    botocore hashes the whole body for the signature on plain-HTTP endpoints (and on HTTPS when no
    Content-MD5 is sent), synchronously, on the event loop: a quarter of the loop's time in a
    profiled 1 GiB upload. The sink computes that digest in a worker thread instead, next to the
    part checksum, and this signer uses it. The signature covers the same bytes either way.
    """

    def payload(self, request: Any) -> str:
        """Return the precomputed digest of a ``PartBody`` if the payload is to be signed, else defer."""
        body = request.body
        if (
            isinstance(body, PartBody)
            and body.sha256 is not None
            and not self._is_streaming_checksum_payload(request)
            and self._should_sha256_sign_payload(request)
        ):
            return body.sha256
        return str(super().payload(request))


def _use_prehashed_signer() -> None:
    # aiobotocore looks the signer class up in this table for every request.
    if auth.AUTH_TYPE_MAPS.get("s3v4") is S3SigV4Auth:
        auth.AUTH_TYPE_MAPS["s3v4"] = PrehashedS3SigV4Auth


def _part_digests(algorithm: str, body: memoryview, payload_sha256: bool) -> tuple[dict[str, str], str | None]:
    """Return the part checksum arguments and, if the signer needs it, the payload sha256 (run in a thread)."""
    return _checksum_args(algorithm, body), hashlib.sha256(body).hexdigest() if payload_sha256 else None


def _checksum_args(algorithm: str, body: memoryview) -> dict[str, str]:
    if algorithm == "md5":
        return {"ContentMD5": base64.b64encode(hashlib.md5(body).digest()).decode()}
    if algorithm == "crc32":
        return {"ChecksumCRC32": base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()}
    if algorithm == "sha256":
        return {"ChecksumSHA256": base64.b64encode(hashlib.sha256(body).digest()).decode()}
    return {}


def _multipart_checksum_algorithm(algorithm: str) -> dict[str, str]:
    return {"ChecksumAlgorithm": algorithm.upper()} if algorithm in ("crc32", "sha256") else {}


class S3Sink:
    """Store recordings in one bucket under one prefix, with one long-lived client."""

    def __init__(self, options: S3Options) -> None:
        self.options = options
        self.description = f"s3://{options.bucket}/{options.prefix}"
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._key_locks: dict[str, asyncio.Lock] = {}
        # botocore signs the payload (sha256 of every part) unless it goes over HTTPS with a Content-MD5.
        self.payload_sha256 = (options.endpoint_url or "https:").startswith("http:") or options.checksum != "md5"
        self.observe: Callable[[str, float, int], None] = lambda operation, seconds, retries: None

    async def start(self) -> None:
        """Create the client; its connection pool is sized for every part the budget can hold."""
        o = self.options
        config = AioConfig(
            max_pool_connections=o.max_pool_connections,
            # botocore's "max_attempts" counts retries, not tries; "total_max_attempts" is what the flag means
            retries={"total_max_attempts": o.max_attempts, "mode": "standard"},
            connect_timeout=o.connect_timeout,
            read_timeout=o.read_timeout,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path" if o.endpoint_url else "auto"},
            signature_version="s3v4",  # presigned links too: SigV2 links are refused in most regions
        )
        _zero_copy_writes()
        _use_prehashed_signer()
        session = get_session()
        self._client = await self._stack.enter_async_context(
            # verify=None keeps botocore's default (verification on, AWS_CA_BUNDLE honoured); never False.
            session.create_client(
                "s3", endpoint_url=o.endpoint_url, region_name=o.region, config=config, verify=o.ca_bundle
            )
        )

    async def close(self) -> None:
        """Close the client and its connections."""
        await self._stack.aclose()
        self._client = None

    @property
    def region(self) -> str:
        """The region the client talks to."""
        return str(getattr(self._client.meta, "region_name", None) or self.options.region or "us-east-1")

    def object_url(self, key: str) -> str:
        """Return the object's URL as the platform's sample builds it (virtual-hosted on AWS, path-style elsewhere)."""
        quoted = quote(key, safe="/")
        if self.options.endpoint_url:
            return f"{self.options.endpoint_url.rstrip('/')}/{self.options.bucket}/{quoted}"
        if "." in self.options.bucket:  # a dotted bucket breaks the TLS wildcard of virtual-hosted names
            return f"https://s3.{self.region}.amazonaws.com/{self.options.bucket}/{quoted}"
        return f"https://{self.options.bucket}.s3.{self.region}.amazonaws.com/{quoted}"

    async def url_for(self, key: str) -> str:
        """Return the URL the answer carries for ``key``, as ``url_mode`` asks."""
        if self.options.url_mode == "presigned":
            # Signing is local (no request), with the client's current credentials; the link
            # stops working when they expire, whichever comes first.
            return str(
                await self._client.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self.options.bucket, "Key": key},
                    ExpiresIn=self.options.presign_expires,
                )
            )
        if self.options.url_mode == "s3uri":
            return f"s3://{self.options.bucket}/{key}"
        return self.object_url(key)

    async def call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """Call one S3 operation (botocore retries inside); raise only the error tree."""
        method: Callable[..., Awaitable[dict[str, Any]]] = getattr(self._client, _snake(operation))
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            response = await method(**kwargs)
        except Exception as exc:
            retries = 0
            if isinstance(exc, ClientError):
                retries = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
            self.observe(operation, loop.time() - started, retries)
            mapped = map_error(operation, exc)
            if isinstance(mapped, StorageError):
                log.warning("storage_error", operation=operation, s3_code=mapped.storage_code, error=mapped.message)
            raise mapped from exc
        self.observe(operation, loop.time() - started, response.get("ResponseMetadata", {}).get("RetryAttempts", 0))
        return response

    def key_lock(self, key: str) -> asyncio.Lock:
        """Return the lock that serializes this process's final writes to ``key``."""
        lock = self._key_locks.get(key)
        if lock is None:
            lock = self._key_locks[key] = asyncio.Lock()
        return lock

    def release_key_lock(self, key: str, lock: asyncio.Lock) -> None:
        """Forget an idle lock so the table does not grow with every key ever written."""
        if not lock.locked() and not lock._waiters and self._key_locks.get(key) is lock:
            del self._key_locks[key]

    async def open(
        self,
        key: str | None,
        *,
        content_type: str,
        metadata: Mapping[str, str],
        tags: Mapping[str, str] | None = None,
    ) -> S3Writer:
        """Start an upload; nothing is sent to S3 until the first part is full or the upload completes."""
        return S3Writer(self, key, content_type, metadata, tags or {})

    async def is_ours(self, key: str, token: str) -> bool:
        """Whether ``key`` exists and was written by the upload that carries ``token``.

        Raises ``StorageError`` when that cannot be told: answering 409 ``exists`` for what may be
        our own stored recording would be a false claim.
        """
        try:
            head = await self.call("HeadObject", Bucket=self.options.bucket, Key=key)
        except KeyExists:
            return False
        except StorageError as exc:
            if exc.storage_code in ("404", "NoSuchKey"):
                return False
            raise
        return bool(head.get("Metadata", {}).get(UPLOAD_ID_META) == token)

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
                    await self.call(
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
                    await self.call("DeleteObject", Bucket=bucket, Key=obj["Key"])
                except (StorageError, KeyExists) as exc:
                    error = exc.message
            found.append(SweepItem("staging_object", obj["Key"], age, error))
        return found

    def _pages(self, operation: str, prefix: str) -> Any:
        return self._client.get_paginator(operation).paginate(Bucket=self.options.bucket, Prefix=prefix)


def _snake(operation: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")


class S3Writer:
    """One upload into S3; see the module docstring for the sequence of calls."""

    def __init__(
        self,
        sink: S3Sink,
        key: str | None,
        content_type: str,
        metadata: Mapping[str, str],
        tags: Mapping[str, str],
    ) -> None:
        self._sink = sink
        self._o = sink.options
        self._token = uuid.uuid4().hex
        self._final_key = key
        self._staged = key is None
        self._key = key if key is not None else f"{self._o.prefix}{STAGING_DIR}{self._token}"
        self._content_type = content_type
        self._metadata = {**metadata, UPLOAD_ID_META: self._token}
        self._early_tags = dict(tags)  # tags known at open: a direct multipart upload starts with them
        self._single: PartBuffer | None = None
        self._upload_id: str | None = None
        self._copy_upload_id: str | None = None
        self._copy_key: str | None = None
        self._staging_written = False
        self._tasks: list[asyncio.Task[None]] = []
        self._slots = asyncio.Semaphore(self._o.part_concurrency)
        self._parts: dict[int, dict[str, Any]] = {}
        self._next_number = 1
        self._size = 0
        self._error: Exception | None = None
        self._finished = False
        self._head_deferred = False
        self._head_sha: Any = None  # hashlib state of part 1 (header included), when it came last
        self._head_length = 0

    def defer_head(self) -> None:
        """Part 1 comes last (``write_head``): number the parts that come first from 2."""
        self._head_deferred = True
        self._next_number = 2

    async def write_head(self, part: PartBuffer) -> None:
        """Upload part 1 after the others, or keep it for a single PUT if it is the whole recording."""
        if self._error is not None:
            part.release()
            raise self._error
        self._size += part.length
        if self._upload_id is None:
            self._single = part
            return
        try:
            self._head_sha = await asyncio.to_thread(hashlib.sha256, part.view)
        except BaseException:
            part.release()
            raise
        self._head_length = part.length
        await self._start_part(part, number=1)

    async def write(self, part: PartBuffer, *, last: bool = False) -> None:
        """Keep a lone last part for a single PUT; otherwise run a multipart upload with bounded concurrency."""
        if self._error is not None:
            part.release()
            raise self._error
        self._size += part.length
        if self._upload_id is None:
            if last and not self._head_deferred:
                self._single = part  # the whole recording fits one part: complete() PUTs it
                return
            try:
                response = await self._sink.call(
                    "CreateMultipartUpload",
                    Bucket=self._o.bucket,
                    Key=self._key,
                    ContentType=self._content_type,
                    Metadata=self._metadata,
                    **_multipart_checksum_algorithm(self._o.checksum),
                    **(self._o.encryption_args() if self._staged else self._o.object_args(self._early_tags)),
                )
            except BaseException:
                part.release()
                raise
            self._upload_id = response["UploadId"]
        await self._start_part(part)

    async def _start_part(self, part: PartBuffer, number: int | None = None) -> None:
        if number is None:
            number = self._next_number
            self._next_number += 1
        try:
            await self._slots.acquire()
        except BaseException:
            part.release()
            raise
        self._tasks.append(asyncio.ensure_future(self._upload_part(number, part)))

    async def _upload_part(self, number: int, part: PartBuffer) -> None:
        try:
            body = part.view
            checksum, digest = await asyncio.to_thread(_part_digests, self._o.checksum, body, self._sink.payload_sha256)
            response = await self._sink.call(
                "UploadPart",
                Bucket=self._o.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=PartBody(body, digest, self._o.read_timeout),
                **checksum,
            )
            entry: dict[str, Any] = {"PartNumber": number, "ETag": response["ETag"]}
            entry.update({k: v for k, v in checksum.items() if k.startswith("Checksum")})
            self._parts[number] = entry
        except Exception as exc:
            if self._error is None:
                self._error = exc
        finally:
            part.release()
            self._slots.release()

    async def complete(
        self,
        *,
        key: str | None = None,
        metadata: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Stored:
        """Finish the upload (single PUT, multipart complete, or staged copy); abort and raise on failure.

        ``tags`` are added to the configured ones; after a direct multipart upload, whose
        metadata was fixed at its start, ``metadata`` joins them as tags too.
        """
        final_key = key or self._final_key
        extra = dict(metadata or {})
        request_tags = dict(tags or {})
        digest: str | None = None
        try:
            if final_key is None:
                raise BadRequest("no key for the upload", code="missing_field")
            if self._upload_id is None:
                await self._put_single(extra, request_tags, conditional=not self._staged)
                etag_parts = 1
            else:
                await self._complete_multipart()
                etag_parts = len(self._parts)
                if self._head_sha is not None:
                    digest = await self._read_back(final_key if not self._staged else self._key)
                    extra["sha256"] = digest
            if self._staged:
                self._staging_written = True
                await self._move(final_key, extra, request_tags)
            elif etag_parts > 1 and (extra or request_tags):
                await self._tag(final_key, merge_tags(dict(self._o.tags), request_tags, extra))
        except BaseException:
            await self.abort()
            raise
        self._finished = True
        return Stored(
            key=final_key,
            url=await self._sink.url_for(final_key),
            bucket=self._o.bucket,
            parts=etag_parts,
            sha256=digest,
        )

    async def _read_back(self, key: str) -> str:
        """Hash the stored object: part 1's hash, continued over the rest read back (see the module docstring).

        If that fails after a direct upload completed, the object is removed again: an answer of
        failure must not leave a recording behind.
        """
        sha, expected = self._head_sha, self._size - self._head_length
        read = 0
        try:
            response = await self._sink.call(
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
        try:
            if await self._sink.is_ours(key, self._token):
                await self._sink.call("DeleteObject", Bucket=self._o.bucket, Key=key)
        except (StorageError, KeyExists) as exc:
            log.error("read_back_cleanup_failed", key=key, error=str(exc), hint="delete the object by hand")

    async def _put_single(self, extra: Mapping[str, str], tags: Mapping[str, str], *, conditional: bool) -> None:
        single, self._single = self._single, None
        try:
            body = single.view if single is not None else memoryview(b"")
            checksum, digest = await asyncio.to_thread(_part_digests, self._o.checksum, body, self._sink.payload_sha256)
            kwargs: dict[str, Any] = dict(
                Bucket=self._o.bucket,
                Key=self._key,
                Body=PartBody(body, digest, self._o.read_timeout),
                ContentType=self._content_type,
                Metadata={**self._metadata, **extra},
                **checksum,
                **(self._o.encryption_args() if self._staged else self._o.object_args(tags)),
            )
            await self._final_write("PutObject", self._key, kwargs, conditional=conditional)
        finally:
            if single is not None:
                single.release()

    async def _complete_multipart(self) -> None:
        await asyncio.gather(*self._tasks)
        self._tasks = []
        if self._error is not None:
            raise self._error
        parts = [self._parts[n] for n in sorted(self._parts)]
        kwargs = dict(Bucket=self._o.bucket, Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": parts})
        await self._final_write("CompleteMultipartUpload", self._key, kwargs, conditional=not self._staged)
        self._upload_id = None

    async def _final_write(self, operation: str, key: str, kwargs: dict[str, Any], *, conditional: bool) -> None:
        """Make the object visible: a conditional write, serialized per key, safe against lost responses."""
        if conditional and not self._o.overwrite:
            kwargs["IfNoneMatch"] = "*"
        lock = self._sink.key_lock(key)
        try:
            async with lock:
                for attempt in range(_CONFLICT_ATTEMPTS):
                    try:
                        await self._sink.call(operation, **kwargs)
                        return
                    except KeyExists:
                        if await self._sink.is_ours(key, self._token):
                            return
                        raise
                    except StorageError as exc:
                        if exc.storage_code == "NoSuchUpload" and await self._sink.is_ours(key, self._token):
                            return
                        # 409 ConditionalRequestConflict: another write to this key is in flight
                        # elsewhere; S3 asks to retry, and the retry then sees 412 or succeeds.
                        if exc.storage_code != "ConditionalRequestConflict" or attempt == _CONFLICT_ATTEMPTS - 1:
                            raise
                        await asyncio.sleep(0.2 * 2**attempt)
        finally:
            self._sink.release_key_lock(key, lock)

    async def _move(self, final_key: str, extra: Mapping[str, str], tags: Mapping[str, str]) -> None:
        """Copy the staging object to its final key server-side, then delete the staging object."""
        create = await self._sink.call(
            "CreateMultipartUpload",
            Bucket=self._o.bucket,
            Key=final_key,
            ContentType=self._content_type,
            Metadata={**self._metadata, **extra},
            **self._o.object_args(tags),
        )
        self._copy_key, self._copy_upload_id = final_key, create["UploadId"]
        source = {"Bucket": self._o.bucket, "Key": self._key}
        step = max(self._o.part_size, COPY_PART_SIZE)
        ranges = [(start, min(start + step, self._size) - 1) for start in range(0, self._size, step)]
        limit = asyncio.Semaphore(self._o.part_concurrency)

        async def copy(number: int, first: int, last: int) -> dict[str, Any]:
            async with limit:
                response = await self._sink.call(
                    "UploadPartCopy",
                    Bucket=self._o.bucket,
                    Key=final_key,
                    UploadId=self._copy_upload_id,
                    PartNumber=number,
                    CopySource=source,
                    CopySourceRange=f"bytes={first}-{last}",
                )
            return {"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]}

        parts = await asyncio.gather(*(copy(n, a, b) for n, (a, b) in enumerate(ranges, start=1)))
        kwargs = dict(
            Bucket=self._o.bucket,
            Key=final_key,
            UploadId=self._copy_upload_id,
            MultipartUpload={"Parts": list(parts)},
        )
        await self._final_write("CompleteMultipartUpload", final_key, kwargs, conditional=True)
        self._copy_upload_id = None
        # The recording is stored now: a staging copy we cannot delete is sweep's job, not a failure.
        try:
            await self._delete_staging()
        except (StorageError, KeyExists) as exc:
            self._staging_written = False
            log.error("staging_delete_failed", key=self._key, error=str(exc), hint="run streamproxy sweep")

    async def _tag(self, key: str, extra: Mapping[str, str]) -> None:
        # The object is stored at this point: a failed tag is worth a warning, not a failed upload.
        # PutObjectTagging replaces the whole set, so ``extra`` is the merged set (at most 10).
        tags = [{"Key": k, "Value": v} for k, v in extra.items()]
        try:
            await self._sink.call("PutObjectTagging", Bucket=self._o.bucket, Key=key, Tagging={"TagSet": tags})
        except (StorageError, KeyExists) as exc:
            log.warning("tagging_failed", key=key, error=str(exc))

    async def _delete_staging(self) -> None:
        if self._staging_written:
            await self._sink.call("DeleteObject", Bucket=self._o.bucket, Key=self._key)
            self._staging_written = False

    async def abort(self) -> None:
        """Cancel part uploads, abort multipart uploads, delete staging bytes. Idempotent."""
        if self._finished:
            return
        self._finished = True
        await asyncio.shield(self._abort())

    async def _abort(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._single is not None:
            self._single.release()
            self._single = None
        for key, upload_id in ((self._key, self._upload_id), (self._copy_key, self._copy_upload_id)):
            if upload_id is not None and key is not None:
                await self._abort_upload(key, upload_id)
        self._upload_id = self._copy_upload_id = None
        try:
            await self._delete_staging()
        except (StorageError, KeyExists) as exc:
            log.error("staging_delete_failed", key=self._key, error=str(exc), hint="run streamproxy sweep")

    async def _abort_upload(self, key: str, upload_id: str) -> None:
        for attempt in range(_ABORT_ATTEMPTS):
            try:
                await self._sink.call("AbortMultipartUpload", Bucket=self._o.bucket, Key=key, UploadId=upload_id)
                return
            except StorageError as exc:
                if exc.storage_code == "NoSuchUpload":
                    return
                if attempt == _ABORT_ATTEMPTS - 1:
                    log.error(
                        "abort_failed", key=key, upload_id=upload_id, error=exc.message, hint="run streamproxy sweep"
                    )
                    return
                await asyncio.sleep(0.5 * 2**attempt)
