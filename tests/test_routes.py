"""--config routes: each [[route]] its own path, storage, key template, URL mode and options."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from streamproxy.cli import settings_from_args
from streamproxy.config import ConfigError, Settings
from streamproxy.routes import ROUTE_KEYS
from tests.helpers import PART, form, objects, payload, sha256
from tests.servers import config_error


def _settings(tmp_path: Path, text: str, *extra: str) -> Settings:
    config = tmp_path / "routes.toml"
    config.write_text(text)
    _, settings = settings_from_args(
        ["serve", "--part-size", "5MiB", "--max-buffer-bytes", "40MiB", "--config", str(config), *extra]
    )
    return settings


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def two_buckets(s3: Any, bucket: str) -> tuple[str, str]:
    other = bucket + "-b"
    s3.create_bucket(Bucket=other)
    return bucket, other


async def test_each_route_stores_into_its_own_destination(client_for, moto_endpoint, s3, two_buckets, tmp_path) -> None:
    """Default route, an S3 route and a filesystem route: every upload lands where its path says, only there."""
    default_bucket, acme_bucket = two_buckets
    globex_dir = tmp_path / "globex"
    settings = _settings(
        tmp_path,
        f"""
        [[route]]
        path = "/recordings/acme"
        storage = "s3://{acme_bucket}/acme/"
        key-template = "{{field:call_id}}/{{filename}}.wav"
        raw-audio = "none"
        url-mode = "presigned"
        presign-expires = "1h"
        sse = "AES256"
        tags = {{ customer = "acme" }}
        tag-fields = ["call_id"]

        [[route]]
        path = "/globex/in"
        storage = "{globex_dir.as_uri()}"
        manifest = true
        raw-audio = "none"
        key-template = "{{filename}}.wav"
        """,
        "--storage",
        f"s3://{default_bucket}/default/",
        "--s3-endpoint-url",
        moto_endpoint,
        "--tag",
        "customer=house",
        "--key-template",
        "{uuid}.wav",
    )
    client = await client_for(settings)
    data = payload(2 * PART + 3)

    acme = await client.post("/recordings/acme", data=form([("call_id", "77"), ("filename", "a"), ("recording", data)]))
    body = await acme.json()
    assert acme.status == 200, body
    assert body["key"] == "acme/77/a.wav" and body["bucket"] == acme_bucket and body["sha256"] == sha256(data)
    assert parse_qs(urlsplit(body["url"]).query)["X-Amz-Expires"] == ["3600"]
    assert s3.head_object(Bucket=acme_bucket, Key="acme/77/a.wav")["ServerSideEncryption"] == "AES256"
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=acme_bucket, Key="acme/77/a.wav")["TagSet"]}
    assert tags["customer"] == "acme" and tags["call_id"] == "77"

    raw = await client.put("/recordings/acme/b", data=b"xyz", headers={"Content-Type": "audio/wav"})
    assert raw.status == 400 and (await raw.json())["error"] == "missing_field"  # its template needs call_id

    globex = await client.put("/globex/in/g-1", data=b"RIFFglobex", headers={"Content-Type": "audio/wav"})
    body = await globex.json()
    assert globex.status == 200, body
    assert body["url"] == (globex_dir / "g-1.wav").as_uri() and body["manifest"] == "g-1.wav.json"

    default = await client.put("/recordings/d-1", data=b"house", headers={"Content-Type": "audio/wav"})
    body = await default.json()
    assert default.status == 200, body
    assert body["key"].startswith("default/") and body["bucket"] == default_bucket and "manifest" not in body
    default_tags = s3.get_object_tagging(Bucket=default_bucket, Key=body["key"])["TagSet"]
    assert default_tags == [{"Key": "customer", "Value": "house"}]

    assert set(objects(s3, acme_bucket)) == {"acme/77/a.wav"}
    assert set(objects(s3, default_bucket)) == {body["key"]}
    assert set(_files(globex_dir)) == {"g-1.wav", "g-1.wav.json"}


async def test_routes_do_not_inherit_the_default_routes_options(
    client_for, moto_endpoint, bucket, s3, tmp_path
) -> None:
    """A route without a key template, tags or manifest gets the built-in defaults, not the flags' values."""
    settings = _settings(
        tmp_path,
        f'[[route]]\npath = "/r2"\nstorage = "s3://{bucket}/r2/"\n',
        "--storage",
        f"s3://{bucket}/d/",
        "--s3-endpoint-url",
        moto_endpoint,
        "--key-template",
        "{uuid}.wav",
        "--tag",
        "secret=default-only",
        "--manifest",
    )
    client = await client_for(settings)
    resp = await client.post("/r2", data=form([("filename", "plain"), ("recording", b"x")]))
    body = await resp.json()
    assert resp.status == 200 and body["key"] == "r2/plain.wav" and "manifest" not in body
    assert s3.get_object_tagging(Bucket=bucket, Key="r2/plain.wav")["TagSet"] == []
    unknown = await client.post("/r3", data=form([("filename", "x"), ("recording", b"x")]))
    assert unknown.status == 404


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[[route]]\npath = '/a'\nstorage = 'file:///tmp/a'\ncolour = 'red'\n", "route 1: unknown key 'colour'"),
        ("[server]\nport = 1\n", "unknown key 'server'"),
        ("", "at least one [[route]]"),
        ("[[route]]\npath = '/a'\n", "'storage' is missing"),
        ("[[route]]\nstorage = 'file:///tmp/a'\n", "'path' is missing"),
        (
            "[[route]]\npath = '/a'\nstorage = 'file:///tmp/a'\nauth-tokens = 'abc'\n",
            "'auth-tokens' must be a list of strings",
        ),
        (
            "[[route]]\npath = '/a'\nstorage = 'file:///tmp/a'\nauth-tokens = ['short']\n",
            "route /a: auth token #1 is shorter",
        ),
        (
            "[[route]]\npath = '/a'\nstorage = 'file:///tmp/a'\nauth-token-file = '/nonexistent'\n",
            "route /a: --auth-token-file",
        ),
        ("[[route]]\npath = '/a'\nstorage = 'file:///tmp/a'\nmanifest = 'yes'\n", "'manifest' must be true or false"),
        ("[[route]]\npath = '/a'\nstorage = 'ftp://x'\n", "'storage': 'ftp://x'"),
        ("[[route]]\npath = 'a'\nstorage = 'file:///tmp/a'\n", "route a: a path is /segment"),
        ("[[route]]\npath = '/recordings'\nstorage = 'file:///tmp/a'\n", "taken by the default route"),
        ("[[route]]\npath = '/healthz'\nstorage = 'file:///tmp/a'\n", "or a probe"),
        (
            "[[route]]\npath = '/a'\nstorage = 'file:///tmp/a'\n[[route]]\npath = '/a'\nstorage = 'file:///tmp/b'\n",
            "route /a: the path is used by an earlier route",
        ),
        (
            "[[route]]\npath = '/a'\nstorage = 'file:///tmp/a'\nurl-mode = 'presigned'\n",
            "route /a: --url-mode presigned needs s3://",
        ),
        ("[[route]]\npath = '/a'\nstorage = 's3://bkt/'\nsse = 'rot13'\n", "route /a: --sse 'rot13'"),
        ("[[route]]\npath = '/a'\nstorage = 's3://bkt/'\nkey-template = 'x.wav'\n", "route /a: key template 'x.wav'"),
        ("[[route]]\npath = '/a'\nstorage = 's3://bkt/'\ntags = { 'aws:x' = '1' }\n", "route /a: --tag"),
        ("[[route]\n", "not valid TOML"),
    ],
)
def test_bad_route_files_are_refused_with_one_line(tmp_path: Path, text: str, needle: str) -> None:
    """Every mistake names the file, the route and the key, on one line."""
    with pytest.raises(ConfigError) as info:
        _settings(tmp_path, text)
    message = str(info.value)
    assert needle in message and "routes.toml" in message and "\n" not in message, message


