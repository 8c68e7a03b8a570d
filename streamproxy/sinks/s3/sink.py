"""``S3Sink``: recordings in one bucket under one prefix, through one long-lived ``S3Client``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from ...errors import ConfigError
from .. import ObjectSpec, SweepItem
from .adapt import STORE_ENFORCED, Strategy, protection_gaps, strategy
from .admin import S3Admin
from .capabilities import Capabilities
from .client import ClientFactory, S3Client, aiobotocore_client, map_error
from .options import S3Options
from .outbox import S3Outbox
from .pin import AWS_DOCUMENTED, load_pin
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
        self.probe_report: ProbeReport | None = None  # the evidence, when start() probed
        # What start() learned, even when adopting it failed (check prints it either way).
        self.learned: Capabilities | None = None
        self._probe = probe  # False: a tool that needs no capabilities (sweep) writes no probe objects
        # Given (tests), pinned (--s3-capabilities aws|FILE) or probed in start(); the writer adapts to it.
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
        if self.capabilities is None and self.options.s3_capabilities == "aws":
            # Assumed, not known: the writers follow S3 as documented (as before any probe existed),
            # and --checksum auto resolves as for a store never probed (adapt.resolve_checksum).
            self.learned = AWS_DOCUMENTED
            log.info("storage_capabilities", storage=self.description, **log_fields(AWS_DOCUMENTED), leftovers=[])
            return
        given = self.capabilities
        caps = given or load_pin(self.options.s3_capabilities)
        if caps is None:
            if not probe:
                return
            try:
                self.probe_report = await probe_capabilities(self.client.raw, self.options.bucket, self.options.prefix)
            except ProbeError as exc:
                raise map_error(f"capability probe ({exc.step})", exc.error) from exc
            caps = self.probe_report.capabilities
        self.learned = self.admin.capabilities = caps
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
        if caps is not given:  # decides the writers' strategy; refuses --require-conditional-writes it cannot meet
            self.capabilities = caps

    async def close(self) -> None:
        """Close the client and its connections."""
        await self.client.close()

    def object_url(self, key: str) -> str:
        """Return the object's URL as the platform's sample builds it."""
        return self.client.object_url(key)

    async def url_for(self, key: str) -> str:
        """Return the URL the answer carries for ``key``, as ``url_mode`` asks."""
        return await self.client.url_for(key)

    async def open(self, spec: ObjectSpec) -> S3Writer:
        """Start an upload; nothing is sent to S3 until the first part is full or the upload completes."""
        return S3Writer(self.client, spec, strategy=self._strategy)

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
