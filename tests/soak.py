"""Load and soak against a streamproxy subprocess and moto on loopback, bounded in count and time.

``python -m tests.soak --uploads 1000`` runs the long version on demand and prints the figures;
``tests/test_load.py`` runs a short one in CI (``STREAMPROXY_SOAK_UPLOADS`` enlarges it).

What it proves: N clients (well above ``--max-concurrent-uploads``) upload mixed sizes, raw and
multipart, filename first and file first. Every 200 is read back from the bucket and hashed
(then deleted, so moto's memory stays flat); the excess is 503 ``busy`` with ``Retry-After``;
nothing else is answered; no incomplete upload or staging object is left; the server's RSS,
sampled from /proc, stays flat. Then rounds of concurrent uploads to one filename: exactly one
200, the rest 409, the winner's bytes intact.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.s3_proxy import S3Proxy
from tests.servers import rss_kib, streamproxy_server

MIB = 1024 * 1024
PART = 5 * MIB
# (size, weight): mostly short recordings, some crossing one and two part boundaries
SIZES = [(1_000, 30), (64 * 1024, 30), (700 * 1024, 20), (PART + 1, 12), (2 * PART + 333, 8)]
SHAPES = ("put", "form", "form_file_first")
RSS_SAMPLE = 10


@dataclass
class SoakConfig:
    """How big a run is."""

    uploads: int = 200
    clients: int = 24
    max_concurrent: int = 8
    seconds: float = 120.0
    race_rounds: int = 3
    race_clients: int = 6
    rss_every: int = 100
    seed: int = 1
    fault_rate: float = 0.0


@dataclass
class SoakReport:
    """What a run saw; ``problems()`` lists every broken promise."""

    stored: int = 0
    bytes_stored: int = 0
    busy: int = 0
    busy_without_retry_after: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    losses: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    rss_samples: list[int] = field(default_factory=list)
    rss_kib: list[tuple[int, int]] = field(default_factory=list)
    race: list[tuple[int, int]] = field(default_factory=list)
    race_problems: list[str] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    s3_requests: int = 0
    seconds: float = 0.0

    def unexpected(self) -> dict[str, int]:
        """Answers other than 200 and 503 busy."""
        return {k: v for k, v in self.answers.items() if k not in ("200", "503 busy")}

    def rss_growth(self, at: int = 1000) -> float:
        """RSS after ``at`` uploads (or the last window, if fewer) over RSS after the first window."""
        if len(self.rss_kib) < 2:
            return 1.0
        later = [kib for count, kib in self.rss_kib if count <= at][-1]
        return later / self.rss_kib[0][1]

    def problems(self) -> list[str]:
        """Every broken promise, as sentences."""
        out = [f"lost: {x}" for x in self.losses] + [f"orphan: {x}" for x in self.orphans] + self.race_problems
        out += [f"unexpected answer {k} x{v}" for k, v in self.unexpected().items()]
        if self.busy_without_retry_after:
            out.append(f"{self.busy_without_retry_after} busy answers without Retry-After")
        return out

    def table(self) -> str:
        """The figures as Markdown."""
        lines = [
            "| figure | value |",
            "| --- | --- |",
            f"| uploads stored and verified (read back, sha256) | {self.stored} |",
            f"| bytes stored | {self.bytes_stored} ({self.bytes_stored / MIB:.1f} MiB) |",
            f"| answers | {', '.join(f'{k}: {v}' for k, v in sorted(self.answers.items()))} |",
            f"| S3 requests / faults injected | {self.s3_requests} / {sum(self.faults.values())} |",
            f"| faults by kind | {', '.join(f'{k}: {v}' for k, v in sorted(self.faults.items())) or '-'} |",
            f"| losses / orphans | {len(self.losses)} / {len(self.orphans)} |",
            f"| same-name races (winners, 409s) | {self.race} |",
            f"| duration | {self.seconds:.1f} s |",
            "",
            f"| uploads stored | server RSS (MiB, median of {RSS_SAMPLE}-upload samples in the window) |",
            "| --- | --- |",
        ]
        lines += [f"| {count} | {kib / 1024:.1f} |" for count, kib in self.rss_kib]
        return "\n".join(lines)


def _body(size: int, rng: random.Random) -> bytes:
    return rng.randbytes(size)


def _form(data: bytes, name: str, file_first: bool) -> aiohttp.FormData:
    form = aiohttp.FormData(default_to_multipart=True)
    if not file_first:
        form.add_field("filename", name)
    form.add_field("recording", data, filename="r.wav", content_type="audio/wav")
    if file_first:
        form.add_field("filename", name)
    return form


async def _send(session: aiohttp.ClientSession, base: str, shape: str, name: str, data: bytes) -> tuple[int, Any, str]:
    if shape == "put":
        request = session.put(f"{base}/recordings/{name}", data=data, headers={"Content-Type": "audio/wav"})
    else:
        request = session.post(f"{base}/recordings", data=_form(data, name, shape == "form_file_first"))
    async with request as resp:
        return resp.status, await resp.json(), resp.headers.get("Retry-After", "")


async def _verify(s3: Any, bucket: str, key: str, digest: str) -> bool:
    def read_and_delete() -> bool:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        s3.delete_object(Bucket=bucket, Key=key)
        return hashlib.sha256(body).hexdigest() == digest

    try:
        return await asyncio.to_thread(read_and_delete)
    except Exception:
        return False


async def _soak(
    session: aiohttp.ClientSession, base: str, pid: int, s3: Any, bucket: str, cfg: SoakConfig, report: SoakReport
) -> None:
    rng = random.Random(cfg.seed)
    sizes, weights = zip(*SIZES, strict=True)
    plan = [(rng.choices(sizes, weights)[0], SHAPES[i % len(SHAPES)]) for i in range(cfg.uploads)]
    queue: asyncio.Queue[tuple[int, int, str]] = asyncio.Queue()
    for index, (size, shape) in enumerate(plan):
        queue.put_nowait((index, size, shape))
    deadline = time.monotonic() + cfg.seconds

    async def worker(wid: int) -> None:
        wrng = random.Random(cfg.seed * 1000 + wid)
        while time.monotonic() < deadline:
            try:
                index, size, shape = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            data = _body(size, wrng)
            digest = hashlib.sha256(data).hexdigest()
            name = f"soak-{index}-{uuid.uuid4().hex[:6]}"
            while time.monotonic() < deadline:
                status, answer, retry_after = await _send(session, base, shape, name, data)
                kind = f"{status} {answer.get('error', '')}".strip() if status != 200 else "200"
                report.answers[kind] += 1
                if kind == "503 busy":
                    report.busy += 1
                    report.busy_without_retry_after += retry_after == ""
                    await asyncio.sleep(0.02 * wrng.random())
                    continue
                if status == 200:
                    ok = answer.get("sha256") == digest and await _verify(s3, bucket, answer["key"], digest)
                    if not ok:
                        report.losses.append(answer.get("key", name))
                    else:
                        report.stored += 1
                        report.bytes_stored += size
                        if report.stored % RSS_SAMPLE == 0:
                            report.rss_samples.append(rss_kib(pid, "VmRSS"))
                        if report.stored % cfg.rss_every == 0:
                            # One reading swings with what is in flight at that instant: take the median
                            # of the window's samples (one every RSS_SAMPLE uploads) as its level.
                            window = report.rss_samples[-(cfg.rss_every // RSS_SAMPLE) :]
                            report.rss_kib.append((report.stored, int(statistics.median(window))))
                break

    await asyncio.gather(*(worker(w) for w in range(cfg.clients)))


async def _warm_up(session: aiohttp.ClientSession, base: str, s3: Any, bucket: str, cfg: SoakConfig) -> int:
    """Fill the buffer pool once: it allocates its budget lazily, and that is a bound, not a leak.

    Rounds of ``max_concurrent`` three-part uploads at once; every one is verified like the rest.
    Returns how many failed verification.
    """
    rng = random.Random(cfg.seed - 1)
    failed = 0
    for round_ in range(2):
        datas = {f"warm-{round_}-{i}": _body(2 * PART + 333, rng) for i in range(cfg.max_concurrent)}
        results = await asyncio.gather(*(_send(session, base, "put", n, d) for n, d in datas.items()))
        for data, (status, answer, _) in zip(datas.values(), results, strict=True):
            digest = hashlib.sha256(data).hexdigest()
            if status != 200 or not await _verify(s3, bucket, answer["key"], digest):
                failed += 1
    return failed


async def _races(
    session: aiohttp.ClientSession, base: str, s3: Any, bucket: str, cfg: SoakConfig, report: SoakReport
) -> None:
    rng = random.Random(cfg.seed + 7)
    for round_ in range(cfg.race_rounds):
        name = f"race-{round_}"
        size = [1_000, PART + 1, 2 * PART + 3][round_ % 3]
        datas = [_body(size, rng) for _ in range(cfg.race_clients)]
        shapes = [SHAPES[(round_ + i) % len(SHAPES)] for i in range(cfg.race_clients)]
        results = await asyncio.gather(*(_send(session, base, s, name, d) for s, d in zip(shapes, datas, strict=True)))
        statuses = [status for status, _, _ in results]
        winners = [i for i, status in enumerate(statuses) if status == 200]
        report.race.append((len(winners), statuses.count(409)))
        if len(winners) != 1 or statuses.count(409) != cfg.race_clients - 1:
            report.race_problems.append(f"race {name}: answers {statuses}")
            continue
        digest = hashlib.sha256(datas[winners[0]]).hexdigest()
        if results[winners[0]][1]["sha256"] != digest or not await _verify(s3, bucket, f"{name}.wav", digest):
            report.race_problems.append(f"race {name}: the winner's bytes are not what is stored")


def _leftovers(s3: Any, bucket: str) -> list[str]:
    uploads = [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    objects = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return [f"multipart upload {k}" for k in uploads] + [f"object {k}" for k in objects]


# Random transient faults for --fault-rate: what retries must hide. A lost CreateMultipartUpload
# answer is left out on purpose: it opens an upload nobody knows (sweep's job, see docs/reliability.md).
SOAK_FAULTS = [
    ("put", "500"),
    ("put", "reset"),
    ("put", "drop"),
    ("create", "500"),
    ("part", "500"),
    ("part", "reset"),
    ("part", "drop"),
    ("complete", "500"),
    ("complete", "drop"),
    ("copy-part", "500"),
    ("head", "500"),
]


async def run_soak(moto_endpoint: str, s3: Any, bucket: str, cfg: SoakConfig) -> SoakReport:
    """Run the soak and the same-name races against a fresh server subprocess; return the figures."""
    async with S3Proxy(moto_endpoint) as proxy:
        for n, (operation, action) in enumerate(SOAK_FAULTS):
            if cfg.fault_rate > 0:
                proxy.add(operation, action, times=None, rate=cfg.fault_rate, seed=cfg.seed + n)
        report = await _run(proxy.url, s3, bucket, cfg)
        report.faults = proxy.injected
        report.s3_requests = sum(proxy.requests.values())
    return report


async def _run(endpoint: str, s3: Any, bucket: str, cfg: SoakConfig) -> SoakReport:
    report = SoakReport()
    args = [
        *("--storage", f"s3://{bucket}/", "--s3-endpoint-url", endpoint, "--part-size", "5MiB"),
        *("--max-buffer-bytes", "40MiB", "--part-concurrency", "2"),
        *("--max-concurrent-uploads", str(cfg.max_concurrent), "--log-level", "warning"),
        # moto behind the fault proxy: the soak is about faults during uploads, not the start-up probe
        *("--s3-capabilities", "aws"),
    ]
    started = time.monotonic()
    with tempfile.TemporaryFile() as log, streamproxy_server(args, log=log) as (proc, base):
        connector = aiohttp.TCPConnector(limit=cfg.clients + cfg.race_clients)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
            if await _warm_up(session, base, s3, bucket, cfg):
                report.losses.append("warm-up uploads")
            await _soak(session, base, proc.pid, s3, bucket, cfg, report)
            await _races(session, base, s3, bucket, cfg, report)
    report.seconds = time.monotonic() - started
    for _ in range(50):
        report.orphans = _leftovers(s3, bucket)
        if not report.orphans:
            break
        await asyncio.sleep(0.1)
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the soak with its own moto server and print the figures; exit 1 on any broken promise."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--max-concurrent", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=900.0)
    parser.add_argument("--race-rounds", type=int, default=10)
    parser.add_argument("--fault-rate", type=float, default=0.02, help="share of S3 requests that get a fault")
    args = parser.parse_args(argv)
    for name in [n for n in os.environ if n.startswith(("AWS_", "STREAMPROXY_"))]:
        del os.environ[name]
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    bucket = f"soak-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    cfg = SoakConfig(
        uploads=args.uploads,
        clients=args.clients,
        max_concurrent=args.max_concurrent,
        seconds=args.seconds,
        race_rounds=args.race_rounds,
        fault_rate=args.fault_rate,
    )
    try:
        report = asyncio.run(run_soak(endpoint, s3, bucket, cfg))
    finally:
        server.stop()
    print(report.table())
    first = report.rss_kib[0][0] if report.rss_kib else "-"
    print(f"RSS growth from {first} to 1000 uploads: {report.rss_growth():.3f}")
    print(f"RSS growth from {first} uploads to the end: {report.rss_growth(at=report.stored):.3f}")
    for problem in report.problems():
        print("PROBLEM:", problem)
    return 1 if report.problems() or report.rss_growth() > 1.05 else 0


if __name__ == "__main__":
    sys.exit(main())
