"""Log setup: one JSON object per line (library records and tracebacks included), console output, levels."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = """
import logging, sys, structlog
from streamproxy.log import configure_logging
configure_logging(sys.argv[1], sys.argv[2])
structlog.contextvars.bind_contextvars(request_id="r-1")
structlog.get_logger("streamproxy.test").info("upload", key="a.wav", bytes=3)
structlog.get_logger("streamproxy.test").warning("storage_error", s3_code="SlowDown")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("aiohttp.server").exception("Error handling request from %s", "127.0.0.1")
logging.getLogger("aiohttp.access").info("ignored below warning")
"""


def _run(fmt: str, level: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, fmt, level], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout == ""
    return result.stderr.splitlines()


def test_json_lines_everywhere() -> None:
    """structlog events and stdlib records (with their traceback) are each one JSON object carrying the request id."""
    lines = [json.loads(line) for line in _run("json", "info")]
    assert [(x["event"], x["level"]) for x in lines] == [
        ("upload", "info"),
        ("storage_error", "warning"),
        ("Error handling request from 127.0.0.1", "error"),
    ]
    assert all(x["request_id"] == "r-1" and x["timestamp"].endswith("Z") for x in lines)
    assert lines[0]["key"] == "a.wav" and lines[1]["s3_code"] == "SlowDown"
    assert lines[2]["logger"] == "aiohttp.server" and "ZeroDivisionError" in lines[2]["exception"]


@pytest.mark.parametrize(("level", "events"), [("warning", 2), ("error", 1)])
def test_level_filters(level: str, events: int) -> None:
    assert len(_run("json", level)) == events


def test_console_format_is_for_humans() -> None:
    lines = _run("console", "info")
    assert "upload" in lines[0] and "key=a.wav" in lines[0]
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])
