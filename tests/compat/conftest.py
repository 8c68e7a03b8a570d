"""Fixtures of the compatibility suite: one test area (store, unique prefix, plain client) per test and store."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from streamproxy.sinks.s3.pin import capabilities_to_json
from tests.compat.stores import BUCKET, MEASURED, STORES, Area, Store


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
