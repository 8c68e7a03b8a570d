"""The HTTP contract's refusals: every bad request gets its JSON 4xx, and nothing is stored.

Storage-neutral: these answers are decided before or without the store, so they run on an in-memory
sink (``memory_sink``), which also shows that every upload opened was aborted. What S3 is left with
after a refusal (multipart uploads aborted, staged copies removed) is tested against moto in
test_upload_s3.py, test_hostile.py and test_faults_s3.py.
"""

from __future__ import annotations

import pytest

from tests.helpers import PART, form, fs_settings, multipart_body, nothing_left, payload


@pytest.mark.parametrize("name", ["../../etc/evil", "a/b", "..", ".hidden", "x" * 201, "bad\x01name", ""])
async def test_unsafe_filenames_are_400_and_store_nothing(client_for, memory_sink, tmp_path, name) -> None:
    """Unsafe names are refused before anything is written, in both field orders and raw."""
    client = await client_for(fs_settings(tmp_path), memory_sink)
    data = payload(100)
    for fields in ([("filename", name), ("recording", data)], [("recording", data), ("filename", name)]):
        resp = await client.post("/recordings", data=form(fields))
        body = await resp.json()
        assert resp.status == 400, body
        assert body["error"] == "invalid_filename"
    raw = await client.post("/recordings", params={"filename": name}, data=b"x", headers={"Content-Type": "audio/wav"})
    assert raw.status == 400
    assert (await raw.json())["error"] in ("invalid_filename", "missing_field")
    nothing_left(memory_sink)


async def test_non_utf8_filename_is_400(client_for, memory_sink, tmp_path) -> None:
    """A filename field with bytes that are not UTF-8 is invalid_filename."""
    client = await client_for(fs_settings(tmp_path), memory_sink)
    body = multipart_body([("filename", b"call-\xff"), ("recording", b"abc")])
    resp = await client.post(
        "/recordings", data=body, headers={"Content-Type": "multipart/form-data; boundary=b0undary"}
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_filename"
    nothing_left(memory_sink)


async def test_declared_oversize_is_413_before_reading(client_for, memory_sink, tmp_path) -> None:
    """A Content-Length beyond the limit is refused from the headers alone."""
    client = await client_for(fs_settings(tmp_path, max_upload_bytes=PART), memory_sink)
    resp = await client.put("/recordings/big", data=payload(PART + 1), headers={"Content-Type": "audio/wav"})
    assert resp.status == 413
    assert (await resp.json())["error"] == "too_large"
    nothing_left(memory_sink)


async def test_empty_recording_is_400(client_for, memory_sink, tmp_path) -> None:
    """Zero bytes are empty_recording, and nothing is stored."""
    client = await client_for(fs_settings(tmp_path), memory_sink)
    resp = await client.post("/recordings", data=form([("filename", "e"), ("recording", b"")]))
    assert resp.status == 400
    assert (await resp.json())["error"] == "empty_recording"
    put = await client.put("/recordings/e", data=b"", headers={"Content-Type": "audio/wav"})
    assert put.status == 400
    nothing_left(memory_sink)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        # (a file part alone is named by its own filename=: tests/test_audio_http.py)
        ([("filename", "x")], "missing_field"),
        ([("filename", "x"), ("recording", b"a"), ("recording", b"b")], "duplicate_field"),
        ([("filename", "x"), ("filename", "y"), ("recording", b"a")], "duplicate_field"),
    ],
)
async def test_form_field_errors(client_for, memory_sink, tmp_path, fields, code) -> None:
    """Missing or repeated fields are 400 with a stable code."""
    client = await client_for(fs_settings(tmp_path), memory_sink)
    resp = await client.post("/recordings", data=form(fields))
    body = await resp.json()
    assert resp.status == 400, body
    assert body["error"] == code and body["message"]
    nothing_left(memory_sink)


async def test_content_type_rules(client_for, memory_sink, tmp_path) -> None:
    """415 for bodies we do not take; a raw POST without ?filename is 400."""
    client = await client_for(fs_settings(tmp_path), memory_sink)
    cases = [
        ("post", {"Content-Type": "text/plain"}, {"filename": "x"}, 415),
        ("post", {"Content-Type": "application/json"}, {}, 415),
        ("post", {"Content-Type": "multipart/mixed; boundary=x"}, {}, 415),
        ("put", {"Content-Type": "image/png"}, {}, 415),
        ("post", {"Content-Type": "audio/wav"}, {}, 400),
    ]
    for method, headers, params, status in cases:
        path = "/recordings/x" if method == "put" else "/recordings"
        resp = await client.request(method.upper(), path, data=b"abc", headers=headers, params=params)
        assert resp.status == status, (headers, await resp.text())
        assert (await resp.json())["status"] == "failure"
    wrong_part = await client.post(
        "/recordings", data=form([("filename", "x"), ("recording", b"a")], content_type="text/html")
    )
    assert wrong_part.status == 415
    nothing_left(memory_sink)


@pytest.mark.parametrize(
    "body",
    [
        b"no boundary here at all",
        b'--b0undary\r\nContent-Disposition: form-data; name="filename"\r\n\r\nx\r\n--b0undary\r\n'
        b'Content-Disposition: form-data; name="recording"; filename="r"\r\nContent-Type: audio/wav\r\n\r\nabc',
        b'--b0undary\r\nContent-Disposition: form-data; name="filename"\r\n\r\nx',
    ],
)
async def test_malformed_multipart_is_400(client_for, memory_sink, tmp_path, body) -> None:
    """Garbage, a missing final boundary or a truncated body is malformed_body, never success."""
    client = await client_for(fs_settings(tmp_path), memory_sink)
    resp = await client.post(
        "/recordings", data=body, headers={"Content-Type": "multipart/form-data; boundary=b0undary"}
    )
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"] == "malformed_body"
    nothing_left(memory_sink)


async def test_missing_boundary_parameter_is_400(client_for, memory_sink, tmp_path) -> None:
    """multipart/form-data without a boundary cannot be parsed: 400."""
    client = await client_for(fs_settings(tmp_path), memory_sink)
    resp = await client.post("/recordings", data=b"abc", headers={"Content-Type": "multipart/form-data"})
    assert resp.status == 400
    assert (await resp.json())["error"] == "malformed_body"


async def test_unknown_paths_and_methods_are_json(client_for, memory_sink, tmp_path) -> None:
    """404 and 405 answer in the same JSON shape."""
    client = await client_for(fs_settings(tmp_path), memory_sink)
    missing = await client.get("/nope")
    assert missing.status == 404 and (await missing.json())["error"] == "not_found"
    wrong = await client.delete("/recordings")
    assert wrong.status == 405 and (await wrong.json())["error"] == "method_not_allowed"
    assert "POST" in wrong.headers["Allow"]
