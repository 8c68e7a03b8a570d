"""TLS on both sides: HTTPS served directly, and certificates always verified towards S3."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.certs import self_signed
from tests.helpers import form, incomplete_uploads, objects, s3_settings
from tests.servers import config_error, streamproxy_server

TOKEN = "tls-token-0123456789abcdef"


def test_serves_https_with_the_given_certificate(tmp_path: Path) -> None:
    """--tls-cert/--tls-key: uploads over HTTPS work, plain HTTP on the same port gets no answer."""
    cert, key = self_signed(tmp_path)
    store = tmp_path / "store"
    args = ["--tls-cert", str(cert), "--tls-key", str(key), "--auth-token", TOKEN, "--storage", store.as_uri()]
    with streamproxy_server(args, tls_ca=cert) as (_, base):
        assert base.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        request = urllib.request.Request(
            f"{base}/recordings/secure",
            data=b"RIFF-over-tls",
            method="PUT",
            headers={"Content-Type": "audio/wav", "Authorization": f"Bearer {TOKEN}"},
        )
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:
            assert resp.status == 200
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(base.replace("https://", "http://") + "/healthz", timeout=5)
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(f"{base}/healthz", timeout=5, context=ssl.create_default_context())
    assert (store / "secure.wav").read_bytes() == b"RIFF-over-tls"


def test_unusable_certificate_is_one_line(tmp_path: Path) -> None:
    """A key that does not load stops the server at start with one line, exit status 2."""
    cert, _key = self_signed(tmp_path)
    bogus = tmp_path / "bogus.key"
    bogus.write_text("not a key\n")
    assert "--tls-key" in config_error("serve", "--tls-cert", str(cert), "--tls-key", str(bogus))


@contextlib.asynccontextmanager
async def tls_front(target: str, cert: Path, key: Path) -> AsyncIterator[str]:
    """A TLS-terminating TCP relay on loopback in front of ``target`` (moto); yield its https URL."""
    host, port = target.removeprefix("http://").split(":")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))

    server = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=context)
    try:
        yield f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def test_s3_certificates_are_verified(client_for, moto_endpoint, bucket, s3, tmp_path) -> None:
    """An S3 endpoint with a private CA fails without --s3-ca-bundle and works with it."""
    cert, key = self_signed(tmp_path, "private-ca")
    async with tls_front(moto_endpoint, cert, key) as endpoint:
        untrusted = await client_for(s3_settings(endpoint, bucket, s3_max_attempts=1))
        resp = await untrusted.post("/recordings", data=form([("filename", "x"), ("recording", b"abc")]))
        body = await resp.json()
        assert resp.status >= 500 and body["status"] == "failure", body
        assert "CERTIFICATE_VERIFY_FAILED" in body["message"] or "SSL" in body["message"], body
        assert objects(s3, bucket) == {}

        trusted = await client_for(s3_settings(endpoint, bucket, s3_max_attempts=1, s3_ca_bundle=str(cert)))
        resp = await trusted.post("/recordings", data=form([("filename", "x"), ("recording", b"abc")]))
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["url"].startswith("https://127.0.0.1:")
    assert objects(s3, bucket) == {"rec/x.wav": b"abc"}
    assert incomplete_uploads(s3, bucket) == []


def test_no_flag_disables_verification() -> None:
    """There is no switch to turn S3 certificate verification off."""
    result = subprocess.run(
        [sys.executable, "-m", "streamproxy", "serve", "--help"], capture_output=True, text=True, check=True
    )
    for word in ("insecure", "no-verify", "verify-ssl", "skip-verify"):
        assert word not in result.stdout
