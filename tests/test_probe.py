"""The capability probe against moto, and against moto made to behave like the stores that differ.

The real stores run in tests/compat/; here each deviation is simulated by a thin wrapper around the
client (a header dropped, an operation refused), so the probe's reading of each answer is tested
on every run, store or no store.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from streamproxy.sinks.s3.capabilities import CHECKSUM_MODES, Capabilities
from streamproxy.sinks.s3.pin import AWS_DOCUMENTED, capabilities_from_json, capabilities_to_json, load_pin
from streamproxy.sinks.s3.probe import PROBE_DIR, ProbeError, capability_rows, probe
from tests.helpers import incomplete_uploads, objects

ALL = frozenset(CHECKSUM_MODES)


def probed(**changes: Any) -> Capabilities:
    """A probed store with every feature and every checksum verified (AWS as documented), but ``changes``."""
    return replace(AWS_DOCUMENTED, probed=True, **changes)


@pytest.fixture
async def client(moto_endpoint: str) -> AsyncIterator[Any]:
    config = AioConfig(request_checksum_calculation="when_required", response_checksum_validation="when_required")
    async with get_session().create_client(
        "s3", endpoint_url=moto_endpoint, region_name="us-east-1", config=config
    ) as raw:
        yield raw


def _refused(operation: str, code: str = "NotImplemented", status: int = 501) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "not here"}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


class Store:
    """The real client, with some headers ignored and some operations refused, like a partial S3."""

    def __init__(
        self,
        client: Any,
        *,
        ignore: dict[str, set[str]] | None = None,
        refuse: set[str] | None = None,
        refuse_with: dict[str, set[str]] | None = None,
    ) -> None:
        self._client = client
        self._ignore = ignore or {}
        self._refuse = refuse or set()
        self._refuse_with = refuse_with or {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        async def call(**kwargs: Any) -> Any:
            if name in self._refuse:
                raise _refused(name)
            if any(arg in kwargs for arg in self._refuse_with.get(name, ())):
                raise _refused(name)
            for arg in self._ignore.get(name, ()):
                kwargs.pop(arg, None)
            return await method(**kwargs)

        return call


async def test_moto_has_every_feature_and_verifies_no_checksum(client, bucket, s3) -> None:
    report = await probe(client, bucket, "rec/")
    # every feature, every checksum accepted, none verified: moto stores a part whose checksum is wrong
    assert report.capabilities == probed(checksums=frozenset())
    assert report.evidence["conditional_complete"] == "412 on an existing key"
    assert report.evidence["checksum_md5"] == "accepted, but a wrong value was not refused"
    assert objects(s3, bucket) == {} and incomplete_uploads(s3, bucket) == []  # the probe cleaned up
    assert report.leftovers == []


async def test_an_ignored_condition_on_complete_is_found(client, bucket, s3) -> None:
    """Ceph 16: If-None-Match on CompleteMultipartUpload is accepted and ignored."""
    store = Store(client, ignore={"complete_multipart_upload": {"IfNoneMatch"}})
    report = await probe(store, bucket, "rec/")
    assert report.capabilities.conditional_put and not report.capabilities.conditional_complete
    assert report.evidence["conditional_complete"] == "ignored: an existing key was replaced"
    assert objects(s3, bucket) == {}


async def test_a_refused_conditional_put_is_found(client, bucket, s3) -> None:
    """Swift: conditional PutObject answers 501; a plain one works."""
    store = Store(client, refuse_with={"put_object": {"IfNoneMatch"}})
    report = await probe(store, bucket, "rec/")
    assert not report.capabilities.conditional_put and report.capabilities.conditional_complete
    assert report.evidence["conditional_put"].startswith("refused on a new key: NotImplemented (HTTP 501)")
    assert objects(s3, bucket) == {}


async def test_missing_operations_are_found_and_leftovers_reported(client, bucket, s3) -> None:
    """s3rver: no UploadPartCopy, ListMultipartUploads or AbortMultipartUpload; what it could not remove is named."""
    store = Store(client, refuse={"upload_part_copy", "list_multipart_uploads", "abort_multipart_upload"})
    report = await probe(store, bucket, "rec/")
    caps = report.capabilities
    assert not (caps.upload_part_copy or caps.list_multipart_uploads or caps.abort_multipart)
    assert caps.head_bucket and caps.tagging
    # the upload whose conditional complete got 412 cannot be aborted either
    left = ["aborted", "copied", "existing"]
    assert sorted(u.rsplit("/", 1)[-1].split(" ")[0] for u in report.leftovers) == left
    assert sorted(k.rsplit("/", 1)[-1] for k in incomplete_uploads(s3, bucket)) == left
    assert objects(s3, bucket) == {}


async def test_a_verifying_store_is_told_apart(client, bucket) -> None:
    """A store that refuses a wrong part checksum verifies that mode; one that refuses the header accepts nothing."""

    class Verifying(Store):
        def __getattr__(self, name: str) -> Any:
            method = super().__getattr__(name)
            if name != "upload_part":
                return method

            async def call(**kwargs: Any) -> Any:
                import base64
                import hashlib

                sent = kwargs.get("ContentMD5")
                if sent and sent != base64.b64encode(hashlib.md5(kwargs["Body"]).digest()).decode():
                    raise _refused(name, "BadDigest", 400)
                return await method(**kwargs)

            return call

    report = await probe(Verifying(client, refuse_with={"create_multipart_upload": {"ChecksumType"}}), bucket, "p/")
    assert report.capabilities.checksums == {"md5"}
    assert report.capabilities.accepted_checksums == ALL - {"crc64nvme"}  # FULL_OBJECT refused at create
    assert report.evidence["checksum_crc64nvme"].startswith("refused: NotImplemented")


async def test_an_unreachable_bucket_is_a_probe_error(client) -> None:
    with pytest.raises(ProbeError, match="PutObject: NoSuchBucket"):
        await probe(client, "no-such-bucket-here", "rec/")


async def test_probe_keys_stay_under_the_prefix(client, bucket) -> None:
    keys: list[str] = []

    class Recording(Store):
        def __getattr__(self, name: str) -> Any:
            method = super().__getattr__(name)

            async def call(**kwargs: Any) -> Any:
                if "Key" in kwargs:
                    keys.append(kwargs["Key"])
                return await method(**kwargs)

            return call

    await probe(Recording(client), bucket, "calls/")
    assert keys and all(k.startswith(f"calls/{PROBE_DIR}") for k in keys)


def test_pinned_capabilities_round_trip_through_json() -> None:
    md5 = frozenset({"md5"})
    caps = probed(conditional_put=False, checksums=md5, tagging=False, accepted_checksums=md5)
    pinned = capabilities_from_json(json.loads(json.dumps(capabilities_to_json(caps))))
    assert pinned == Capabilities(**{**caps.__dict__, "probed": False})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"conditional_put": None}, "missing field"),
        ({"surprise": True}, "unknown field"),
        ({"tagging": "yes"}, "tagging must be true or false"),
        ({"checksums": ["md6"]}, "checksums must be a list"),
        ({"checksums": ["sha256"], "accepted_checksums": ["md5"]}, "subset"),
    ],
)
def test_a_bad_pin_is_refused_with_its_reason(change: dict[str, Any], message: str) -> None:
    data: dict[str, Any] = {
        "conditional_put": True,
        "conditional_complete": True,
        "checksums": ["md5"],
        "tagging": True,
        "upload_part_copy": True,
        "list_multipart_uploads": True,
        "abort_multipart": True,
        "head_bucket": True,
    }
    for key, value in change.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    with pytest.raises(ValueError, match=message):
        capabilities_from_json(data)


def test_rows_name_every_feature_and_checksum_state() -> None:
    caps = probed(conditional_complete=False, checksums=frozenset({"md5"}))
    rows = {name: state for name, state, _ in capability_rows(caps)}
    assert rows["conditional CompleteMultipartUpload"] == "NO"
    assert rows["checksum md5"] == "verified" and rows["checksum crc32"] == "unchecked"
    assert len(rows) == 7 + len(CHECKSUM_MODES)


def test_load_pin_choices(tmp_path) -> None:
    assert load_pin("probe") is None
    assert load_pin("aws") == AWS_DOCUMENTED and not AWS_DOCUMENTED.probed
    path = tmp_path / "caps.json"
    path.write_text(json.dumps(capabilities_to_json(AWS_DOCUMENTED)))
    assert load_pin(str(path)) == AWS_DOCUMENTED
    with pytest.raises(ValueError, match="cannot read"):
        load_pin(str(tmp_path / "missing.json"))
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        load_pin(str(path))


async def test_a_server_error_fails_the_probe_instead_of_reading_as_missing(client, bucket, s3) -> None:
    """A 500 (after retries) says nothing about tagging: the probe fails, and cleans up what it wrote."""

    class Failing(Store):
        def __getattr__(self, name: str) -> Any:
            method = super().__getattr__(name)
            if name != "put_object_tagging":
                return method

            async def call(**kwargs: Any) -> Any:
                raise _refused(name, "InternalError", 500)

            return call

    with pytest.raises(ProbeError, match="PutObjectTagging: InternalError"):
        await probe(Failing(client), bucket, "rec/")
    assert objects(s3, bucket) == {} and incomplete_uploads(s3, bucket) == []
