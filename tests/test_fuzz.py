"""A hypothesis-driven fuzz target for the request path: arbitrary requests never cause a 5xx or a leak.

Each example is one raw HTTP/1.1 request on a fresh loopback connection: a method, a path, an
Authorization header (valid, wrong or junk), a content type, and a body that is a valid form
mutated by inserts, deletes and byte changes, sent with Content-Length or chunked. The run is
bounded by ``FUZZ_EXAMPLES`` (default 300, a few seconds); raise it to fuzz longer locally.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from streamproxy.config import Settings, StorageURI
from streamproxy.sinks.memory import MemorySink
from tests.helpers import PART, multipart_body, mutate
from tests.live import LiveServer, live_servers

pytestmark = pytest.mark.filterwarnings(
    "ignore::aiohttp.multipart.BadContentDispositionHeader", "ignore::aiohttp.multipart.BadContentDispositionParam"
)

TOKEN = "fuzz-token-0123456789abcdef"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
VALID = multipart_body([("caller", b"+4930"), ("filename", b"call-1"), ("recording", b"RIFF" + bytes(range(256)))])


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    """A token-protected server on the memory sink with small limits."""
    config = Settings(
        storage=StorageURI.parse("s3://calls/rec/"),
        part_size=PART,
        max_buffer_bytes=2 * PART,
        max_upload_bytes=64 * 1024,
        read_timeout=2,
        auth_tokens=(TOKEN,),
        allow_query_token=True,
    )
    with live_servers([(config, MemorySink())]) as (live,):
        yield live


bodies = st.one_of(
    st.builds(
        mutate,
        st.just(VALID),
        st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.binary(max_size=24)), max_size=4),
    ),
    st.binary(max_size=512),
)
authorizations = st.one_of(
    st.just(f"Bearer {TOKEN}"),
    st.sampled_from(
        [
            None,
            "Basic " + base64.b64encode(f"fuse:{TOKEN}".encode()).decode(),
            "Bearer wrong-token-wrong-token",
            "Basic !!!",
            "Digest x",
        ]
    ),
)
any_paths = st.one_of(
    st.sampled_from(["/recordings", "/recordings/call-2", "/recordings/..%2Fetc", "/healthz"]),
    st.text("abc/%.?=&-_", max_size=30).map(lambda t: "/" + t),
)
requests = st.one_of(
    st.tuples(
        st.just("POST"),
        st.sampled_from(
            [
                "/recordings",
                "/recordings?filename=raw-1",
                f"/recordings?filename=q&token={TOKEN}",
                "/recordings?token=nope",
                "/recordings?filename=..%2F..%2Fx",
            ]
        ),
    ),
    st.tuples(st.just("PUT"), st.sampled_from(["/recordings/call-2", "/recordings/..%2Fetc", "/recordings/a%00b"])),
    st.tuples(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]), any_paths),
)
content_types = st.one_of(
    st.just("multipart/form-data; boundary=b0undary"),
    st.sampled_from(
        [
            "multipart/form-data; boundary=b0undary",
            "multipart/form-data; boundary=other",
            "multipart/form-data",
            "multipart/mixed; boundary=b0undary",
            "audio/wav",
            "application/octet-stream",
            "text/plain",
            "",
        ]
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)


def _chunked(body: bytes, size: int) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size))
    return out + b"0\r\n\r\n"


def _exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    method_path=requests,
    authorization=authorizations,
    content_type=content_types,
    body=bodies,
    chunk=st.one_of(st.none(), st.integers(1, 300)),
)
def test_fuzz_request_path(
    server: LiveServer,
    method_path: tuple[str, str],
    authorization: str | None,
    content_type: str,
    body: bytes,
    chunk: int | None,
) -> None:
    """Any request: no 5xx; JSON failures; success only with a token; nothing stored on failure; no token echoed."""
    method, path = method_path
    sink = server.sink
    assert isinstance(sink, MemorySink)
    sink.objects.clear()
    headers = [f"{method} {path} HTTP/1.1", "Host: fuzz", "Connection: close"]
    if authorization:
        headers.append(f"Authorization: {authorization}")
    if content_type:
        headers.append(f"Content-Type: {content_type}")
    headers.append("Transfer-Encoding: chunked" if chunk else f"Content-Length: {len(body)}")
    request = ("\r\n".join(headers) + "\r\n\r\n").encode() + (_chunked(body, chunk) if chunk else body)

    status, response_headers, response_body = _exchange(server.port, request)
    event(f"status {status}")

    assert status < 500, (status, response_body[:300])
    assert TOKEN.encode() not in response_body
    if response_headers.get("content-type", "").startswith("application/json"):
        answer = json.loads(response_body)
        assert answer["status"] in ("success", "failure", "ok")
    else:
        assert status == 400, (status, response_headers)  # only aiohttp's own HTTP parser answers in plain text
    authorized = authorization in (f"Bearer {TOKEN}", f"Basic {base64.b64encode(f'fuse:{TOKEN}'.encode()).decode()}")
    authorized = authorized or (authorization is None and f"token={TOKEN}" in path)
    if status == 200 and path != "/healthz":
        assert authorized, (method, path, authorization)
        assert list(sink.objects) == [json.loads(response_body)["key"]]
    else:
        assert sink.objects == {}