def test_missing_config_file_stops_the_process(tmp_path: Path) -> None:
    """`streamproxy serve --config missing.toml` exits 2 with one line."""
    assert "missing.toml: cannot read it" in config_error("serve", "--config", str(tmp_path / "missing.toml"))


def test_tokens_are_not_printed(tmp_path: Path) -> None:
    """Neither a route's repr nor the settings' show its tokens (settings end up in logs and tracebacks)."""
    settings = _settings(
        tmp_path, "[[route]]\npath = '/a'\nstorage = 'file:///tmp/a'\nauth-tokens = ['s3cr3t-token-0123456789']\n"
    )
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in repr(settings.routes)


def test_a_route_without_tokens_on_the_network_is_refused(tmp_path: Path) -> None:
    """Beyond loopback every route needs its own tokens (or --allow-anonymous), as the default route does."""
    text = "[[route]]\npath = '/open'\nstorage = 'file:///tmp/a'\n"
    with pytest.raises(ConfigError, match=re.escape("route /open: --host 0.0.0.0: refusing")):
        _settings(tmp_path, text, "--host", "0.0.0.0", "--auth-token", DEFAULT_TOKEN)
    settings = _settings(tmp_path, text, "--host", "0.0.0.0", "--auth-token", DEFAULT_TOKEN, "--allow-anonymous")
    assert settings.routes[0].path == "/open"


