"""One long-lived S3 client: start/close, ``call`` with error mapping, per-key locks, "is this object ours".

The client is made by a factory (``ClientFactory``), aiobotocore's by default; tests inject a fake
one, as tusd's ``S3API`` and smart_open's ``client`` parameter allow.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import quote

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
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

from ...errors import KeyExists, StorageError, StorageFailed, StorageTimeout, StorageUnavailable
from . import transport
from .options import S3Options

__all__ = ["UPLOAD_ID_META", "ClientFactory", "S3Client", "aiobotocore_client", "map_error"]

log = structlog.get_logger("streamproxy.s3")

UPLOAD_ID_META = "streamproxy-upload-id"

# Makes the low-level client (aiobotocore's ``AioBaseClient`` or a fake with the same methods).
ClientFactory = Callable[[S3Options], AbstractAsyncContextManager[Any]]


def aiobotocore_client(o: S3Options) -> AbstractAsyncContextManager[Any]:
    """Make the real client; its connection pool is sized for every part the budget can hold."""
    config = AioConfig(
        max_pool_connections=o.max_pool_connections,
        # botocore's "max_attempts" counts retries, not tries; "total_max_attempts" is what the flag means
        retries={"total_max_attempts": o.s3_max_attempts, "mode": "standard"},
        connect_timeout=o.connect_timeout,
        read_timeout=o.s3_timeout,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path" if o.endpoint_url else "auto"},
        signature_version="s3v4",  # presigned links too: SigV2 links are refused in most regions
    )
    # verify=None keeps botocore's default (verification on, AWS_CA_BUNDLE honoured); never False.
    return get_session().create_client(  # type: ignore[no-any-return]
        "s3", endpoint_url=o.endpoint_url, region_name=o.s3_region, config=config, verify=o.s3_ca_bundle
    )


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


def _snake(operation: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")


class S3Client:
    """The sink's one client and what every upload shares through it (key locks, the ``observe`` hook)."""

    def __init__(self, options: S3Options, factory: ClientFactory = aiobotocore_client) -> None:
        self.options = options
        self._factory = factory
        self._stack = AsyncExitStack()
        self._client: Any = None
        # key -> (lock, number of holders and waiters): an idle entry is dropped so the table stays small
        self._key_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        # botocore signs the payload (sha256 of every part) unless it goes over HTTPS with a Content-MD5.
        self.payload_sha256 = (options.endpoint_url or "https:").startswith("http:") or options.checksum != "md5"
        self.observe: Callable[[str, float, int], None] = lambda operation, seconds, retries: None

    @property
    def raw(self) -> Any:
        """The low-level client, for calls that are not an upload's (probe, listing, presigning)."""
        return self._client

    async def start(self) -> None:
        """Install the transport patches and create the client."""
        transport.install()
        self._client = await self._stack.enter_async_context(self._factory(self.options))

    async def close(self) -> None:
        """Close the client and its connections."""
        await self._stack.aclose()
        self._client = None

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

    @asynccontextmanager
    async def key_lock(self, key: str) -> AsyncIterator[None]:
        """Serialize this process's final writes to ``key``: S3 makes the condition atomic, moto does not."""
        lock, users = self._key_locks.get(key, (asyncio.Lock(), 0))
        self._key_locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._key_locks[key]
            if users == 1:
                del self._key_locks[key]
            else:
                self._key_locks[key] = (lock, users - 1)

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

    @property
    def region(self) -> str:
        """The region the client talks to."""
        return str(getattr(self._client.meta, "region_name", None) or self.options.s3_region or "us-east-1")

    def object_url(self, key: str) -> str:
        """Return the object's URL as the platform's sample builds it (virtual-hosted on AWS, path-style elsewhere)."""
        o = self.options
        quoted = quote(key, safe="/")
        if o.endpoint_url:
            return f"{o.endpoint_url.rstrip('/')}/{o.bucket}/{quoted}"
        if "." in o.bucket:  # a dotted bucket breaks the TLS wildcard of virtual-hosted names
            return f"https://s3.{self.region}.amazonaws.com/{o.bucket}/{quoted}"
        return f"https://{o.bucket}.s3.{self.region}.amazonaws.com/{quoted}"

    async def url_for(self, key: str) -> str:
        """Return the URL the answer carries for ``key``, as ``url_mode`` asks."""
        o = self.options
        if o.url_mode == "presigned":
            # Signing is local (no request), with the client's current credentials; the link
            # stops working when they expire, whichever comes first.
            return str(
                await self._client.generate_presigned_url(
                    "get_object", Params={"Bucket": o.bucket, "Key": key}, ExpiresIn=o.presign_expires
                )
            )
        if o.url_mode == "s3uri":
            return f"s3://{o.bucket}/{key}"
        return self.object_url(key)
