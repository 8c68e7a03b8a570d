"""``S3Sink``: recordings in one bucket under one prefix, through one long-lived ``S3Client``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog

from ...errors import ConfigError
from .. import SweepItem
from .adapt import STORE_ENFORCED, Strategy, protection_gaps, strategy
from .admin import S3Admin
from .capabilities import Capabilities
from .client import ClientFactory, S3Client, aiobotocore_client
from .options import S3Options
from .outbox import S3Outbox
from .writer import S3Writer

__all__ = ["S3Sink"]

log = structlog.get_logger("streamproxy.s3")


class S3Sink:
    """Store recordings in one bucket under one prefix; ``admin`` holds what ``check`` and ``sweep`` use."""

    def __init__(
        self,
        options: S3Options,
        *,
        client_factory: ClientFactory = aiobotocore_client,
        capabilities: Capabilities | None = None,
    ) -> None:
        self.options = options
        self.description = f"s3://{options.bucket}/{options.prefix}"
        self.client = S3Client(options, client_factory)
        self.admin = S3Admin(self.client)
        self._capabilities: Capabilities | None = None
        self._strategy = strategy(
            None, overwrite=options.overwrite, checksum=options.checksum, endpoint_url=options.endpoint_url
        )
        if capabilities is not None:
            self.capabilities = capabilities

    @property
    def capabilities(self) -> Capabilities | None:
        """What the store can do (probed at start, pinned, or injected); ``None``: not known, S3 assumed."""
        return self._capabilities

    @capabilities.setter
    def capabilities(self, capabilities: Capabilities | None) -> None:
        """Adopt what the store can do; ``ConfigError`` if ``--require-conditional-writes`` cannot be met."""
        o = self.options
        decided = strategy(capabilities, overwrite=o.overwrite, checksum=o.checksum, endpoint_url=o.endpoint_url)
        if capabilities is not None and o.require_conditional_writes and decided.protection != STORE_ENFORCED:
            raise ConfigError(
                f"--require-conditional-writes: {self.description} cannot refuse to replace a recording itself "
                f"({'; '.join(protection_gaps(capabilities))}); duplicates would be refused only best-effort"
            )
        self._capabilities = capabilities
        self._strategy = decided
        if capabilities is not None and not capabilities.abort_multipart:
            # Once per sink, not per upload: every interrupted upload on this store stays until the
            # bucket's lifecycle rule (AbortIncompleteMultipartUpload) removes it.
            log.warning(
                "abort_multipart_unsupported",
                storage=self.description,
                reason="the store does not remove a multipart upload on AbortMultipartUpload",
                effect="parts of interrupted uploads stay until the bucket's lifecycle rule removes them",
            )

    @property
    def strategy(self) -> Strategy:
        """How uploads adapt to this store (see ``adapt``)."""
        return self._strategy

    @property
    def observe(self) -> Callable[[str, float, int], None]:
        """Called after every S3 call with its operation, duration and retries (metrics)."""
        return self.client.observe

    @observe.setter
    def observe(self, hook: Callable[[str, float, int], None]) -> None:
        self.client.observe = hook

    async def start(self) -> None:
        """Create the client; its connection pool is sized for every part the budget can hold."""
        await self.client.start()

    async def close(self) -> None:
        """Close the client and its connections."""
        await self.client.close()

    def object_url(self, key: str) -> str:
        """Return the object's URL as the platform's sample builds it."""
        return self.client.object_url(key)

    async def url_for(self, key: str) -> str:
        """Return the URL the answer carries for ``key``, as ``url_mode`` asks."""
        return await self.client.url_for(key)

    async def open(
        self,
        key: str | None,
        *,
        content_type: str,
        metadata: Mapping[str, str],
        tags: Mapping[str, str] | None = None,
    ) -> S3Writer:
        """Start an upload; nothing is sent to S3 until the first part is full or the upload completes."""
        return S3Writer(self.client, key, content_type, metadata, tags or {}, strategy=self._strategy)

    def outbox_store(self) -> S3Outbox:
        """Return the notification outbox under ``<prefix>.streamproxy-outbox/`` (``OutboxCapable``)."""
        return S3Outbox(self.client)

    async def probe(self) -> None:
        """Check cheaply that the bucket is reachable with these credentials (see ``S3Admin.probe``)."""
        await self.admin.probe()

    async def object_lock(self) -> dict[str, Any] | None:
        """Return the bucket's Object Lock configuration, or ``None`` (see ``S3Admin.object_lock``)."""
        return await self.admin.object_lock()

    async def sweep(self, older_than: float, *, dry_run: bool, now: float | None = None) -> list[SweepItem]:
        """Remove leftovers older than ``older_than`` seconds (see ``S3Admin.sweep``)."""
        return await self.admin.sweep(older_than, dry_run=dry_run, now=now)
