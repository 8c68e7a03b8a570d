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
