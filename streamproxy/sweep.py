"""``streamproxy sweep``: remove what interrupted uploads left behind, older than a given age.

On S3 that is incomplete multipart uploads under the prefix and objects under the staging prefix
(``<prefix>.streamproxy-staging/``); on a filesystem, ``.streamproxy-*.tmp`` files. A running
server's uploads are young, so a threshold well above the longest upload (``--older-than 24h``)
never touches live work. Each item is printed on one line; the exit status is 0 if every item
was removed (or ``--dry-run``), 1 if listing or any removal failed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from .config import Settings
from .errors import StorageError
from .sinks import SweepItem
from .wiring import build_sink

__all__ = ["KINDS", "format_age", "run_sweep", "write_metrics"]

KINDS = ("multipart_upload", "staging_object", "temp_file")


def format_age(seconds: float) -> str:
    """Render an age as ``3d4h``, ``2h5m``, ``7m30s`` or ``12s``."""
    whole = int(max(seconds, 0))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


_DONE = {"multipart_upload": "aborted", "staging_object": "deleted", "temp_file": "deleted"}


async def run_sweep(settings: Settings, out: TextIO = sys.stdout) -> int:
    """Sweep the storage ``settings`` name; print one line per leftover and a summary; return the exit status."""
    assert settings.older_than is not None
    older_than = settings.older_than
    dry = " (dry run: nothing is removed)" if settings.dry_run else ""
    print(f"streamproxy sweep: {settings.storage}, leftovers older than {format_age(older_than)}{dry}", file=out)
    sink = build_sink(settings)
    try:
        await sink.start()
        items = await sink.sweep(older_than, dry_run=settings.dry_run)
    except StorageError as exc:
        print(f"FAIL  could not list leftovers: {exc.message}", file=out)
        if settings.metrics_file:
            write_metrics(settings.metrics_file, None)
        return 1
    finally:
        await sink.close()
    if settings.metrics_file:
        write_metrics(settings.metrics_file, items)
    failed = 0
    for item in items:
        if item.error:
            failed += 1
            action = "FAILED"
        else:
            action = "would remove" if settings.dry_run else _DONE.get(item.kind, "removed")
        line = f"{action:<13} {item.kind:<17} {item.key}  (age {format_age(item.age_seconds)})"
        print(line + (f": {item.error}" if item.error else ""), file=out)
    removed = 0 if settings.dry_run else len(items) - failed
    print(f"summary: {len(items)} found, {removed} removed, {failed} failed{dry}", file=out)
    return 1 if failed else 0


def write_metrics(path: str, items: Sequence[SweepItem] | None, *, now: float | None = None) -> None:
    """Write what this run found for node_exporter's textfile collector (``--metrics-file``).

    ``items`` is None when listing failed. The file is replaced whole (written beside it, then
    renamed), so the collector never reads half a file; each run overwrites the last one's figures.
    """
    registry = CollectorRegistry()
    found = Gauge("streamproxy_sweep_leftovers", "Leftovers the last sweep found, by kind", ["kind"], registry=registry)
    for kind in KINDS:
        found.labels(kind=kind).set(sum(1 for item in items or () if item.kind == kind))
    failed = Gauge(
        "streamproxy_sweep_failures",
        "Leftovers the last sweep could not remove (1 if it could not list)",
        registry=registry,
    )
    failed.set(1 if items is None else sum(1 for item in items if item.error))
    Gauge(
        "streamproxy_sweep_last_run_timestamp_seconds", "When the last sweep ended (Unix time)", registry=registry
    ).set(time.time() if now is None else now)
    write_to_textfile(path, registry)
