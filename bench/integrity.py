"""What integrity costs: streamproxy with one ``--checksum`` each, on the stand-in, as a markdown table.

Run the contenders alternated in one run, then summarize that run's results file::

    python -m bench --contenders streamproxy_crc64nvme streamproxy_md5 streamproxy_none \\
        --sizes 1024 --rounds 5 --concurrent 0 --no-moto --doc - --output bench/results/integrity.json
    python -m bench.integrity bench/results/integrity.json

``streamproxy_crc64nvme`` is what the default ``--checksum auto`` sends on AWS (a full-object
CRC64NVME); the ratios are medians of the same run, against ``--checksum none``.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
BASELINE = "streamproxy_none"
LABELS = {
    "streamproxy_crc64nvme": "`--checksum auto` on AWS (full-object CRC64NVME)",
    "streamproxy_crc32": "`--checksum crc32`",
    "streamproxy_md5": "`--checksum md5`",
    "streamproxy_none": "`--checksum none`",
}


def summarize(result: dict[str, Any]) -> str:
    """Return the table: per size and contender, median MiB/s and CPU s/GiB, and the ratio to ``none``."""
    runs = [r for r in result["runs"] if r["contender"] in LABELS]
    lines = [
        "| size | contender | MiB/s (median) | CPU s/GiB (median) | time / time of `none` | byte-exact |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for size in sorted({r["size"] for r in runs}):
        at_size = [r for r in runs if r["size"] == size]
        base = [r["seconds"] for r in at_size if r["contender"] == BASELINE]
        base_median = statistics.median(base) if base else None
        for contender, label in LABELS.items():
            mine = [r for r in at_size if r["contender"] == contender]
            if not mine:
                continue
            seconds = statistics.median(r["seconds"] for r in mine)
            cpu = statistics.median((r["cpu"] or 0) / (size / 1024 / MIB) for r in mine)
            ratio = f"{seconds / base_median:.3f}" if base_median else "-"
            exact = "yes" if all(r["exact"] for r in mine) else "NO"
            speed = size / MIB / seconds
            lines.append(f"| {size // MIB} MiB | {label} | {speed:.1f} | {cpu:.2f} | {ratio} | {exact} |")
    rounds = max((r["round"] for r in runs), default=0) + 1
    load = result.get("load", [])
    lines.append("")
    lines.append(
        f"{rounds} rounds, contenders alternated; load average {', '.join(f'{x:.1f}' for x in load)} on 2 cores."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(summarize(json.loads(Path(args[0]).read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
