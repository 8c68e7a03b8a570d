"""``S3Sink``: recordings in one bucket under one prefix, through one long-lived ``S3Client``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .. import SweepItem
from .admin import S3Admin
from .client import ClientFactory, S3Client, aiobotocore_client
from .options import S3Options
from .writer import S3Writer

__all__ = ["S3Sink"]


class S3Sink:
    """Store recordings in one bucket under one prefix; ``admin`` holds what ``check`` and ``sweep`` use."""

    def __init__(self, options: S3Options, *, client_factory: ClientFactory = aiobotocore_client) -> None:
        self.options = options
        self.description = f"s3://{options.bucket}/{options.prefix}"
        self.client = S3Client(options, client_factory)
        self.admin = S3Admin(self.client)

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
        return S3Writer(self.client, key, content_type, metadata, tags or {})

    async def probe(self) -> None:
        """Check cheaply that the bucket is reachable with these credentials (see ``S3Admin.probe``)."""
        await self.admin.probe()

    async def object_lock(self) -> dict[str, Any] | None:
        """Return the bucket's Object Lock configuration, or ``None`` (see ``S3Admin.object_lock``)."""
        return await self.admin.object_lock()

    async def sweep(self, older_than: float, *, dry_run: bool, now: float | None = None) -> list[SweepItem]:
        """Remove leftovers older than ``older_than`` seconds (see ``S3Admin.sweep``)."""
        return await self.admin.sweep(older_than, dry_run=dry_run, now=now)
