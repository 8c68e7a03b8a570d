"""The alert rules and the dashboard (deploy/prometheus, deploy/grafana), checked with the real tools.

- ``promtool check rules`` accepts the rules file, and ``promtool test rules`` passes its unit tests;
- the committed dashboard JSON is exactly what ``deploy/grafana/dashboard.py`` generates;
- every metric either file names is in the ``/metrics`` output of a running server after uploads;
- a real Prometheus scraping that server loads the rules without error and answers every panel's
  query with data.

promtool and prometheus come from Debian's ``prometheus`` package; without them these tests skip,
except in CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import PART, payload, s3_settings
from tests.s3_proxy import S3Proxy
from tests.servers import free_port

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "deploy/prometheus/streamproxy-rules.yml"
RULE_TESTS = REPO / "deploy/prometheus/streamproxy-rules.test.yml"
DASHBOARD = REPO / "deploy/grafana/streamproxy-dashboard.json"
GENERATOR = REPO / "deploy/grafana/dashboard.py"

# Series Prometheus makes itself for every scrape target, not the server.
PROMETHEUS_OWN = {"up"}
# What the dashboard's variables stand for when a query is sent to Prometheus directly.
VARIABLES = {"$__rate_interval": "1m", "$job": "streamproxy", "$instance": ".*"}


def tool(name: str) -> str:
    """The path of a Debian ``prometheus`` program: a skip outside CI when missing, a failure in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian: apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def rules() -> list[dict[str, Any]]:
    """Every rule of the rules file."""
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("streamproxy_dashboard", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def panels() -> Iterator[dict[str, Any]]:
    """Every panel of the dashboard, those inside collapsed rows included."""
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        yield panel
        yield from panel.get("panels", [])


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel."""
    return [(panel["title"], target["expr"]) for panel in panels() for target in panel.get("targets", [])]


def substitute(expr: str) -> str:
    for variable, value in sorted(VARIABLES.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(variable, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names the selectors of a PromQL expression name (parsed, not guessed with a regex)."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expr!r}"
            names.add(node.name)
        elif isinstance(node, promql_parser.MatrixSelector):
            walk(node.vector_selector)
        elif isinstance(node, promql_parser.BinaryExpr):
            walk(node.lhs)
            walk(node.rhs)
        elif isinstance(node, promql_parser.Call):
            for argument in node.args:
                walk(argument)
        elif isinstance(node, promql_parser.AggregateExpr):
            walk(node.expr)
            if node.param is not None:
                walk(node.param)
        elif isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr):
            walk(node.expr)
        else:
            assert isinstance(node, promql_parser.NumberLiteral | promql_parser.StringLiteral), type(node)

    walk(promql_parser.parse(substitute(expr)))
    return names


def variable_metrics() -> set[str]:
    """Metrics the dashboard's ``label_values(metric..., label)`` variables read."""
    document = json.loads(DASHBOARD.read_text())
    names = set()
    for variable in document["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"] if isinstance(variable["query"], str) else variable["query"]["query"]
            assert query.startswith("label_values("), query
            names |= metric_names(query.removeprefix("label_values(").rsplit(",", 1)[0])
    return names


def test_metric_names_are_parsed_from_the_expressions() -> None:
    """The parser finds each selector once, through functions, aggregations, binary operators and ranges."""
    expr = (
        'histogram_quantile(0.9, sum by (le) (rate(a_bucket{x="1"}[5m]))) / on() (b + max_over_time(c[1m:10s])) or up'
    )
    assert metric_names(expr) == {"a_bucket", "b", "c", "up"}
    assert {name for _title, expr in panel_queries() for name in metric_names(expr)} >= {
        "streamproxy_uploads_total",
        "streamproxy_s3_request_duration_seconds_bucket",
    }


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    promtool = tool("promtool")
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout
    tested = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent, capture_output=True, text=True, check=False
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
    # The unit tests cover at least the failure-ratio and buffer-saturation alerts, firing and not.
    covered = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    assert {"StreamproxyUploadFailureRate", "StreamproxyBufferBudgetSaturated"} <= covered


def test_promtool_tests_can_fail(tmp_path: Path) -> None:
    """The unit tests are real: a rule with a raised threshold makes the failure-ratio test fail."""
    promtool = tool("promtool")
    (tmp_path / RULES.name).write_text(RULES.read_text().replace("> 0.05", "> 0.5"))
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    tested = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert tested.returncode != 0 and "StreamproxyUploadFailureRate" in tested.stdout + tested.stderr


def test_committed_dashboard_is_the_generators_output() -> None:
    assert DASHBOARD.read_text() == generator().render(), "run: python deploy/grafana/dashboard.py"


def test_dashboard_covers_what_operators_watch() -> None:
    titles = {panel["title"] for panel in panels()}
    assert {
        "Uploads by outcome",
        "Throughput",
        "Upload duration",
        "Part-buffer budget",
        "S3 latency by operation",
        "S3 retries by operation",
        "Uploads in flight",
    } <= titles
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids)), ids


