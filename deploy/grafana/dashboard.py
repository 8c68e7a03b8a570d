"""Generate deploy/grafana/streamproxy-dashboard.json with grafana-foundation-sdk.

Run ``python deploy/grafana/dashboard.py`` after changing a panel; tests/test_monitoring.py fails
when the committed JSON differs from this script's output, when a query names a metric the server
does not export, or when a real Prometheus rejects a query or returns nothing for it after uploads.

Every query filters on the ``$job`` and ``$instance`` variables and takes rates over Grafana's
``$__rate_interval``. The datasource is a variable, so the file imports into any Grafana (10.1 or later).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders.common import VizLegendOptions
from grafana_foundation_sdk.builders.dashboard import Dashboard, DatasourceVariable, QueryVariable, Row
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

OUTPUT = Path(__file__).with_name("streamproxy-dashboard.json")
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
SELECTOR = 'job=~"$job", instance=~"$instance"'
RATE = "$__rate_interval"


def query(expr: str, legend: str, ref_id: str = "A") -> Dataquery:
    """Make a Prometheus range query on the dashboard's datasource."""
    return Dataquery().expr(expr).legend_format(legend).ref_id(ref_id).datasource(DATASOURCE).range()


def timeseries(title: str, unit: str, description: str, *queries: Dataquery) -> Timeseries:
    """Make a time series panel with its legend below the graph."""
    panel = (
        Timeseries()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(8)
        .height(8)
        .min(0)
        .legend(
            VizLegendOptions().show_legend(True).display_mode(LegendDisplayMode.LIST).placement(LegendPlacement.BOTTOM)
        )
    )
    for target in queries:
        panel = panel.with_target(target)
    return panel


def quantiles(metric: str, by: str, match: str) -> list[Dataquery]:
    """Query p50 and p99 of a histogram, per ``by`` label (empty: over all series)."""
    group = f"le, {by}" if by else "le"
    legend = f"{{{{{by}}}}} p" if by else "p"
    return [
        query(
            f"histogram_quantile({q / 100}, sum by ({group}) (rate({metric}_bucket{{{match}}}[{RATE}])))",
            f"{legend}{q}",
            ref_id,
        )
        for q, ref_id in ((50, "A"), (99, "B"))
    ]


def upload_panels() -> list[Timeseries | Stat]:
    """Build the upload panels: what the callers see."""
    return [
        timeseries(
            "Uploads by outcome",
            "reqps",
            "Upload requests answered per second: success, failure (any error), cancelled (the caller went away).",
            query(f"sum by (outcome) (rate(streamproxy_uploads_total{{{SELECTOR}}}[{RATE}]))", "{{outcome}}"),
        ),
        timeseries(
            "Failures by error code",
            "reqps",
            "Failed uploads per second by the `error` of the JSON answer (README: the HTTP contract).",
            query(
                f'sum by (error) (rate(streamproxy_uploads_total{{{SELECTOR}, outcome="failure"}}[{RATE}]))',
                "{{error}}",
            ),
        ),
        timeseries(
            "Throughput",
            "Bps",
            "Recording bytes received and handed to storage per second (failed uploads included).",
            query(f"sum by (instance) (rate(streamproxy_received_bytes_total{{{SELECTOR}}}[{RATE}]))", "{{instance}}"),
        ),
        timeseries(
            "Upload duration",
            "s",
            "From the request's arrival to the answer, successful uploads: a recording's length in time "
            "dominates for callers that stream as they record.",
            *quantiles("streamproxy_upload_duration_seconds", "", f'{SELECTOR}, outcome="success"'),
        ),
        timeseries(
            "Uploads in flight",
            "short",
            "Uploads being received right now; at --max-concurrent-uploads new ones get 503 busy.",
            query(f"sum by (instance) (streamproxy_uploads_in_flight{{{SELECTOR}}})", "{{instance}}"),
        ),
        timeseries(
            "Aborted uploads",
            "short",
            "Uploads that opened storage and were aborted (nothing of them remains), per interval.",
            query(
                f"sum by (instance) (increase(streamproxy_uploads_aborted_total{{{SELECTOR}}}[{RATE}]))", "{{instance}}"
            ),
        ),
    ]


