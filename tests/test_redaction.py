"""Secrets never reach the logs: tokens, Authorization headers, query tokens, presigned signatures."""

from __future__ import annotations

import base64
import json
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

from streamproxy.redact import REDACTED, redact_processor, remember_secret, scrub
from tests.servers import streamproxy_server

TOKEN_FLAG = "flag-token-0123456789abcdef"
TOKEN_FILE = "file-token-fedcba9876543210"
WRONG = "wrong-token-ABCDEFGHIJKLMNOP"
PRESIGNED = (
    "https://calls.s3.eu-central-1.amazonaws.com/rec/call-7.wav?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAEXAMPLE%2F20261126%2Feu-central-1%2Fs3%2Faws4_request&X-Amz-Date=20261126T080000Z"
    "&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Security-Token=FQoGZXIvYXdzEXAMPLE"
    "&X-Amz-Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)


def test_scrub_removes_credential_shapes() -> None:
    """Presigned URL secrets, Bearer/Basic credentials, Authorization values and token= parameters go."""
    remember_secret("remembered-secret-000111")
    text = scrub(
        f"url={PRESIGNED} auth=Bearer abcdefgh12345678 basic=Basic Zm9vOmJhcmJhcmJhcg== "
        "Authorization: Digest zzz\n?token=qwertyuiop&filename=x said remembered-secret-000111"
    )
    for secret in ("0123456789abcdef0123", "AKIAEXAMPLE", "FQoGZXIvYXdzEXAMPLE", "abcdefgh12345678",
                   "Zm9vOmJhcmJhcmJhcg", "Digest zzz", "qwertyuiop", "remembered-secret-000111"):  # fmt: skip
        assert secret not in text, (secret, text)
    assert "filename=x" in text and "X-Amz-Expires=3600" in text and REDACTED in text


def test_processor_scrubs_nested_values() -> None:
    """The structlog processor scrubs strings inside nested fields and bytes too."""
    event = redact_processor(
        None,
        "info",
        {"event": "x", "headers": {"Authorization": "Bearer abcdefgh12345678"}, "raw": [b"?token=qwertyuiop"]},
    )
    assert "abcdefgh12345678" not in json.dumps(event) and "qwertyuiop" not in json.dumps(event)


def _call(base: str, path: str, data: bytes, headers: dict[str, str], method: str = "PUT") -> int:
    request = urllib.request.Request(f"{base}{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _raw(port: int, request: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request.encode())
        return conn.recv(4096)


def test_no_secret_in_the_server_log(tmp_path: Path) -> None:
    """Authenticated uploads and every kind of auth failure at debug level: the log never holds a secret."""
    token_file = tmp_path / "tokens"
    token_file.write_text(TOKEN_FILE + "\n")
    args = [
        "--auth-token", TOKEN_FLAG, "--auth-token-file", str(token_file), "--allow-query-token",
        "--log-level", "debug", "--storage", (tmp_path / "store").as_uri(),
    ]  # fmt: skip
    basic_ok = "Basic " + base64.b64encode(f"fuse:{TOKEN_FILE}".encode()).decode()
    basic_wrong = "Basic " + base64.b64encode(f"fuse:{WRONG}".encode()).decode()
    wav = {"Content-Type": "audio/wav"}
    with streamproxy_server(args) as (proc, base):
        statuses = [
            _call(base, "/recordings/a", b"1", {**wav, "Authorization": f"Bearer {TOKEN_FLAG}"}),
            _call(base, "/recordings/b", b"2", {**wav, "Authorization": basic_ok}),
            _call(base, f"/recordings?filename=c&token={TOKEN_FILE}", b"3", wav, method="POST"),
            _call(base, "/recordings/a", b"dup", {**wav, "Authorization": f"Bearer {TOKEN_FLAG}"}),  # 409
            _call(base, "/recordings/..%2Fx", b"4", {**wav, "Authorization": f"Bearer {TOKEN_FLAG}"}),  # 400
            _call(base, "/recordings/d", b"5", {**wav, "Authorization": f"Bearer {WRONG}"}),
            _call(base, "/recordings/e", b"6", {**wav, "Authorization": basic_wrong}),
            _call(base, f"/recordings?filename=f&token={WRONG}", b"7", wav, method="POST"),
            _call(base, "/recordings/g", b"8", wav),
        ]
        port = int(base.rsplit(":", 1)[1])
        # aiohttp's parser logs the start of an over-long request line or header at error level
        parser_errors = [
            _raw(port, f"GET /recordings?token={TOKEN_FLAG}&pad={'p' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n"),
            _raw(port, f"PUT /recordings/h HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {WRONG}{'p' * 9000}\r\n\r\n"),
        ]
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert statuses == [200, 200, 200, 409, 400, 401, 401, 401, 401]
    assert all(answer.startswith(b"HTTP/1.") and b" 400 " in answer for answer in parser_errors), parser_errors
    log = stderr.decode()
    assert "8190" in log  # aiohttp did log the parser errors: the scrubbing was exercised
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    uploads = [e for e in events if e.get("event") == "upload"]
    assert [e["error"] for e in uploads].count("unauthorized") == 4, log  # refusals are logged, without secrets
    assert len(uploads) == 9, log
    for secret in (TOKEN_FLAG, TOKEN_FILE, WRONG, basic_ok.split()[1], basic_wrong.split()[1]):
        assert secret not in log, secret
    for shape in (
        r"Bearer\s+[A-Za-z0-9\-._~+/]{8,}",
        r"Basic\s+[A-Za-z0-9+/]{8,}",
        r"token=[^\[&\s\"']",
        r"Authorization:",
    ):
        assert not re.search(shape, log), shape  # credentials in any form, not just the ones we know
