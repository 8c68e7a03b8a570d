"""Fixtures of the compatibility suite: one test area (store, unique prefix, plain client) per test and store."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from streamproxy.config import MIB, Settings, StorageURI
from streamproxy.sinks.s3.pin import capabilities_to_json
from tests.compat.stores import BUCKET, MEASURED, STORES, Store

PART = 5 * MIB


@dataclass
class Area:
    """A store, a prefix no other test uses, and a boto3 client to arrange and inspect it."""

    store: Store
    prefix: str
    s3: Any
    pin: str  # a JSON file of the store's measured capabilities (--s3-capabilities)
    bucket: str = BUCKET

    @property
    def storage(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def settings(self, *, probe: bool = False, **overrides: Any) -> Settings:
        """Settings for this area; the store's capabilities pinned, or probed at start with ``probe``.

        Pinning keeps the suite fast (a probe costs 1-4 s per start); the pin is the measured matrix,
        which ``test_probe_finds_the_documented_capabilities`` holds equal to what the probe finds.
        """
        values: dict[str, Any] = dict(
            storage=StorageURI.parse(self.storage),
            s3_endpoint_url=self.store.endpoint,
            part_size=PART,
            max_buffer_bytes=8 * PART,
            s3_capabilities="probe" if probe else self.pin,
            # the suite sends opaque bytes and compares them byte for byte: store them as they came
            raw_audio="none",
            key_template="{filename}.wav",
        )
        values.update(overrides)
        return Settings(**values)

    def objects(self) -> dict[str, bytes]:
        """Every object under the prefix with its bytes."""
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix).get("Contents", [])
        return {o["Key"]: self.s3.get_object(Bucket=self.bucket, Key=o["Key"])["Body"].read() for o in listing}

    def uploads(self) -> list[str] | None:
        """Keys of incomplete multipart uploads under the prefix; None if the store cannot list them."""
        try:
            answer = self.s3.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 501:
                return None
            raise
        return [u["Key"] for u in answer.get("Uploads", [])]

    def clear(self) -> None:
        """Remove what a test stored, so the RAM-backed stores do not fill up (best effort)."""
        for upload in self.s3.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix).get("Uploads", []):
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        for o in self.s3.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix).get("Contents", []):
            self.s3.delete_object(Bucket=self.bucket, Key=o["Key"])


def _store(request: pytest.FixtureRequest, name: str) -> Store:
    if name == "moto":
        endpoint: str = request.getfixturevalue("moto_endpoint")
        store = Store(name, "testing", "testing", endpoint)
        try:
            store.client().create_bucket(Bucket=BUCKET)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        return store
    configured = STORES[name].configured()
    if configured is None:
        reason = f"{name} is not configured: start it with tests/stores/{name}.sh and set {STORES[name].variable}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must run every store of the compatibility suite)")
        pytest.skip(reason)
    return configured


@pytest.fixture(params=list(STORES))
def area(
    request: pytest.FixtureRequest, no_real_aws: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Area]:
    """A fresh prefix on one store; streamproxy in this process gets that store's credentials."""
    store = _store(request, request.param)
    for name, value in store.env().items():
        monkeypatch.setenv(name, value)
    s3 = store.client()
    pin = tmp_path / f"{store.name}-capabilities.json"
    pin.write_text(json.dumps(capabilities_to_json(MEASURED[store.name])))
    area = Area(store, f"compat/{uuid.uuid4().hex[:12]}/", s3, str(pin))
    yield area
    try:
        area.clear()
    except ClientError:
        for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=area.prefix).get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=o["Key"])


AreaFactory = Callable[..., Area]
