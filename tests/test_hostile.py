"""Hostile and broken requests: each gets a clear JSON 4xx, and nothing is stored or left open in S3.

The table below is the list of hostile cases the security issue asks to be tried; README.md's
failure table and docs/security.md name the same codes.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from tests.helpers import (
    PART,
    form,
    fs_settings,
    incomplete_uploads,
    multipart_body,
    nothing_left,
    objects,
    payload,
    s3_settings,
)
from tests.live import LiveServer, live_servers

FORM = "multipart/form-data; boundary=b0undary"
BIG = payload(PART + 100)  # more than one part: a multipart upload is open when the failure hits


def part(name: str, value: bytes, headers: str = "") -> bytes:
    """One hand-built form part (without the closing boundary)."""
    return f'--b0undary\r\nContent-Disposition: form-data; name="{name}"\r\n{headers}\r\n'.encode() + value + b"\r\n"


def file_part(
    value: bytes, name: str = "recording", headers: str = "Content-Type: audio/wav\r\n", filename: str | None = "r.wav"
) -> bytes:
    parameter = f'; filename="{filename}"' if filename is not None else ""
    disposition = f'--b0undary\r\nContent-Disposition: form-data; name="{name}"{parameter}\r\n'
    return (disposition + headers + "\r\n").encode() + value + b"\r\n"


END = b"--b0undary--\r\n"
B64 = "Content-Transfer-Encoding: base64\r\n"


@dataclass(frozen=True)
class Case:
    """One hostile request and the answer it must get."""

    body: bytes
    status: int
    error: str
    content_type: str = FORM
    method: str = "POST"
    path: str = "/recordings"
    headers: dict[str, str] = field(default_factory=dict)


CASES: dict[str, Case] = {
    # malformed multipart framing
    "boundary_mismatch": Case(multipart_body([("filename", b"x"), ("recording", b"a")]), 400, "malformed_body",
                              content_type="multipart/form-data; boundary=other"),
    "boundary_missing": Case(multipart_body([("filename", b"x"), ("recording", b"a")]), 400, "malformed_body",
                             content_type="multipart/form-data"),
    "boundary_empty": Case(multipart_body([("filename", b"x"), ("recording", b"a")]), 400, "malformed_body",
                           content_type="multipart/form-data; boundary="),
    "boundary_too_long": Case(b"--" + b"b" * 71 + b"\r\n", 400, "malformed_body",
                              content_type="multipart/form-data; boundary=" + "b" * 71),
    "no_boundary_in_body": Case(b"just some bytes\r\nand more\r\n", 400, "malformed_body"),
    "garbage_preamble_long_line": Case(b"x" * 1_000_000 + b"\r\n" + part("filename", b"x") + file_part(b"a") + END,
                                       400, "malformed_body"),
    "missing_final_boundary": Case(part("filename", b"x") + file_part(b"abc"), 400, "malformed_body"),
    "missing_final_boundary_big": Case(part("filename", b"x") + file_part(BIG), 400, "malformed_body"),
    "final_boundary_without_dashes": Case(part("filename", b"x") + file_part(b"abc") + b"--b0undary\r\n", 400,
                                          "malformed_body"),
    "truncated_in_part_headers": Case(part("filename", b"x") + b'--b0undary\r\nContent-Disposition: form-da',
                                      400, "malformed_body"),
    "truncated_in_file": Case(part("filename", b"x") + file_part(BIG)[: PART + 50], 400, "malformed_body"),
    "wrong_boundary_after_file": Case(part("filename", b"x") + file_part(BIG) + b"--other--\r\n", 400,
                                      "malformed_body"),
    # oversized or too many things
    "part_header_line_too_long": Case(part("filename", b"x", headers="X-Junk: " + "j" * 9000 + "\r\n")
                                      + file_part(b"a") + END, 400, "malformed_body"),
    "too_many_part_headers": Case(part("filename", b"x", headers="X-Junk: j\r\n" * 200) + file_part(b"a") + END,
                                  400, "malformed_body"),
    "too_many_parts": Case(b"".join(part(f"f{i}", b"v") for i in range(70)) + part("filename", b"x")
                           + file_part(b"a") + END, 400, "too_many_parts"),
    "text_field_too_large": Case(part("note", b"n" * (64 * 1024 + 1)) + part("filename", b"x") + file_part(b"a")
                                 + END, 400, "field_too_large"),
    "text_fields_too_large_together": Case(b"".join(part(f"n{i}", b"n" * 60_000) for i in range(9))
                                           + part("filename", b"x") + file_part(b"a") + END, 400, "field_too_large"),
    "charset_part_too_long": Case(part("_charset_", b"c" * 40) + part("filename", b"x") + file_part(b"a") + END,
                                  400, "malformed_body"),
    # wrong parts
    "second_file_part_other_name": Case(part("filename", b"x") + file_part(b"a") + file_part(b"b", name="other")
                                        + END, 400, "unexpected_field"),
    "second_file_part_after_big": Case(part("filename", b"x") + file_part(BIG) + file_part(b"b", name="other")
                                       + END, 400, "unexpected_field"),
    "second_recording": Case(part("filename", b"x") + file_part(BIG) + file_part(b"b") + END, 400,
                             "duplicate_field"),
    "nested_multipart": Case(part("filename", b"x")
                             + file_part(b"--inner--\r\n", headers="Content-Type: multipart/mixed; boundary=inner\r\n")
                             + END, 400, "malformed_body"),
    "base64_file_part": Case(part("filename", b"x")
                             + file_part(b"YWJj", headers="Content-Type: audio/wav\r\n" + B64)
                             + END, 400, "malformed_body"),
    "gzip_file_part": Case(part("filename", b"x")
                           + file_part(b"abc", headers="Content-Type: audio/wav\r\nContent-Encoding: gzip\r\n")
                           + END, 400, "malformed_body"),
    "part_without_name": Case(b"--b0undary\r\nContent-Disposition: form-data\r\n\r\nv\r\n" + file_part(b"a") + END,
                              400, "malformed_body"),
    "part_without_disposition": Case(b"--b0undary\r\nX-Other: 1\r\n\r\nv\r\n" + file_part(b"a") + END, 400,
                                     "malformed_body"),
    "non_utf8_text_field": Case(part("note", b"\xff\xfe") + part("filename", b"x") + file_part(b"a") + END, 400,
                                "invalid_field"),
    # without a filename field the part's filename= names the recording; without both it has no name
    "file_without_any_name_big": Case(file_part(BIG, filename=None) + END, 400, "missing_field"),
    "no_file_part": Case(part("filename", b"x") + END, 400, "missing_field"),
    "empty_form": Case(END, 400, "missing_field"),
    "recording_type_text_html": Case(part("filename", b"x") + file_part(b"<b>", headers="Content-Type: text/html\r\n")
                                     + END, 415, "unsupported_media_type"),
    # filenames
    "filename_traversal": Case(part("filename", b"../../etc/evil") + file_part(b"a") + END, 400, "invalid_filename"),
    "filename_after_big_file_traversal": Case(file_part(BIG) + part("filename", b"../x") + END, 400,
                                              "invalid_filename"),
    "filename_backslash": Case(part("filename", b"a\\b") + file_part(b"a") + END, 400, "invalid_filename"),
    "filename_nul": Case(part("filename", b"a\x00b") + file_part(b"a") + END, 400, "invalid_filename"),
    "filename_control": Case(part("filename", b"a\x1bb") + file_part(b"a") + END, 400, "invalid_filename"),
    "filename_dotfile": Case(part("filename", b".streamproxy-staging") + file_part(b"a") + END, 400,
                             "invalid_filename"),
    "filename_over_long": Case(part("filename", b"a" * 201) + file_part(b"a") + END, 400, "invalid_filename"),
    "filename_non_utf8": Case(part("filename", b"\xc3\x28") + file_part(b"a") + END, 400, "invalid_filename"),
    "filename_empty": Case(part("filename", b"") + file_part(b"a") + END, 400, "invalid_filename"),
    "raw_put_encoded_slash": Case(b"abc", 400, "invalid_filename", content_type="audio/wav", method="PUT",
                                  path="/recordings/..%2F..%2Fetc%2Fevil"),
    "raw_put_encoded_nul": Case(b"abc", 400, "invalid_filename", content_type="audio/wav", method="PUT",
                                path="/recordings/a%00b"),
    # content types, methods, paths
    "urlencoded_form": Case(b"filename=x&recording=abc", 415, "unsupported_media_type",
                            content_type="application/x-www-form-urlencoded"),
    "json_body": Case(b'{"filename": "x"}', 415, "unsupported_media_type", content_type="application/json"),
    "multipart_mixed": Case(multipart_body([("filename", b"x"), ("recording", b"a")]), 415,
                            "unsupported_media_type", content_type="multipart/mixed; boundary=b0undary"),
    "put_multipart": Case(multipart_body([("filename", b"x"), ("recording", b"a")]), 415, "unsupported_media_type",
                          method="PUT", path="/recordings/x"),
    "raw_post_without_filename": Case(b"abc", 400, "missing_field", content_type="audio/wav"),
    "method_delete": Case(b"", 405, "method_not_allowed", content_type="audio/wav", method="DELETE"),
    "method_get": Case(b"", 405, "method_not_allowed", content_type="audio/wav", method="GET"),
    "method_patch": Case(b"abc", 405, "method_not_allowed", content_type="audio/wav", method="PATCH",
                         path="/recordings/x"),
    "unknown_path": Case(b"abc", 404, "not_found", content_type="audio/wav", path="/upload.php"),
    "traversal_path": Case(b"abc", 404, "not_found", content_type="audio/wav", path="/recordings/../../etc/passwd"),
    # sizes
    "declared_too_large": Case(b"abc", 413, "too_large", content_type="audio/wav", method="PUT", path="/recordings/x",
                               headers={"Content-Length": str(2**40)}),
}  # fmt: skip


async def _no_leftovers(s3: Any, bucket: str) -> None:
    for _ in range(100):
        if not incomplete_uploads(s3, bucket):
            break
        await asyncio.sleep(0.05)
    assert incomplete_uploads(s3, bucket) == []
    assert objects(s3, bucket) == {}


async def _send(port: int, case: Case) -> tuple[int, dict[str, str], bytes]:
    """Send the request bytes exactly as the case says (a client library would fix some of them)."""
    headers = {"Host": "x", "Content-Type": case.content_type, "Content-Length": str(len(case.body)), **case.headers}
    head = f"{case.method} {case.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode())
        if int(headers["Content-Length"]) == len(case.body):
            writer.write(case.body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 30)
        response_headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            response_headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(response_headers.get("content-length", "0")))
    finally:
        writer.close()
    return int(status_line.split()[1]), response_headers, body


@pytest.fixture(scope="module")
def hostile_s3(moto_endpoint: str) -> Iterator[tuple[LiveServer, Any, str]]:
    """One server on moto for the whole table (each case must leave the bucket empty anyway)."""
    with pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):
            if name.startswith(("AWS_", "STREAMPROXY_")):
                env.delenv(name)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        env.setenv("AWS_CONFIG_FILE", os.devnull)
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
        bucket = f"hostile-{uuid.uuid4().hex[:16]}"
        client.create_bucket(Bucket=bucket)
        settings = s3_settings(moto_endpoint, bucket, max_upload_bytes=4 * PART, s3_region="us-east-1")
        with live_servers([(settings, None)]) as (server,):
            yield server, client, bucket


@pytest.mark.parametrize("name", sorted(CASES))
async def test_hostile_request(hostile_s3, name) -> None:
    """The case gets its documented status and error code as JSON; the bucket stays empty, nothing open."""
    case = CASES[name]
    server, s3, bucket = hostile_s3
    status, headers, body = await _send(server.port, case)
    assert headers["content-type"].startswith("application/json"), (status, body[:300])
    answer = json.loads(body)
    assert (status, answer["error"]) == (case.status, case.error), answer
    assert answer["status"] == "failure" and answer["message"]
    await _no_leftovers(s3, bucket)


async def test_rfc_preamble_is_tolerated(client_for, moto_endpoint, bucket, s3) -> None:
    """A preamble before the first boundary is legal (RFC 2046) and ignored; the upload succeeds."""
    client = await client_for(s3_settings(moto_endpoint, bucket))
    body = b"This is a preamble.\r\nIgnore it.\r\n" + part("filename", b"pre") + file_part(b"abc") + END
    status, _, answer = await _send(client.port, Case(body, 200, ""))
    assert status == 200, answer
    assert objects(s3, bucket) == {"rec/pre.wav": b"abc"}


WAV = {"Content-Type": "audio/wav"}


async def trickle(first: bytes, then: bytes) -> AsyncIterator[bytes]:
    """Send ``first``, then ``then`` every 0.2 s for 8 s: a client that never stops, slowly."""
    yield first
    for _ in range(40):
        await asyncio.sleep(0.2)
        yield then


async def test_upload_time_cap_is_408_and_aborts(client_for, moto_endpoint, bucket, s3) -> None:
    """A client that keeps trickling bytes past --max-upload-seconds gets 408 upload_timeout, upload aborted."""
    client = await client_for(s3_settings(moto_endpoint, bucket, read_timeout=5, max_upload_seconds=1.5))

    # a multipart upload is open after the first piece
    resp = await client.put("/recordings/trickle", data=trickle(payload(PART + 10), b"x" * 100), headers=WAV)
    body = await resp.json()
    assert resp.status == 408, body
    assert body["error"] == "upload_timeout" and "1.5 seconds" in body["message"]
    await _no_leftovers(s3, bucket)


async def test_upload_time_cap_in_multipart_fields(client_for, moto_endpoint, bucket, s3) -> None:
    """The cap also covers a form whose text fields trickle in before the file."""
    client = await client_for(s3_settings(moto_endpoint, bucket, read_timeout=5, max_upload_seconds=1))

    head = b'--b0undary\r\nContent-Disposition: form-data; name="note"\r\n\r\n'
    resp = await client.post("/recordings", data=trickle(head, b"n"), headers={"Content-Type": FORM})
    assert resp.status == 408
    assert (await resp.json())["error"] == "upload_timeout"
    await _no_leftovers(s3, bucket)


async def _expect_continue(port: int, path: str, length: int) -> bytes:
    """Send only the head of a PUT with ``Expect: 100-continue``; return what the server answers within 5 s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: {length}\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    return answer


