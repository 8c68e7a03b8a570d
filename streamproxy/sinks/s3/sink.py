"""``S3Sink``: recordings in one bucket under one prefix, through one long-lived ``S3Client``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog

from ...errors import ConfigError
from .. import SweepItem
from .admin import S3Admin
from .capabilities import Capabilities
from .client import ClientFactory, S3Client, aiobotocore_client, map_error
from .options import S3Options
from .pin import load_pin
from .probe import ProbeError, ProbeReport, log_fields
from .probe import probe as probe_capabilities
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
        probe: bool = True,
    ) -> None:
        self.options = options
        self.description = f"s3://{options.bucket}/{options.prefix}"
        self.client = S3Client(options, client_factory)
        self.admin = S3Admin(self.client)
        # Given (tests), pinned (--s3-capabilities aws|FILE) or probed in start(); the writer adapts to it.
        self.capabilities = capabilities
        self.probe_report: ProbeReport | None = None  # the evidence, when start() probed
        self._probe = probe  # False: a tool that needs no capabilities (sweep) writes no probe objects

    @property
    def observe(self) -> Callable[[str, float, int], None]:
        """Called after every S3 call with its operation, duration and retries (metrics)."""
        return self.client.observe

    @observe.setter
    def observe(self, hook: Callable[[str, float, int], None]) -> None:
        self.client.observe = hook

    async def start(self) -> None:
        """Create the client, then learn what the store supports (probe, unless given or pinned).

        Raises ``StorageError`` when the store cannot be probed at all (unreachable, no bucket, no
        write right) and ``ConfigError`` when ``--checksum`` names a mode this store refuses: either
        way ``serve`` would fail every upload, so it stops at start with the reason instead.
        """
        await self.client.start()
        try:
            await self.learn_capabilities(probe=self._probe)
        except BaseException:
            await self.client.close()
            raise

    async def learn_capabilities(self, *, probe: bool = True) -> None:
        """Take the given or pinned capabilities, or probe the store (``probe``); see ``start`` for errors."""
        if self.capabilities is None:
            self.capabilities = load_pin(self.options.s3_capabilities)
        if self.capabilities is None:
            if not probe:
                return
            try:
                self.probe_report = await probe_capabilities(self.client.raw, self.options.bucket, self.options.prefix)
            except ProbeError as exc:
                raise map_error(f"capability probe ({exc.step})", exc.error) from exc
            self.capabilities = self.probe_report.capabilities
        self.admin.capabilities = self.capabilities
        caps = self.capabilities
        log.info(
            "storage_capabilities",
            storage=self.description,
            **log_fields(caps),
            leftovers=self.probe_report.leftovers if self.probe_report else [],
        )
        mode = self.options.checksum
        if mode not in ("none", "auto") and mode not in caps.accepted_checksums | caps.checksums:
            evidence = self.probe_report.evidence.get(f"checksum_{mode}", "") if self.probe_report else "pinned"
            usable = ", ".join(sorted(caps.accepted_checksums | caps.checksums)) or "none"
            raise ConfigError(f"--checksum {mode}: {self.description} does not take it ({evidence}); use {usable}")

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