def buffer_and_storage_panels() -> list[Timeseries | Stat]:
    """Build the part-buffer and S3 panels: what predicts failures."""
    return [
        timeseries(
            "Part-buffer budget",
            "bytes",
            "Part-buffer bytes held by uploads against --max-buffer-bytes. Near the capacity, reading "
            "pauses until storage catches up.",
            query(f"sum by (instance) (streamproxy_buffer_in_use_bytes{{{SELECTOR}}})", "{{instance}} in use", "A"),
            query(f"sum by (instance) (streamproxy_buffer_capacity_bytes{{{SELECTOR}}})", "{{instance}} capacity", "B"),
        ),
        timeseries(
            "S3 latency by operation",
            "s",
            "Duration of one S3 call, botocore's retries included, p50 and p99 per operation.",
            *quantiles("streamproxy_s3_request_duration_seconds", "operation", SELECTOR),
        ),
        timeseries(
            "S3 retries by operation",
            "short",
            "Retries botocore made inside S3 calls, per second: throttling, 5xx, dropped connections.",
            query(f"sum by (operation) (rate(streamproxy_s3_retries_total{{{SELECTOR}}}[{RATE}]))", "{{operation}}"),
        ),
        Stat()
        .title("Storage ready")
        .description("1 when the last readiness probe reached storage (per instance).")
        .datasource(DATASOURCE)
        .span(4)
        .height(8)
        .with_target(query(f"min by (instance) (streamproxy_storage_ready{{{SELECTOR}}})", "{{instance}}")),
        Stat()
        .title("Draining")
        .description("1 while an instance drains for shutdown.")
        .datasource(DATASOURCE)
        .span(4)
        .height(8)
        .with_target(query(f"max by (instance) (streamproxy_draining{{{SELECTOR}}})", "{{instance}}")),
    ]


def connection_panels() -> list[Timeseries | Stat]:
    """Build the connection panels: the guard in front of the HTTP parser (--max-connections, --header-timeout)."""
    return [
        timeseries(
            "Open connections",
            "short",
            "Client connections open (kept-alive ones included) against --max-connections; beyond it new "
            "ones get 503 busy.",
            query(f"sum by (instance) (streamproxy_connections_open{{{SELECTOR}}})", "{{instance}} open", "A"),
            query(f"max by (instance) (streamproxy_connections_max{{{SELECTOR}}})", "{{instance}} max", "B"),
        ),
        timeseries(
            "Connections refused and timed out",
            "short",
            "Per interval: connections refused at --max-connections, and connections closed because their "
            "request line and headers took longer than --header-timeout (slow or hostile clients).",
            query(
                f"sum by (instance) (increase(streamproxy_connections_refused_total{{{SELECTOR}}}[{RATE}]))",
                "{{instance}} refused",
                "A",
            ),
            query(
                f"sum by (instance) (increase(streamproxy_connections_header_timeouts_total{{{SELECTOR}}}[{RATE}]))",
                "{{instance}} header timeouts",
                "B",
            ),
        ),
    ]


def notification_panels() -> list[Timeseries | Stat]:
    """Build the notification and outbox panels: they go here once those metrics exist (their own row below)."""
    return []


def build() -> Dashboard:
    """Build the whole dashboard."""
    dashboard = (
        Dashboard("streamproxy")
        .uid("streamproxy")
        .description(
            "Uploads, part buffers and S3 of streamproxy instances (generated by deploy/grafana/dashboard.py)."
        )
        .tags(["streamproxy"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(
            QueryVariable("job")
            .label("Job")
            .datasource(DATASOURCE)
            .query("label_values(streamproxy_build_info, job)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        .with_variable(
            QueryVariable("instance")
            .label("Instance")
            .datasource(DATASOURCE)
            .query('label_values(streamproxy_build_info{job=~"$job"}, instance)')
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )
    rows: list[tuple[str, list[Timeseries | Stat]]] = [
        ("Uploads", upload_panels()),
        ("Part buffers and storage", buffer_and_storage_panels()),
        ("Connections", connection_panels()),
        ("Notifications and outbox", notification_panels()),
    ]
    panel_id = 0  # Grafana links and the panel editor need unique ids; the SDK leaves them all 0
    for title, panels in rows:
        if not panels:
            continue
        panel_id += 1
        dashboard = dashboard.with_row(Row(title).id(panel_id))
        for panel in panels:
            panel_id += 1
            dashboard = dashboard.with_panel(panel.id(panel_id))
    return dashboard


def render() -> str:
    """Render the dashboard as the JSON text committed in OUTPUT."""
    return json.dumps(json.loads(JSONEncoder().encode(build().build())), indent=2, sort_keys=True) + "\n"


def main() -> int:
    """Write OUTPUT, or with ``--check`` exit 1 if it differs from what this script generates."""
    text = render()
    if "--check" in sys.argv[1:]:
        if OUTPUT.read_text() != text:
            print(f"{OUTPUT} is out of date: run python {Path(__file__).as_posix()}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