async def test_expect_continue_refusals_before_the_body(client_for, moto_endpoint, bucket, s3) -> None:
    """413 and 503 are answered to Expect: 100-continue without inviting the body."""
    client = await client_for(s3_settings(moto_endpoint, bucket, max_upload_bytes=PART, max_concurrent_uploads=1))
    answer = await _expect_continue(client.port, "/recordings/huge", 99999999999)
    assert answer.startswith(b"HTTP/1.1 413 ") and b'"too_large"' in answer and b"100 Continue" not in answer

    release = asyncio.Event()

    async def held() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        await release.wait()
        yield b"y"

    first = asyncio.ensure_future(client.put("/recordings/held", data=held(), headers={"Content-Type": "audio/wav"}))
    await asyncio.sleep(0.3)
    answer = await _expect_continue(client.port, "/recordings/second", 10)
    assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in answer and b'"busy"' in answer
    release.set()
    assert (await first).status == 200
    assert set(objects(s3, bucket)) == {"rec/held.wav"}


async def test_request_header_too_long_is_refused(client_for, memory_sink, tmp_path) -> None:
    """An HTTP header over aiohttp's 8190-byte limit is refused by the HTTP parser (plain 400), never stored."""
    client = await client_for(fs_settings(tmp_path), memory_sink)
    resp = await client.put("/recordings/x", data=b"abc", headers={"Content-Type": "audio/wav", "X-Junk": "j" * 10_000})
    assert resp.status == 400
    nothing_left(memory_sink)


async def test_form_with_many_small_uploads_still_works(client_for, moto_endpoint, bucket, s3) -> None:
    """After the hostile table, a well-formed upload on the same server still succeeds (sanity)."""
    client = await client_for(s3_settings(moto_endpoint, bucket))
    resp = await client.post("/recordings", data=form([("filename", "fine"), ("recording", b"ok")]))
    assert resp.status == 200
