"""``streamproxy sweep``: remove what interrupted uploads left behind, older than a given age.

On S3 that is incomplete multipart uploads under the prefix and objects under the staging prefix
(``<prefix>.streamproxy-staging/``); on a filesystem, ``.streamproxy-*.tmp`` files. A running
server's uploads are young, so a threshold well above the longest upload (``--older-than 24h``)
never touches live work. Each item is printed on one line; the exit status is 0 if every item
was removed (or ``--dry-run``), 1 if listing or any removal failed.
"""

from __future__ import annotations

import sys
from typing import TextIO

from .config import Settings
from .errors import StorageError
from .wiring import build_sink

__all__ = ["format_age", "run_sweep"]


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
        return 1
    finally:
        await sink.close()
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
