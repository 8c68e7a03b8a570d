"""Key templates through HTTP: many recordings of one call land under one call id."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.helpers import PART, form, fs_settings, objects, payload, s3_settings

TEMPLATE = "{field:call_id}/{date:%Y/%m/%d}/{filename}-{uuid}.wav"


def _wav_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.wav"))


def _days() -> set[str]:
    return {datetime.now(UTC).strftime("%Y/%m/%d")}


async def test_recordings_of_one_call_share_a_prefix(client_for, moto_endpoint, bucket, s3) -> None:
    """{field:}, {date:}, {filename} and {uuid}: three segments of one call, one of them sent twice."""
    client = await client_for(s3_settings(moto_endpoint, bucket, key_template=TEMPLATE))
    days = _days()
    keys = []
    for index, name in enumerate(["greeting", "menu", "menu"]):
        data = payload(2 * PART + 1 if index == 1 else 100, seed=index)
        resp = await client.post(
            "/recordings", data=form([("call_id", "call-4711"), ("filename", name), ("recording", data)])
        )
        body = await resp.json()
        assert resp.status == 200, body
        keys.append(body["key"])
        assert objects(s3, bucket)[body["key"]] == data
    days |= _days()
    pattern = re.compile(r"rec/call-4711/(\d{4}/\d{2}/\d{2})/(greeting|menu)-([0-9a-f]{32})\.wav")
    matches = [pattern.fullmatch(k) for k in keys]
    assert all(matches), keys
    assert {m.group(1) for m in matches if m} <= days
    assert len(set(keys)) == 3  # the uuid keeps the two "menu" uploads apart
    listing = s3.list_objects_v2(Bucket=bucket, Prefix="rec/call-4711/")["KeyCount"]
    assert listing == 3


async def test_field_values_are_reduced_to_safe_characters(client_for, moto_endpoint, bucket, s3) -> None:
    """A call id with slashes, dots and spaces cannot climb out of its segment."""
    client = await client_for(s3_settings(moto_endpoint, bucket, key_template="{field:call_id}/{filename}.wav"))
    resp = await client.post(
        "/recordings", data=form([("call_id", "../../etc/x y"), ("filename", "a"), ("recording", b"RIFF")])
    )
    body = await resp.json()
    assert resp.status == 200, body
    assert body["key"] == "rec/_.._etc_x_y/a.wav"


@pytest.mark.parametrize(
    "fields",
    [
        [("filename", "a"), ("recording", b"x")],
        [("filename", "a"), ("recording", b"x"), ("call_id", "late")],
        [("call_id", ""), ("filename", "a"), ("recording", b"x")],
    ],
    ids=["missing", "after-the-file", "empty"],
)
async def test_missing_template_field_is_400(client_for, moto_endpoint, bucket, s3, fields) -> None:
    """A template field that is missing, empty or sent after the file is 400 missing_field; nothing stored."""
    client = await client_for(s3_settings(moto_endpoint, bucket, key_template="{field:call_id}/{filename}.wav"))
    resp = await client.post("/recordings", data=form(fields))
    body = await resp.json()
    assert resp.status == 400 and body["error"] == "missing_field" and "call_id" in body["message"]
    assert objects(s3, bucket) == {}


async def test_templates_on_the_filesystem(client_for, tmp_path: Path) -> None:
    """The same template makes directories on the filesystem sink."""
    client = await client_for(fs_settings(tmp_path, key_template="{field:call_id}/{date:%Y-%m}/{filename}.wav"))
    months = {datetime.now(UTC).strftime("%Y-%m")}
    for name in ("one", "two"):
        resp = await client.post("/recordings", data=form([("call_id", "c9"), ("filename", name), ("recording", b"x")]))
        assert resp.status == 200, await resp.text()
    months.add(datetime.now(UTC).strftime("%Y-%m"))
    stored = _wav_files(tmp_path)
    assert len(stored) == 2 and all(re.fullmatch(r"c9/\d{4}-\d{2}/(one|two)\.wav", k) for k in stored)
    assert {k.split("/")[1] for k in stored} <= months
