"""From settings to sinks: the one place that knows both the configuration and the sink classes.

``sinks`` import no configuration; this module hands them what they need.
"""

from __future__ import annotations

from .config import Settings
from .notify.delivery import DeliveryPolicy
from .notify.service import NotifyHub
from .notify.signing import Signer
from .notify.targets import Targets
from .sinks import Sink
from .sinks.fs import FileSink
from .sinks.s3 import S3Options, S3Sink

__all__ = ["build_notify_hub", "build_s3_sink", "build_sink"]


def build_s3_sink(settings: Settings, *, probe: bool = True) -> S3Sink:
    """Build the S3 sink for ``settings`` (an ``s3://`` storage; not started yet).

    ``probe=False``: the sink learns no capabilities at start unless they are pinned (``sweep``).
    """
    return S3Sink(S3Options.from_settings(settings), probe=probe)


def build_sink(settings: Settings, *, probe: bool = True) -> Sink:
    """Build the sink that ``settings.storage`` names (not started yet)."""
    if settings.storage.scheme == "s3":
        return build_s3_sink(settings, probe=probe)
    return FileSink(settings.storage.path, overwrite=settings.overwrite)


def build_notify_hub(settings: Settings, routes: tuple[Settings, ...] = ()) -> NotifyHub | None:
    """Build the process's notification hub, or ``None`` when no route has a target.

    The secret, timeouts and backoff are process-wide; the targets belong to each route.
    """
    if not settings.notify_targets and not any(route.notify_targets for route in routes):
        return None
    secret = settings.notify_signing_secret
    targets = Targets(
        signer=Signer(secret) if secret is not None else None,
        timeout=settings.notify_timeout,
        region=settings.s3_region,
        ca_bundle=settings.s3_ca_bundle,
    )
    policy = DeliveryPolicy(
        max_age=settings.notify_max_age,
        attempt_timeout=settings.notify_timeout,
        backoff_base=settings.notify_backoff,
        backoff_cap=settings.notify_backoff_max,
        # a scan at least every 10 s picks up other servers' leftovers and retried dead letters
        poll_interval=min(10.0, max(0.1, settings.notify_backoff_max)),
    )
    return NotifyHub(targets, policy)
