"""Summaries, the Markdown table for docs/benchmarks.md, and the chart."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from .measure import MIB

GIB = 1024 * MIB
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
DEFAULT_BUFFER = 256 * MIB
NAMES = (
    "streamproxy",
    "streamproxy_crc32",
    "direct",
    "direct_nochecksums",
    "rclone",
    "naive",
    "streamproxy_tls",
    "direct_nochecksums_tls",
    "rclone_tls",
)
# Peers in the ratio tables: (streamproxy's contender, the peer's) per transport.
RATIOS = {
    "http": ("streamproxy", ("direct", "direct_nochecksums", "rclone", "naive")),
    "https": ("streamproxy_tls", ("direct_nochecksums_tls", "rclone_tls")),
}
# The copies-per-byte target is judged on bench/parsing.py's "ingest" contender (the scanner feeding
# AudioStream into pool part buffers: the whole loop-side path of a body byte), else on the scanner alone.
PARSERS = ("ingest", "formdata")


def summarize(result: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in result["runs"]:
        groups.setdefault((run["contender"], run["size"]), []).append(run)
    out = {}
    for (name, size), runs in groups.items():
        seconds = [r["seconds"] for r in runs]
        mid = statistics.median(seconds)
        cpu = [r["cpu"] for r in runs if r["cpu"] is not None]
        tails = [r["tail"] for r in runs if r["tail"] is not None]
        loops = [r["loop_cpu"] for r in runs if r.get("loop_cpu") is not None]
        out[(name, size)] = {
            "rounds": len(runs),
            "seconds": mid,
            "mib_s": size / MIB / mid,
            "spread": (max(seconds) - min(seconds)) / mid,
            "peak_rss": max(r["peak_rss"] for r in runs),
            "cpu_per_gib": statistics.median(cpu) / (size / GIB) if cpu else None,
            "tail": statistics.median(tails) if tails else None,
            "loop_per_gib": statistics.median(loops) / (size / GIB) if loops else None,
            "tmp_bytes": max(r["tmp_bytes"] for r in runs),
            "tmp_files": max(r["tmp_files"] for r in runs),
            "exact": all(r["exact"] for r in runs),
        }
    return out


def _size(size: int) -> str:
    return f"{size // GIB} GiB" if size >= GIB and size % GIB == 0 else f"{size / MIB:g} MiB"


def targets(result: dict[str, Any], table: dict[tuple[str, int], dict[str, Any]]) -> list[tuple[str, str, bool | None]]:
    sizes = sorted({size for _, size in table})
    ref = GIB if GIB in sizes else sizes[-1]
    rows: list[tuple[str, str, bool | None]] = []
    for mine, peer, goal in (
        ("streamproxy", "direct_nochecksums", 0.90),
        ("streamproxy", "rclone", 1.8),
        ("streamproxy", "direct", 0.90),  # round 1: the same work on both sides
        ("streamproxy_tls", "direct_nochecksums_tls", 0.90),
        ("streamproxy_tls", "rclone_tls", 1.8),
    ):
        this, other = table.get((mine, ref)), table.get((peer, ref))
        if this and other:
            ratio = other["seconds"] / this["seconds"]
            rows.append((f"{_size(ref)}: {mine} / {peer} >= {goal}", f"{ratio:.2f}", ratio >= goal))
    sp = table.get(("streamproxy", ref))
    for name in ("streamproxy", "streamproxy_tls"):
        row = table.get((name, ref))
        if row and row["cpu_per_gib"] is not None:
            cpu = row["cpu_per_gib"]
            rows.append((f"{_size(ref)}: {name} server CPU s/GiB <= 2.0", f"{cpu:.2f}", cpu <= 2.0))
    counted = (result.get("parsing") or {}).get("copies_per_byte", {})
    parser = next((name for name in PARSERS if name in counted), None)
    if parser is not None:
        copies = counted[parser]
        rows.append(
            (
                f"copies of each body byte on the event loop (`{parser}`: parser + part buffer) = 1",
                f"{copies:.2f}",
                copies < 1.05,
            )
        )
    if sp:
        rss = sp["peak_rss"] / MIB
        rows.append((f"{_size(ref)}: streamproxy peak RSS <= 128 MiB", f"{rss:.1f} MiB", rss <= 128))
    rss_by_size = [table[("streamproxy", s)]["peak_rss"] for s in sizes if ("streamproxy", s) in table]
    if len(rss_by_size) > 1:
        growth = max(rss_by_size) / min(rss_by_size) - 1
        rows.append(
            (
                f"streamproxy peak RSS flat within 10% from {_size(sizes[0])} to {_size(sizes[-1])}",
                f"{100 * growth:+.1f}% ({min(rss_by_size) / MIB:.1f} to {max(rss_by_size) / MIB:.1f} MiB)",
                growth <= 0.10,
            )
        )
    for key, label in (("concurrent", ""), ("concurrent_tls", " over HTTPS")):
        conc = result.get(key)
        if not conc:
            continue
        limit = DEFAULT_BUFFER + 100 * MIB
        what = f"{conc['uploads']} x {_size(conc['size'])} concurrent{label}"
        rows.append(
            (
                f"{what}: RSS <= --max-buffer-bytes + 100 MiB (356 MiB)",
                f"{conc['peak_rss'] / MIB:.1f} MiB",
                conc["peak_rss"] <= limit,
            )
        )
        rows.append(
            (f"{what}: all stored byte-exact", f"{conc['exact']} / {conc['uploads']}", conc["exact"] == conc["uploads"])
        )
    return rows


def markdown(result: dict[str, Any], chart: str | None) -> str:
    table = summarize(result)
    m = result["machine"]
    args = result["args"]
    lines = [
        f"Run `{args['command']}` on {m['date']}, commit `{m['commit']}`.",
        "",
        f"- Machine: {m['cpu']}, {m['memory']} RAM, Linux {m['kernel']}; Python {m['python']}.",
        f"- Versions: streamproxy {m['streamproxy']}, aiohttp {m['aiohttp']}, aiobotocore {m['aiobotocore']}, "
        f"botocore {m['botocore']}, uvloop {m['uvloop']}, {m['rclone']}.",
        f"- Rounds per size: {args['rounds']} (contenders alternate their order each round; figures are medians, "
        "peak RSS the highest of the rounds).",
        f"- Noise: load average {', '.join(f'{x:.1f}' for x in result['load'])} (2 cores, shared with other jobs);"
        " the spread column is (slowest - fastest) / median of the rounds.",
        "",
        "### Targets",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
    ]
    for name, value, ok in targets(result, table):
        lines.append(f"| {name} | {value} | {'yes' if ok else '**no**'} |")
    sizes = sorted({size for _, size in table})
    lines += ["", "### Ratios (time of the peer / time of streamproxy; above 1 means streamproxy is faster)", ""]
    for transport, (mine, peers) in RATIOS.items():
        if not any((mine, s) in table for s in sizes):
            continue
        lines += [
            f"Over {transport.upper()}:",
            "",
            "| size | " + " | ".join(f"vs {p}" for p in peers) + " |",
            "| --- | " + " | ".join("---" for _ in peers) + " |",
        ]
        for size in sizes:
            this = table.get((mine, size))
            cells = []
            for peer in peers:
                other = table.get((peer, size))
                cells.append(f"{other['seconds'] / this['seconds']:.2f}" if this and other else "-")
            lines.append(f"| {_size(size)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "",
        "### All contenders",
        "",
        "| size | contender | MiB/s | spread | peak RSS MiB | CPU s/GiB (loop) "
        "| last byte -> answer s | TMPDIR peak | byte-exact |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size in sizes:
        for name in NAMES:
            row = table.get((name, size))
            if not row:
                continue
            cpu = f"{row['cpu_per_gib']:.2f}" if row["cpu_per_gib"] is not None else "-"
            if row["loop_per_gib"] is not None:
                cpu += f" ({row['loop_per_gib']:.2f})"
            tail = f"{row['tail']:.3f}" if row["tail"] is not None else "-"
            tmp = f"{row['tmp_bytes'] / MIB:.0f} MiB in {row['tmp_files']} files" if row["tmp_files"] else "none"
            lines.append(
                f"| {_size(size)} | {name} | {row['mib_s']:.0f} | {100 * row['spread']:.0f}% | "
                f"{row['peak_rss'] / MIB:.1f} | {cpu} | {tail} | {tmp} | {'yes' if row['exact'] else '**no**'} |"
            )
    lines += [
        "",
        "CPU s/GiB is the server process's CPU for streamproxy and naive (measured around the upload; in "
        "brackets the event loop's thread alone), and the whole process's CPU including start-up for direct "
        "and rclone.",
    ]
    concurrent = [c for c in (result.get("concurrent"), result.get("concurrent_tls")) if c]
    if concurrent:
        first = concurrent[0]
        lines += [
            "",
            f"### {first['uploads']} concurrent uploads of {_size(first['size'])} through one streamproxy",
            "",
            f"Flags: defaults plus `{' '.join(first['args'])}` (the default 64 would answer `503 busy` to the rest).",
            "",
            "| to the sink over | aggregate MiB/s | idle RSS MiB | peak RSS MiB | CPU s/GiB | answered 200 "
            "| byte-exact | TMPDIR peak |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for conc in concurrent:
            lines.append(
                f"| {'HTTPS' if conc.get('tls') else 'HTTP'} | {conc['mib_s']:.0f} | {conc['idle_rss'] / MIB:.1f} | "
                f"{conc['peak_rss'] / MIB:.1f} | {conc['cpu'] / (conc['uploads'] * conc['size'] / GIB):.2f} | "
                f"{conc['ok']} / {conc['uploads']} | {conc['exact']} / {conc['uploads']} | "
                f"{conc['tmp_bytes'] / MIB:.0f} MiB |"
            )
    parsing = result.get("parsing")
    if parsing:
        copies = parsing.get("copies_per_byte", {})
        lines += [
            "",
            f"### Multipart parsing on the event loop ({parsing['mib']} MiB recording, in-process, "
            f"median of {parsing['rounds']})",
            "",
            "`python -m bench.parsing`: the body already in aiohttp's StreamReader in 256 KiB chunks, the "
            "recording copied into an 8 MiB part buffer; CPU time of the loop's thread. Copies per byte: "
            "bytes malloc'd per body byte (`bench/malloc_count.c` preloaded) plus the copy into the part "
            "buffer; `ingest` is the scanner feeding AudioStream as `Ingest.multipart` does.",
            "",
            "| parser | MB/s | copies per byte |",
            "| --- | --- | --- |",
        ]
        for name, speed in parsing["mb_s"].items():
            count = f"{copies[name]:.2f}" if name in copies else "-"
            lines.append(f"| {name} | {speed:.0f} | {count} |")
    sink = result.get("standin_vs_moto")
    if sink:
        lines += [
            "",
            "### The sink is not the bottleneck",
            "",
            f"The direct contender uploading {_size(sink['size'])}: {sink['standin_mib_s']:.0f} MiB/s into the "
            f"stand-in, {sink['moto_mib_s']:.0f} MiB/s into moto "
            f"({sink['standin_mib_s'] / sink['moto_mib_s']:.1f}x).",
        ]
    moto = result.get("moto")
    if moto:
        lines += [
            "",
            "### On moto (stores the bytes; correctness path)",
            "",
            "| case | size | seconds | MiB/s | peak RSS MiB | last byte -> answer s |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for label, text in (
            ("normal", "filename before the file"),
            ("late", "filename after the file (staged + copied)"),
        ):
            row = moto.get(label)
            if row:
                lines.append(
                    f"| {text} | {_size(row['size'])} | {row['seconds']:.2f} | "
                    f"{row['size'] / MIB / row['seconds']:.0f} | {row['peak_rss'] / MIB:.1f} | {row['tail']:.2f} |"
                )
        row = moto.get("large")
        if row:
            lines.append(
                f"| defaults, one upload | {_size(row['size'])} | {row['seconds']:.2f} | "
                f"{row['size'] / MIB / row['seconds']:.0f} | {row['peak_rss'] / MIB:.1f} | - |"
            )
    if chart:
        lines += ["", f"![peak RSS and throughput per contender]({chart})"]
    return "\n".join(lines) + "\n"


def write_doc(doc: Path, body: str) -> None:
    text = doc.read_text() if doc.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    doc.write_text(f"{head}{BEGIN}\n{body}{END}{tail}")


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summarize(result)
    sizes = sorted({size for _, size in table})
    names = [n for n in NAMES if any((n, s) in table for s in sizes)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in names:
        xs = [s / MIB for s in sizes if (name, s) in table]
        ys = [table[(name, s)]["peak_rss"] / MIB for s in sizes if (name, s) in table]
        on_disk = any(table[(name, s)]["tmp_bytes"] for s in sizes if (name, s) in table)
        left.plot(xs, ys, marker="o", label=f"{name} (+ the whole recording in TMPDIR)" if on_disk else name)
    left.set_xscale("log", base=2)
    left.set_xticks([s / MIB for s in sizes], [_size(s) for s in sizes])
    left.set_xlabel("recording length")
    left.set_ylabel("peak RSS of the process (MiB)")
    left.set_title("Peak memory against recording length")
    left.set_ylim(bottom=0)
    left.legend()
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [j + i * width for j, s in enumerate(sizes) if (name, s) in table]
        ys = [table[(name, s)]["mib_s"] for s in sizes if (name, s) in table]
        right.bar(xs, ys, width, label=name)
    right.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(sizes))], [_size(s) for s in sizes])
    right.set_ylabel("MiB/s (median)")
    right.set_title("Throughput end to end")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
