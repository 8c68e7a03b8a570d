"""Tokens, client address rules and the secure default: who may upload, decided from the headers."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from streamproxy.auth import Authenticator, ClientFilter
from streamproxy.cli import settings_from_args
from streamproxy.config import ConfigError
from streamproxy.errors import Forbidden, Unauthorized
from streamproxy.sinks.memory import MemorySink
from tests.helpers import form, fs_settings
from tests.servers import config_error

TOKEN_A = "tok-A-0123456789abcdef"
TOKEN_B = "tok-B-fedcba9876543210"


def basic(password: str, user: str = "fuse") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- Authenticator -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {TOKEN_A}", f"bearer {TOKEN_B}", f"Bearer   {TOKEN_A}  ", basic(TOKEN_A), basic(TOKEN_B, user="")],
)
def test_any_configured_token_is_accepted_as_bearer_or_basic(authorization: str) -> None:
    """Each of several tokens passes (rotation), as a Bearer token or as the Basic password."""
    Authenticator([TOKEN_A, TOKEN_B]).check(authorization, {})


@pytest.mark.parametrize(
    ("authorization", "query", "needle"),
    [
        (None, {}, "authentication required"),
        ("Bearer wrong-token-0000000000", {}, "not valid"),
        (f"Bearer {TOKEN_A}x", {}, "not valid"),
        (f"Bearer {TOKEN_A[:-1]}", {}, "not valid"),
        (basic("wrong-password-00000"), {}, "not valid"),
        (basic(TOKEN_A)[:-2] + "!!", {}, "base64"),
        ("Basic " + base64.b64encode(TOKEN_A.encode()).decode(), {}, "':'"),
        (f"Token {TOKEN_A}", {}, "unsupported"),
        ("Bearer", {}, "unsupported"),
        (None, {"token": TOKEN_A}, "query string"),
    ],
)
def test_bad_credentials_are_401_with_challenges(authorization: str | None, query: dict[str, str], needle: str) -> None:
    """Missing, wrong or malformed credentials raise 401 naming why, never echoing what was sent."""
    with pytest.raises(Unauthorized) as info:
        Authenticator([TOKEN_A]).check(authorization, query)
    assert info.value.status == 401 and info.value.code == "unauthorized"
    assert needle in info.value.message
    assert TOKEN_A not in info.value.message and "wrong" not in info.value.message
    assert info.value.challenges == ('Bearer realm="streamproxy"', 'Basic realm="streamproxy", charset="UTF-8"')


def test_query_token_only_when_allowed() -> None:
    """?token= works with allow_query_token, and a header still takes precedence over it."""
    auth = Authenticator([TOKEN_A], allow_query_token=True)
    auth.check(None, {"token": TOKEN_A})
    with pytest.raises(Unauthorized):
        auth.check(None, {"token": TOKEN_B})
    with pytest.raises(Unauthorized):
        auth.check("Bearer wrong-token-0000000000", {"token": TOKEN_A})


def test_no_tokens_means_open() -> None:
    """Without tokens (loopback or --allow-anonymous) every request passes."""
    auth = Authenticator([])
    assert not auth.required
    auth.check(None, {})


# --- ClientFilter ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "xff", "client"),
    [
        ("203.0.113.9", [], "203.0.113.9"),
        ("203.0.113.9", ["10.9.9.9"], "203.0.113.9"),  # not a trusted proxy: its header is ignored
        ("10.0.0.2", ["198.51.100.7"], "198.51.100.7"),
        ("10.0.0.2", ["6.6.6.6, 198.51.100.7"], "198.51.100.7"),  # the client-supplied part is not believed
        ("10.0.0.2", ["6.6.6.6, 198.51.100.7, 10.0.0.3"], "198.51.100.7"),  # two trusted hops
        ("10.0.0.2", ["6.6.6.6", "198.51.100.7"], "198.51.100.7"),  # repeated headers join in order
        ("10.0.0.2", ["10.0.0.4, 10.0.0.3"], "10.0.0.4"),  # all trusted: the leftmost is the client
        ("10.0.0.2", [], "10.0.0.2"),
        ("::ffff:10.0.0.2", ["198.51.100.7:4711"], "198.51.100.7"),  # v4-mapped peer, port in the header
        ("10.0.0.2", ["[2001:db8::1]:443"], "2001:db8::1"),
    ],
)
def test_forwarded_chain_is_walked_from_the_right(peer: str, xff: list[str], client: str) -> None:
    """X-Forwarded-For is believed only for hops added by trusted proxies."""
    assert str(ClientFilter([], ["10.0.0.0/24"]).client_address(peer, xff)) == client


def test_cidr_rules() -> None:
    """Listed networks pass, anything else (and unknown or garbled addresses) is 403."""
    rules = ClientFilter(["198.51.100.0/24", "2001:db8::/32"], ["10.0.0.2"])
    rules.check("198.51.100.200")
    rules.check("2001:db8::5")
    rules.check("10.0.0.2", ["198.51.100.1"])
    for peer, xff in [("203.0.113.1", []), ("10.0.0.2", ["203.0.113.1"]), ("10.0.0.2", ["not-an-ip"]), (None, [])]:
        with pytest.raises(Forbidden):
            rules.check(peer, xff)
    ClientFilter().check(None)  # no rules: everyone


# --- over HTTP ---------------------------------------------------------------------------------


async def test_http_tokens(client_for, tmp_path) -> None:
    """401 JSON with both challenges and nothing stored; Bearer and Basic uploads succeed."""
    sink = MemorySink()
    client = await client_for(fs_settings(tmp_path, auth_tokens=(TOKEN_A, TOKEN_B)), sink)
    for headers in ({}, {"Authorization": "Bearer nope-nope-nope-nope"}, {"Authorization": basic("x" * 20)}):
        resp = await client.post("/recordings", data=form([("filename", "a"), ("recording", b"abc")]), headers=headers)
        assert resp.status == 401
        body = await resp.json()
        assert body["status"] == "failure" and body["error"] == "unauthorized"
        assert resp.headers.getall("WWW-Authenticate") == [
            'Bearer realm="streamproxy"',
            'Basic realm="streamproxy", charset="UTF-8"',
        ]
        put = await client.put("/recordings/a", data=b"abc", headers={"Content-Type": "audio/wav", **headers})
        assert put.status == 401
    assert sink.objects == {}
    ok = await client.post(
        "/recordings",
        data=form([("filename", "a"), ("recording", b"abc")]),
        headers={"Authorization": f"Bearer {TOKEN_B}"},
    )
    assert ok.status == 200, await ok.text()
    ok = await client.put(
        "/recordings/b", data=b"def", headers={"Content-Type": "audio/wav", "Authorization": basic(TOKEN_A)}
    )
    assert ok.status == 200
    assert {k: v.data for k, v in sink.objects.items()} == {"a.wav": b"abc", "b.wav": b"def"}


async def test_query_token_over_http(client_for, tmp_path) -> None:
    """?token= is refused unless --allow-query-token, and then accepted."""
    closed = await client_for(fs_settings(tmp_path, auth_tokens=(TOKEN_A,)), MemorySink())
    resp = await closed.post("/recordings", params={"filename": "q", "token": TOKEN_A}, data=b"x")
    assert resp.status == 401 and "query string" in (await resp.json())["message"]
    sink = MemorySink()
    opened = await client_for(fs_settings(tmp_path, auth_tokens=(TOKEN_A,), allow_query_token=True), sink)
    resp = await opened.post(
        "/recordings", params={"filename": "q", "token": TOKEN_A}, data=b"x", headers={"Content-Type": "audio/wav"}
    )
    assert resp.status == 200, await resp.text()
    assert list(sink.objects) == ["q.wav"]


async def _exchange(port: int, request: bytes, wait: float = 3.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), wait)
    finally:
        writer.close()


@pytest.mark.parametrize("expect", [True, False])
async def test_401_is_decided_before_the_body(client_for, tmp_path, expect) -> None:
    """With or without Expect: 100-continue, the 401 arrives while no body byte was sent."""
    sink = MemorySink()
    client = await client_for(fs_settings(tmp_path, auth_tokens=(TOKEN_A,), read_timeout=30), sink)
    head = (
        "PUT /recordings/held HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
        f"Content-Length: {50 * 2**20}\r\n{'Expect: 100-continue' + chr(13) + chr(10) if expect else ''}\r\n"
    ).encode()
    answer = await _exchange(client.port, head)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b"100 Continue" not in answer
    assert b'"error": "unauthorized"' in answer and b"WWW-Authenticate: Bearer" in answer
    assert sink.objects == {}


async def test_client_address_rules_over_http(client_for, tmp_path) -> None:
    """--allow-cidr refuses other addresses with 403 (before 401); X-Forwarded-For counts only via trusted proxies."""
    sink = MemorySink()
    settings = fs_settings(
        tmp_path, auth_tokens=(TOKEN_A,), allow_cidr=("198.51.100.0/24",), trusted_proxy=("127.0.0.1/32",)
    )
    client = await client_for(settings, sink)
    auth = {"Authorization": f"Bearer {TOKEN_A}", "Content-Type": "audio/wav"}
    cases: list[tuple[dict[str, str], int]] = [
        ({}, 403),  # the test client is 127.0.0.1, a proxy, not an allowed client
        ({"X-Forwarded-For": "203.0.113.5"}, 403),
        ({"X-Forwarded-For": "198.51.100.20, 203.0.113.5"}, 403),  # a spoofed left part does not help
        ({"X-Forwarded-For": "garbage"}, 403),
        ({"X-Forwarded-For": "198.51.100.20"}, 200),
    ]
    for number, (extra, status) in enumerate(cases):
        resp = await client.put(f"/recordings/c{number}", data=b"x", headers={**auth, **extra})
        assert resp.status == status, (extra, await resp.text())
        if status == 403:
            assert (await resp.json())["error"] == "forbidden"
    no_token = await client.put("/recordings/z", data=b"x", headers={"X-Forwarded-For": "203.0.113.5"})
    assert no_token.status == 403  # address rules first: a stranger learns nothing about the tokens
    assert list(sink.objects) == ["c4.wav"]


async def test_probes_and_unknown_paths_stay_open(client_for, tmp_path) -> None:
    """Probes and metrics answer without a token and from any address; unknown paths 404, wrong methods 405."""
    client = await client_for(fs_settings(tmp_path, auth_tokens=(TOKEN_A,), allow_cidr=("198.51.100.0/24",)))
    health = await client.get("/healthz")
    assert health.status == 200 and (await health.json()) == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status == 200, await ready.text()
    metrics = await client.get("/metrics")
    assert metrics.status == 200 and TOKEN_A not in await metrics.text()
    assert (await client.get("/nope")).status == 404
    assert (await client.delete("/recordings")).status == 405


# --- configuration -----------------------------------------------------------------------------


def _serve_args(*args: str) -> Any:
    return settings_from_args(["serve", *args])[1]


def test_tokens_from_flags_env_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Repeatable flags, STREAMPROXY_AUTH_TOKENS (comma-separated) and a token file all feed the same list."""
    monkeypatch.setenv("STREAMPROXY_AUTH_TOKENS", f"{TOKEN_A}, {TOKEN_B}")
    assert _serve_args().tokens == (TOKEN_A, TOKEN_B)
    assert _serve_args("--auth-token", TOKEN_B).tokens == (TOKEN_B,)  # flags replace the variable
    monkeypatch.delenv("STREAMPROXY_AUTH_TOKENS")
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# rotated 2026-11\n{TOKEN_A}\n\n  {TOKEN_B}  \n")
    settings = _serve_args("--auth-token", "tok-C-0000000000000000", "--auth-token-file", str(token_file))
    assert settings.tokens == ("tok-C-0000000000000000", TOKEN_A, TOKEN_B)
    assert TOKEN_A not in repr(settings) and "tok-C" not in repr(settings)
    monkeypatch.setenv("STREAMPROXY_ALLOW_CIDR", "10.0.0.0/8,192.0.2.1")
    assert _serve_args().allow_cidr == ("10.0.0.0/8", "192.0.2.1")
    assert _serve_args("--allow-cidr", "198.51.100.0/24", "--allow-cidr", "::1").allow_cidr == (
        "198.51.100.0/24",
        "::1",
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--auth-token", "short"], "shorter than 16"),
        (["--auth-token", "has space in it 0123456"], "visible ASCII"),
        (["--auth-token-file", "/nonexistent/tokens"], "--auth-token-file"),
        (["--allow-cidr", "10.0.0.0/33"], "--allow-cidr"),
        (["--trusted-proxy", "proxy.example"], "--trusted-proxy"),
        (["--tls-cert", "/etc/hostname"], "go together"),
        (["--s3-ca-bundle", "/nonexistent.pem"], "--s3-ca-bundle"),
        (["--max-upload-seconds", "0"], "--max-upload-seconds"),
    ],
)
def test_bad_security_settings(args: list[str], needle: str) -> None:
    """Each wrong security setting is one ConfigError naming it; a token never appears in it."""
    with pytest.raises(ConfigError) as info:
        _serve_args(*args)
    assert needle in str(info.value)
    assert "short" not in str(info.value).replace("shorter", "")


def test_empty_token_file_is_refused(tmp_path: Path) -> None:
    """A token file without tokens is a mistake, not a request for anonymous access."""
    empty = tmp_path / "tokens"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="holds no token"):
        _serve_args("--auth-token-file", str(empty))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.53"])
def test_loopback_runs_without_tokens(host: str) -> None:
    """The quick start needs no token: loopback addresses are reachable from this machine only."""
    assert _serve_args("--host", host).tokens == ()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "recorder.example"])
def test_network_without_tokens_refuses_to_start(host: str) -> None:
    """Listening beyond loopback needs a token or an explicit --allow-anonymous."""
    line = config_error("serve", "--host", host)
    assert "--auth-token" in line and "--allow-anonymous" in line
    assert _serve_args("--host", host, "--allow-anonymous").allow_anonymous
    assert _serve_args("--host", host, "--auth-token", TOKEN_A).tokens == (TOKEN_A,)
