"""The notification metrics, read from each ``Notifier``'s ``NotifyStats`` at scrape time.

A collector rather than counters updated in place: the stats live in the notifiers (one per
outbox), which come and go with the app, while the registry belongs to the app's ``Metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .delivery import NotifyStats

__all__ = ["NotifyCollector"]


class NotifyCollector(Collector):
    """Sums the stats of every notifier that ``sources`` returns."""

    def __init__(self, sources: Callable[[], Iterable[NotifyStats]]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Yield the metric families (names in docs/observability.md)."""
        stats = list(self._sources())
        pending = GaugeMetricFamily(
            "streamproxy_notify_pending",
            "Deliveries (event x target) waiting in the outbox, as of the last scan",
            value=sum(s.pending for s in stats),
        )
        oldest = GaugeMetricFamily(
            "streamproxy_notify_oldest_pending_seconds",
            "Age of the oldest event waiting in the outbox, as of the last scan (0 when none waits)",
            value=max((s.oldest_pending_seconds for s in stats), default=0.0),
        )
        yield pending
        yield oldest
        for name, help_text, value in (
            ("streamproxy_notify_delivered", "Deliveries a target accepted (2xx, SendMessage, Publish)", "delivered"),
            ("streamproxy_notify_retried", "Failed attempts that will be retried with backoff", "retried"),
            (
                "streamproxy_notify_dead",
                "Deliveries moved to the dead letters (final 4xx, or older than --notify-max-age)",
                "dead",
            ),
            (
                "streamproxy_notify_outbox_failures",
                "Events not written to the outbox although their recording was stored (never delivered)",
                "outbox_failures",
            ),
        ):
            yield CounterMetricFamily(name, help_text, value=sum(getattr(s, value) for s in stats))
