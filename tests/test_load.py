"""Load and soak, the CI-sized run of tests/soak.py (``STREAMPROXY_SOAK_UPLOADS=1000`` for the full one)."""

from __future__ import annotations

import os

import pytest

from tests.soak import SoakConfig, run_soak

pytestmark = pytest.mark.slow

# Read at import: the autouse fixture strips STREAMPROXY_* from the environment before each test.
UPLOADS = int(os.environ.get("STREAMPROXY_SOAK_UPLOADS", "200"))


async def test_load_soak_and_same_name_races(moto_endpoint, s3, bucket) -> None:
    """Clients at 3x the admission limit, 2% of S3 requests faulted: every 200 stored byte-exact, the excess
    503 busy, no other answer, no orphans, RSS flat; concurrent uploads to one name: one 200, the rest 409."""
    uploads = UPLOADS
    cfg = SoakConfig(uploads=uploads, clients=24, max_concurrent=8, seconds=max(60.0, uploads * 0.5), fault_rate=0.02)
    report = await run_soak(moto_endpoint, s3, bucket, cfg)
    print(report.table())
    assert report.problems() == []
    assert report.stored == uploads, "every planned upload was stored within the time bound"
    assert report.busy > 0, "the load did exceed --max-concurrent-uploads"
    assert report.race == [(1, cfg.race_clients - 1)] * cfg.race_rounds
    assert report.orphans == []
    assert sum(report.faults.values()) > 0, "faults were injected"
    assert report.rss_growth() <= 1.05, report.rss_kib
