"""Properties over the HTTP layer: keys stay under the prefix, broken bodies never store anything.

The apps run on loopback in a background thread (tests.live) so hypothesis can drive them from
plain synchronous tests; example counts are bounded to keep the suite fast.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamproxy.config import Settings, StorageURI
from streamproxy.keys import MAX_KEY_BYTES
from streamproxy.sinks.memory import MemorySink
from tests.helpers import KEY_TEMPLATES, PART, incomplete_uploads, multipart_body, objects, payload, s3_settings
from tests.live import LiveServer, live_servers

pytestmark = pytest.mark.filterwarnings(
    "ignore::aiohttp.multipart.BadContentDispositionHeader", "ignore::aiohttp.multipart.BadContentDispositionParam"
)

FORM = {"Content-Type": "multipart/form-data; boundary=b0undary"}
TEMPLATES = [*KEY_TEMPLATES, "{field:id}/../{filename}"]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def memory_settings(template: str = "{filename}.wav") -> Settings:
    return Settings(
        storage=StorageURI.parse("s3://calls/rec/"),
        key_template=template,
        part_size=PART,
        max_buffer_bytes=4 * PART,
        raw_audio="none",  # opaque bytes, compared byte for byte
    )


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, LiveServer]]:
    """One memory-backed server per key template (the ones that pass start-up validation)."""
    usable = []
    for template in TEMPLATES:
        try:
            usable.append((template, memory_settings(template)))
        except ValueError:
            continue
    with live_servers([(s, MemorySink()) for _, s in usable]) as started:
        yield {template: server for (template, _), server in zip(usable, started, strict=True)}


def stored(server: LiveServer) -> dict[str, Any]:
    sink = server.sink
    assert isinstance(sink, MemorySink)
    return sink.objects


def reset(server: LiveServer) -> None:
    stored(server).clear()


def _key_is_safe(key: str) -> bool:
    return (
        key.startswith("rec/")
        and all(seg not in ("", ".", "..") for seg in key.split("/"))
        and not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in key)
        and len(key.encode()) <= MAX_KEY_BYTES
    )


names = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=220).map(lambda t: t.encode()),
    st.binary(max_size=64),
    st.sampled_from(
        [b"../../etc/evil", b"..", b".", b"a/../b", b"%2e%2e", b"\xc0\xae\xc0\xae", b"a\\..\\b", b"call-7"]
    ),
)


@FAST
@given(template=st.sampled_from(TEMPLATES), name=names, field=names, raw=st.booleans())
def test_keys_stay_under_the_prefix_over_http(servers, template: str, name: bytes, field: bytes, raw: bool) -> None:
    """Any filename and field value: the stored key is safe and under rec/, or a 4xx stores nothing."""
    server = servers.get(template)
    if server is None:  # templates refused at start never serve
        return
    reset(server)
    if raw:
        text = name.decode("utf-8", "surrogateescape")
        path = "/recordings/" + quote(text.encode("utf-8", "surrogateescape"), safe="")
        reply = server.request("PUT", path, b"RIFF", {"Content-Type": "audio/wav"})
    else:
        body = multipart_body([("id", field), ("filename", name), ("recording", b"RIFF")])
        reply = server.request("POST", "/recordings", body, FORM)
    keys = list(stored(server))
    if reply.status == 200:
        answer = json.loads(reply.body)
        assert keys == [answer["key"]] and _key_is_safe(answer["key"]), answer
    else:
        assert 400 <= reply.status < 500, reply
        assert reply.status != 404 or raw, reply  # only an empty PUT name misses the route
        assert keys == [], keys


def _form(data: bytes, name: bytes, file_first: bool, extra: bool) -> bytes:
    fields = [("filename", name), ("recording", data)]
    if file_first:
        fields.reverse()
    if extra:
        fields.append(("caller", b"+4930123"))
    return multipart_body(fields)


forms = st.builds(
    _form,
    data=st.binary(min_size=1, max_size=3000),
    name=st.text("abcxyz-_0123456789", min_size=1, max_size=20).map(str.encode),
    file_first=st.booleans(),
    extra=st.booleans(),
)


@FAST
@given(body=forms, data=st.data())
def test_truncated_bodies_are_4xx_and_store_nothing(servers, body: bytes, data: st.DataObject) -> None:
    """A valid form cut anywhere before its closing boundary is a 4xx, never 5xx or success, and nothing is stored."""
    server = servers["{filename}.wav"]
    reset(server)
    end = body.rindex(b"--b0undary--") + len(b"--b0undary--")
    cut = data.draw(st.integers(0, end - 1), label="cut")
    reply = server.request("POST", "/recordings", body[:cut], FORM)
    assert 400 <= reply.status < 500, (reply.status, reply.body)
    assert json.loads(reply.body)["status"] == "failure"
    assert stored(server) == {}


def _reference_recording(body: bytes) -> bytes | None:
    """The recording as the form delimits it in ``body``: after its headers, up to the next CRLF--boundary.

    Header lines end at LF with any CR stripped, as aiohttp reads them (lenient, like most servers).
    """
    line_end = body.find(b"\n", body.find(b'name="recording"'))
    while line_end >= 0:
        next_end = body.find(b"\n", line_end + 1)
        if next_end < 0:
            return None
        if not body[line_end + 1 : next_end].rstrip(b"\r\n"):
            start = next_end + 1
            end = body.find(b"\r\n--b0undary", start)
            return None if end < 0 else body[start:end]
        line_end = next_end
    return None


@FAST
@given(body=forms, data=st.data())
def test_corrupted_bodies_never_store_a_partial_object(servers, body: bytes, data: st.DataObject) -> None:
    """One byte changed anywhere: a 4xx with nothing stored, or success storing exactly the bytes the form delimits."""
    server = servers["{filename}.wav"]
    reset(server)
    position = data.draw(st.integers(0, len(body) - 1), label="position")
    value = data.draw(st.integers(0, 255).filter(lambda v: v != body[position]), label="value")
    corrupted = body[:position] + bytes([value]) + body[position + 1 :]
    reply = server.request("POST", "/recordings", corrupted, FORM)
    objects_now = stored(server)
    if reply.status == 200:
        answer = json.loads(reply.body)
        assert list(objects_now) == [answer["key"]]
        kept = objects_now[answer["key"]].data
        assert hashlib.sha256(kept).hexdigest() == answer["sha256"]
        assert kept == _reference_recording(corrupted), (position, value)
    else:
        assert 400 <= reply.status < 500, (reply.status, reply.body)
        assert objects_now == {}


@pytest.fixture
def s3_server(moto_endpoint: str, bucket: str) -> Iterator[LiveServer]:
    """streamproxy on moto (parts of 5 MiB) in the background thread."""
    with live_servers([(s3_settings(moto_endpoint, bucket), None)]) as (server,):
        yield server


BIG_DATA = payload(2 * PART + 333)
BIG_FORM = multipart_body([("filename", b"big"), ("recording", BIG_DATA)])
BIG_START = BIG_FORM.index(BIG_DATA[:64])
BIG_END = BIG_FORM.rindex(b"--b0undary--") + len(b"--b0undary--")


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.one_of(st.integers(0, BIG_END - 1), st.integers(BIG_START + PART, BIG_END - 1)))
@example(cut=BIG_START + PART - 1)
@example(cut=BIG_START + PART + 1)
@example(cut=BIG_START + 2 * PART + 10)
@example(cut=BIG_START + len(BIG_DATA))
@example(cut=BIG_END - 1)
def test_truncated_multipart_uploads_leave_nothing_in_s3(s3_server, s3, bucket, cut: int) -> None:
    """A three-part upload cut anywhere: 4xx, no object, no incomplete multipart upload in the bucket."""
    reply = s3_server.request("POST", "/recordings", BIG_FORM[:cut], FORM, timeout=60)
    assert 400 <= reply.status < 500, (reply.status, reply.body)
    assert incomplete_uploads(s3, bucket) == []
    assert objects(s3, bucket) == {}
