"""Benchmark smoke: streamproxy's peak RSS does not grow with the recording, through the bench's stand-in S3.

Not a timed test: it fails only on gross regressions (a recording buffered whole, or spooled to
TMPDIR, or stored wrong). The full comparison with its peers is ``python -m bench``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.measure import MIB
from bench.run import Bench, free_port, make_file, start_standin, stop

SMALL, LARGE = 64 * MIB, 256 * MIB


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    workdir = tmp_path_factory.mktemp("bench")
    port = free_port()
    standin = start_standin(port)
    try:
        yield Bench(workdir, f"http://127.0.0.1:{port}", lambda _: None)
    finally:
        stop(standin)


@pytest.mark.slow
def test_peak_rss_is_flat_from_64_to_256_mib(bench: Bench) -> None:
    small = bench.streamproxy(make_file(bench.workdir / "small.bin", SMALL))
    large = bench.streamproxy(make_file(bench.workdir / "large.bin", LARGE))
    assert small.exact and large.exact, "the stand-in did not receive the recording byte for byte"
    assert small.tmp_files == 0 and large.tmp_files == 0, "streamproxy wrote to TMPDIR"
    growth = large.peak_rss - small.peak_rss
    # 192 MiB more recording; five 8 MiB part buffers already fill up at 64 MiB.
    assert growth < 32 * MIB, f"peak RSS grew by {growth / MIB:.1f} MiB from 64 to 256 MiB"
    assert large.peak_rss < 192 * MIB, f"peak RSS {large.peak_rss / MIB:.1f} MiB for one upload at the defaults"


def test_the_stand_in_rejects_a_wrong_record(bench: Bench, tmp_path: Path) -> None:
    """The byte-exact check can fail: a record of other bytes does not match."""
    from bench.measure import byte_exact

    file = make_file(tmp_path / "f.bin", MIB)
    assert not byte_exact(file, {"size": MIB, "parts": [[MIB, 12345]]})
    assert not byte_exact(file, None)


def _needs(*programs: str) -> None:
    """Skip outside CI when a program is missing; in CI (``CI`` set) the test runs and fails instead."""
    import os
    import shutil

    missing = [p for p in programs if not (shutil.which(p) or Path(f"/usr/sbin/{p}").exists())]
    if missing and not os.environ.get("CI"):
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install {' '.join(missing)})")


SMOKE_HTTP = ("streamproxy", "direct", "direct_nochecksums", "rclone", "naive")
SMOKE_HTTPS = ("streamproxy_tls", "direct_nochecksums_tls", "rclone_tls")


def test_every_default_contender_has_a_smoke_run() -> None:
    """A contender added to the benchmark's default set must be added to the runs below."""
    from bench.run import CONTENDERS, TLS_CONTENDERS

    assert set(CONTENDERS) == set(SMOKE_HTTP)
    assert set(TLS_CONTENDERS) == set(SMOKE_HTTPS)


@pytest.mark.slow
def test_every_plain_http_contender_stores_byte_exact(bench: Bench) -> None:
    """Each contender's upload (three 8 MiB parts and a tail) reaches the stand-in byte for byte."""
    _needs("rclone")
    file = make_file(bench.workdir / "http.bin", 20 * MIB)
    runs = [getattr(bench, name)(file) for name in SMOKE_HTTP]
    assert [r.contender for r in runs if not r.exact] == [], "a contender's bytes arrived changed"


@pytest.mark.slow
def test_https_front_carries_every_contender_byte_exact(bench: Bench) -> None:
    """The HTTPS runs reach the stand-in through nginx's TLS byte for byte: streamproxy, direct and rclone."""
    from bench.tls import start_tls_front

    _needs("nginx", "rclone")
    port = int(bench.endpoint.rsplit(":", 1)[1])
    front, bench.tls_endpoint, bench.ca = start_tls_front(bench.workdir / "nginx", free_port(), port)
    try:
        file = make_file(bench.workdir / "tls.bin", 20 * MIB)
        runs = [getattr(bench, name)(file) for name in SMOKE_HTTPS]
    finally:
        stop(front)
        bench.tls_endpoint, bench.ca = None, None
    assert [r.contender for r in runs if not r.exact] == [], "a contender's bytes arrived changed"