def sweep_exported(tmp_path: Path) -> set[str]:
    """Sample names of the file `streamproxy sweep --metrics-file` writes, after a sweep that found a temp file."""
    storage = tmp_path / "swept"
    storage.mkdir(exist_ok=True)
    leftover = storage / ".streamproxy-interrupted.tmp"
    leftover.write_bytes(b"x")
    os.utime(leftover, (time.time() - 7200, time.time() - 7200))
    path = tmp_path / "sweep.prom"
    metrics = ["--metrics-file", str(path)]
    swept = subprocess.run(
        [sys.executable, "-m", "streamproxy", "sweep", "--storage", storage.as_uri(), "--older-than", "1h", *metrics],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert swept.returncode == 0, swept.stdout + swept.stderr
    assert not leftover.exists()
    samples = {
        (sample.name, sample.labels.get("kind")): sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }
    assert samples[("streamproxy_sweep_leftovers", "temp_file")] == 1
    assert samples[("streamproxy_sweep_leftovers", "multipart_upload")] == 0
    assert samples[("streamproxy_sweep_failures", None)] == 0
    assert abs(samples[("streamproxy_sweep_last_run_timestamp_seconds", None)] - time.time()) < 60
    return {name for name, _kind in samples}


@pytest.fixture
async def prometheus(tmp_path: Path) -> AsyncIterator[Any]:
    """Start a Prometheus on loopback; yield a function that points it at a target and returns its URL."""
    binary = tool("prometheus")
    processes: list[asyncio.subprocess.Process] = []

    async def start(target: str) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [{"job_name": "streamproxy", "static_configs": [{"targets": [target]}]}],
                }
            )
        )
        with (tmp_path / "prometheus.log").open("wb") as log:
            processes.append(
                await asyncio.create_subprocess_exec(
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with session.get(url + "/-/ready") as answer:
                        if answer.status == 200:
                            return url
                except aiohttp.ClientError:
                    pass
                assert processes[-1].returncode is None, (tmp_path / "prometheus.log").read_text()
                assert time.monotonic() < deadline, "Prometheus did not become ready"
                await asyncio.sleep(0.2)

    yield start
    for process in processes:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=10)


async def instant(session: aiohttp.ClientSession, url: str, expr: str) -> list[Any]:
    async with session.get(url + "/api/v1/query", params={"query": expr}) as answer:
        body = await answer.json()
    assert answer.status == 200 and body["status"] == "success", (expr, body)
    result: list[Any] = body["data"]["result"]
    return result


@pytest.mark.slow
async def test_rules_and_panels_against_a_live_server_and_prometheus(
    client_for, moto_endpoint, bucket, prometheus, tmp_path
) -> None:
    """Uploads through S3 (one throttled part, so a retry), one refused upload; then every name is live."""
    async with S3Proxy(moto_endpoint) as proxy:
        proxy.add("part", "503", times=1)
        client = await client_for(s3_settings(proxy.url, bucket))
        url = await prometheus(f"127.0.0.1:{client.port}")
        for number in range(4):
            data = payload(2 * PART + 5, seed=number)
            answer = await client.put(f"/recordings/call-{number}", data=data, headers={"Content-Type": "audio/wav"})
            assert answer.status == 200, await answer.text()
            refused = await client.put("/recordings/..bad", data=b"x", headers={"Content-Type": "audio/wav"})
            assert refused.status == 400
            await asyncio.sleep(0.5)
        assert proxy.injected["part:503"] == 1

        # Every metric the rules and the dashboard name is in the server's /metrics.
        text = await (await client.get("/metrics")).text()
        exported = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
        exported |= {family.name for family in text_string_to_metric_families(text)}
        named = {name for rule in rules() for name in metric_names(rule["expr"])}
        named |= {name for _title, expr in panel_queries() for name in metric_names(expr)}
        named |= variable_metrics()
        # The sweep's figures come from `streamproxy sweep --metrics-file`, not from the server.
        sweep_named = {name for name in named if name.startswith("streamproxy_sweep_")}
        from_sweep = sweep_exported(tmp_path)
        assert sweep_named and sweep_named <= from_sweep, sorted(sweep_named - from_sweep)
        missing = named - sweep_named - exported - PROMETHEUS_OWN
        assert not missing, f"named in deploy/ but not in /metrics: {sorted(missing)}"

        async with aiohttp.ClientSession() as session:
            # Prometheus loaded every rule and evaluates each without error.
            deadline = time.monotonic() + 30
            while True:
                async with session.get(url + "/api/v1/rules") as answer:
                    loaded = [r for g in (await answer.json())["data"]["groups"] for r in g["rules"]]
                if loaded and all(r.get("lastEvaluation", "").startswith("20") for r in loaded):
                    break
                assert time.monotonic() < deadline, loaded
                await asyncio.sleep(0.5)
            assert sorted(r["name"] for r in loaded) == sorted(r["alert"] for r in rules())
            assert all(r["health"] == "ok" for r in loaded), [(r["name"], r.get("lastError")) for r in loaded]
            # StreamproxyDown's `up` is there (once the first scrape is in), and says the target is up.
            deadline = time.monotonic() + 30
            while not (up := await instant(session, url, 'up{job="streamproxy"}')):
                assert time.monotonic() < deadline, "Prometheus never scraped the server"
                await asyncio.sleep(0.5)
            assert [s["value"][1] for s in up] == ["1"]

            # Every panel's query returns data once the scrapes after the uploads are in.
            pending = {(title, substitute(expr)) for title, expr in panel_queries()}
            deadline = time.monotonic() + 45
            while pending:
                for title, expr in sorted(pending):
                    if await instant(session, url, expr):
                        pending.discard((title, expr))
                if pending:
                    assert time.monotonic() < deadline, f"panels without data: {sorted(pending)}"
                    await asyncio.sleep(1)
