"""Every process-wide change the S3 sink makes to aiohttp and botocore, installed once by ``install()``.

Part bodies reach the socket without a copy: botocore gets a small seekable ``PartBody`` over the
pooled buffer (seekable, so a retry resends it) and aiohttp sends its memoryview (a registered
payload type, sent in slices each bounded by the stall timeout). The signer takes a part's payload
sha256 from its ``PartBody`` when it was computed in a worker thread (``PrehashedS3SigV4Auth``).
"""

from __future__ import annotations

import asyncio
import functools
import warnings
from typing import Any

from aiohttp import http_writer, payload
from botocore import auth
from botocore.auth import S3SigV4Auth

__all__ = ["SEND_SLICE", "PartBody", "PrehashedS3SigV4Auth", "install"]

SEND_SLICE = 1024 * 1024


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

    def _should_sha256_sign_payload(self, request: Any) -> bool:
        """Also skip signing a part's body over HTTPS when it carries an ``x-amz-checksum-*`` value.

        botocore skips it only for Content-MD5 (or a checksum it computed itself), so a CRC64NVME
        sent explicitly would cost a sha256 of every part. Over TLS, with a checksum the store
        verifies, S3 accepts an unsigned payload; an explicit ``payload_signing_enabled`` still wins.
        """
        s3_config = getattr(request.context.get("client_config"), "s3", None) or {}
        if (
            s3_config.get("payload_signing_enabled") is None
            and request.url.startswith("https")
            and isinstance(request.body, PartBody)
            and any(name.lower() in _CHECKSUM_HEADERS for name in request.headers)
        ):
            return False
        return bool(super()._should_sha256_sign_payload(request))


# The headers that carry a part's checksum value (not the algorithm or type announcements).
_CHECKSUM_HEADERS = frozenset(f"x-amz-checksum-{name}" for name in ("crc32", "crc32c", "crc64nvme", "sha1", "sha256"))


def _zero_copy_writes() -> None:
    """Let aiohttp hand headers and body to the transport as a vector instead of joining them.

    aiohttp joins them (a full copy of every part) on Python < 3.12.9, because asyncio's own
    ``writelines`` was broken or copying there. uvloop's ``writelines`` is native and sound, so
    under uvloop the join only costs a copy per part in flight: 32 MiB at the defaults.
    """
    loop = asyncio.get_running_loop()
    if type(loop).__module__.startswith("uvloop") and getattr(http_writer, "SKIP_WRITELINES", False):
        http_writer.SKIP_WRITELINES = False


def install() -> None:
    """Install the patches (idempotent; called from the running loop when a sink starts)."""
    # The writelines choice depends on the running loop's type, so it is checked on every start.
    _zero_copy_writes()
    _install_once()


@functools.cache
def _install_once() -> None:
    # aiohttp warns that a large in-memory body "might lock the event loop"; writing a memoryview to a
    # non-blocking transport does not, and copying it into a BytesIO to silence this would cost a copy.
    warnings.filterwarnings("ignore", message="Sending a large body directly", category=ResourceWarning)
    payload.register_payload(_part_payload, PartBody)  # type: ignore[arg-type]  # any factory works
    # aiobotocore looks the signer class up in this table for every request. With awscrt installed
    # (it computes the CRC64NVME), botocore puts its CRT signer there, which copies and hashes every
    # part body on the event loop over plain HTTP.
    if auth.AUTH_TYPE_MAPS.get("s3v4") in _BOTOCORE_SIGNERS:
        auth.AUTH_TYPE_MAPS["s3v4"] = PrehashedS3SigV4Auth


def _botocore_signers() -> tuple[type, ...]:
    """Return botocore's own SigV4 signers for S3 (pure Python, and the CRT one when awscrt is installed)."""
    try:
        from botocore.crt.auth import CrtS3SigV4Auth
    except ImportError:  # botocore without its crt module
        return (S3SigV4Auth,)
    return (S3SigV4Auth, CrtS3SigV4Auth)


_BOTOCORE_SIGNERS = _botocore_signers()
