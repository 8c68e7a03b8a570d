"""``python -m bench``: run the benchmark suite and write docs/benchmarks.md (see that file)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .report import chart, markdown, write_doc
from .run import CONTENDERS, EXTRA_CONTENDERS, TLS_CONTENDERS, run_all

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="streamproxy against its peers")
    parser.add_argument("--quick", action="store_true", help="small sizes and 3 rounds (a few minutes)")
    parser.add_argument("--sizes", type=float, nargs="+", help="recording sizes in MiB (default 64 1024 4096)")
    parser.add_argument("--rounds", type=int, help="rounds per size (default 5; quick 3)")
    parser.add_argument(
        "--contenders",
        nargs="+",
        default=list(CONTENDERS + TLS_CONTENDERS),
        choices=CONTENDERS + TLS_CONTENDERS + EXTRA_CONTENDERS,
    )
    parser.add_argument("--no-https", dest="https", action="store_false", help="skip the runs through nginx's TLS")
    parser.add_argument("--no-parsing", dest="parsing", action="store_false", help="skip bench/parsing.py")
    parser.add_argument("--copies", action="store_true", help="count copies per byte (needs gcc)")
    parser.add_argument("--naive-max", type=int, default=4096, help="largest size in MiB given to the naive handler")
    parser.add_argument("--concurrent", type=int, default=100, help="simultaneous uploads (0: skip)")
    parser.add_argument("--concurrent-size", type=int, default=64, help="MiB per concurrent upload")
    parser.add_argument("--sink-size", type=int, default=256, help="MiB for the stand-in against moto check")
    parser.add_argument("--no-moto", dest="moto", action="store_false", help="skip the runs on moto")
    parser.add_argument("--late-size", type=int, default=256, help="MiB for the late-filename runs on moto")
    parser.add_argument("--moto-size", type=int, default=1024, help="MiB for the large upload on moto")
    parser.add_argument(
        "--workdir", help="where test files and TMPDIRs go (default: $TMPDIR/streamproxy-bench; test files are reused)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the TMPDIRs")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "latest.json"))
    parser.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"), help="'-' to only print")
    parser.add_argument("--report", metavar="JSON", help="only rewrite the table and chart from a results file")
    args = parser.parse_args(argv)
    if args.report:
        result = json.loads(Path(args.report).read_text())
        return publish(result, args.doc)
    if args.sizes is None:
        args.sizes = [64, 256, 1024] if args.quick else [64, 1024, 4096]
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5
    if args.quick:
        args.sink_size = min(args.sink_size, 128)
        args.late_size = min(args.late_size, 64)
        args.moto_size = min(args.moto_size, 256)
    args.command = "python -m bench" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")

    def log(text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)

    result = run_all(args, log)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1, default=str))
    return publish(result, args.doc)


def publish(result: dict[str, Any], doc: str) -> int:
    """Print the table; unless ``doc`` is '-', rewrite its bench section and the chart beside it."""
    png = None
    if doc != "-":
        png_path = Path(doc).with_suffix(".png")
        chart(result, png_path)
        png = png_path.name
    text = markdown(result, png)
    print(text)
    if doc != "-":
        write_doc(Path(doc), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
