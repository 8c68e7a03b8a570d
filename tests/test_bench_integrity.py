"""bench.integrity: the checksum-cost table reports medians of the same run and the ratio to --checksum none."""

from __future__ import annotations

from bench.integrity import summarize

GIB = 1024**3


def _run(contender: str, seconds: float, rnd: int, exact: bool = True) -> dict[str, object]:
    return {"contender": contender, "size": GIB, "seconds": seconds, "cpu": seconds / 2, "exact": exact, "round": rnd}


def test_ratios_are_medians_against_none() -> None:
    runs = [
        _run("streamproxy_crc64nvme", 10.0, 0),
        _run("streamproxy_crc64nvme", 11.0, 1),
        _run("streamproxy_crc64nvme", 30.0, 2),  # an outlier the median ignores
        _run("streamproxy_none", 10.0, 0),
        _run("streamproxy_none", 10.0, 1),
        _run("streamproxy_none", 10.0, 2),
        _run("direct", 1.0, 0),  # not a checksum contender: left out
    ]
    table = summarize({"runs": runs, "load": [1.0, 2.0]})
    rows = [line for line in table.splitlines() if line.startswith("| 1024 MiB")]
    assert len(rows) == 2
    auto = rows[0].split(" | ")
    assert "CRC64NVME" in auto[1] and auto[2] == "93.1" and auto[4] == "1.100" and auto[5].startswith("yes")
    assert rows[1].split(" | ")[4] == "1.000"
    assert "3 rounds" in table


def test_a_run_that_was_not_byte_exact_shows() -> None:
    runs = [_run("streamproxy_md5", 10.0, 0, exact=False), _run("streamproxy_none", 10.0, 0)]
    assert "| NO |" in summarize({"runs": runs, "load": []})
