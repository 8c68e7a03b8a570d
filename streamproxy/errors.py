"""The error tree: every failure streamproxy reports carries a stable code and an HTTP status.

::

    StreamproxyError                 code, status, message
    ├── ClientFault                  4xx: the request is at fault; retrying it unchanged will fail again
    │   ├── BadRequest               400  missing_field, empty_recording, malformed_body,
    │   │                                 invalid_filename, invalid_key, duplicate_field, ...
    │   ├── Unauthorized             401  unauthorized
    │   ├── Forbidden                403  forbidden
    │   ├── RequestTimeout           408  client_timeout
    │   ├── KeyExists                409  exists
    │   ├── PayloadTooLarge          413  too_large
    │   └── UnsupportedMediaType     415  unsupported_media_type
    ├── Unavailable                  503  busy, draining (with Retry-After)
    └── StorageError                 5xx: storage failed; the recording was NOT stored
        ├── StorageFailed            502  storage_failed
        ├── StorageUnavailable       503  storage_unavailable
        └── StorageTimeout           504  storage_timeout

Sinks raise ``KeyExists`` and ``StorageError`` subclasses only, so the HTTP layer never sees a
botocore or OS exception. This module imports nothing from aiohttp or botocore.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "ClientFault",
    "ConfigError",
    "Forbidden",
    "KeyExists",
    "PayloadTooLarge",
    "RequestTimeout",
    "StorageError",
    "StorageFailed",
    "StorageTimeout",
    "StorageUnavailable",
    "StreamproxyError",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
]


class StreamproxyError(Exception):
    """Base of every error streamproxy reports to a client."""

    status: int = 500
    default_code: str = "internal_error"

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None) -> None:
        # A subclass names its status and default code in its header: ``class X(Base, status=409, code="exists")``.
        super().__init_subclass__()
        if status is not None:
            cls.status = status
        if code is not None:
            cls.default_code = code

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code

    def to_json(self) -> dict[str, str]:
        """Return the failure body the HTTP contract promises."""
        return {"status": "failure", "error": self.code, "message": self.message}


class ClientFault(StreamproxyError, status=400, code="bad_request"):
    """The request is at fault (4xx)."""


class BadRequest(ClientFault):
    """Malformed or unacceptable input (400)."""


class Unauthorized(ClientFault, status=401, code="unauthorized"):
    """No valid credentials were presented (401); ``challenges`` become ``WWW-Authenticate`` headers."""

    def __init__(self, message: str, *, code: str | None = None, challenges: tuple[str, ...] = ()) -> None:
        super().__init__(message, code=code)
        self.challenges = challenges


class Forbidden(ClientFault, status=403, code="forbidden"):
    """The client may not use this endpoint (403)."""


class RequestTimeout(ClientFault, status=408, code="client_timeout"):
    """The client stopped sending for too long (408)."""


class KeyExists(ClientFault, status=409, code="exists"):
    """The target key already exists and overwriting is off (409)."""


class PayloadTooLarge(ClientFault, status=413, code="too_large"):
    """The recording is larger than the configured limit (413)."""


class UnsupportedMediaType(ClientFault, status=415, code="unsupported_media_type"):
    """The request or recording has a content type we do not accept (415)."""


class Unavailable(StreamproxyError, status=503, code="busy"):
    """The server cannot take the upload right now; the client should retry later (503)."""

    def __init__(self, message: str, *, code: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class StorageError(StreamproxyError, status=502, code="storage_failed"):
    """Storage failed; nothing was stored (5xx)."""

    def __init__(self, message: str, *, code: str | None = None, storage_code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.storage_code = storage_code


class StorageFailed(StorageError):
    """Storage answered with an error (502)."""


class StorageUnavailable(StorageError, status=503, code="storage_unavailable"):
    """Storage could not be reached or is throttling us (503)."""


class StorageTimeout(StorageError, status=504, code="storage_timeout"):
    """Storage did not answer in time (504)."""


class ConfigError(ValueError):
    """A setting is wrong; the message is one line meant for the operator (not an HTTP answer)."""