DEFAULT_TOKEN = "default-route-token-0000"
ACME_TOKEN = "acme-route-token-11111111"
GLOBEX_TOKEN = "globex-route-token-2222222"


async def test_a_token_of_one_route_opens_no_other(client_for, moto_endpoint, bucket, s3, tmp_path) -> None:
    """Each route accepts exactly its own tokens: 401 for another route's token, and nothing is stored."""
    tokens = tmp_path / "globex.tokens"
    tokens.write_text(f"# globex\n{GLOBEX_TOKEN}\n")
    config = f"""
        [[route]]
        path = "/recordings/acme"
        storage = "s3://{bucket}/acme/"
        auth-tokens = ["{ACME_TOKEN}"]

        [[route]]
        path = "/recordings/globex"
        storage = "s3://{bucket}/globex/"
        auth-token-file = "{tokens}"
        """
    flags = ["--storage", f"s3://{bucket}/default/", "--s3-endpoint-url", moto_endpoint, "--auth-token", DEFAULT_TOKEN]
    settings = _settings(tmp_path, config, *flags)
    client = await client_for(settings)
    paths = {"/recordings": DEFAULT_TOKEN, "/recordings/acme": ACME_TOKEN, "/recordings/globex": GLOBEX_TOKEN}
    for path, own in paths.items():
        for token in (*paths.values(), None, "not-a-token-of-anyone-at-all"):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            resp = await client.put(f"{path}/call", data=b"x", headers={"Content-Type": "audio/wav", **headers})
            body = await resp.json()
            if token == own:
                assert resp.status == 200, (path, body)
            else:
                assert resp.status == 401 and body["error"] == "unauthorized", (path, token, body)
    assert set(objects(s3, bucket)) == {"default/call.wav", "acme/call.wav", "globex/call.wav"}


def test_route_keys_derived_from_the_settings_fields_are_the_documented_ones() -> None:
    """The [[route]] keys come from Settings metadata now; each still sets the same field as before."""
    assert {key: name for key, (name, _) in ROUTE_KEYS.items()} == {
        "path": "",
        "auth-tokens": "auth_tokens",
        "auth-token-file": "auth_token_file",
        "allow-query-token": "allow_query_token",
        "storage": "storage",
        "key-template": "key_template",
        "url-mode": "url_mode",
        "presign-expires": "presign_expires",
        "sse": "sse",
        "sse-kms-key-id": "sse_kms_key_id",
        "storage-class": "storage_class",
        "object-lock-mode": "object_lock_mode",
        "object-lock-days": "object_lock_days",
        "object-lock-legal-hold": "object_lock_legal_hold",
        "tags": "tags",
        "tag-fields": "tag_fields",
        "manifest": "manifest",
        "require-audio": "require_audio",
        "require-wav": "require_audio",
        "raw-audio": "raw_audio",
        "store-format": "store_format",
        "audio-bitrate": "audio_bitrate",
        "overwrite": "overwrite",
        "notify-urls": "notify_url",
        "notify-sqs": "notify_sqs",
        "notify-sns": "notify_sns",
    }
    convert = {key: converter for key, (_, converter) in ROUTE_KEYS.items()}
    assert convert["presign-expires"]("2h") == 7200 and convert["audio-bitrate"]("24k") == 24000
    assert convert["tags"]({"team": "ivr"}) == (("team", "ivr"),)
    with pytest.raises(TypeError, match="an integer"):
        convert["object-lock-days"](True)
