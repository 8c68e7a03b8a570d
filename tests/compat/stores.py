"""The S3 implementations the compatibility suite runs against, and what each was measured to support.

moto always runs (in process). The others are real servers started by ``tests/stores/all.sh`` (CI
does it in ``.ci/run``); the suite finds them through ``COMPAT_<NAME>_URL``, for example
``COMPAT_CEPH_URL=http://127.0.0.1:7480`` (``tests/stores/all.sh env`` prints all of them).
Each store is given its own unique prefix per test in the bucket ``rec``.

``MEASURED`` is the capability matrix of docs/storage-compatibility.md: the probe must find
exactly this on each store (``test_probe_finds_the_documented_capabilities``), so a store
upgrade that changes a capability fails the suite instead of going unnoticed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from streamproxy.config import Settings, StorageURI
from streamproxy.sinks.s3.capabilities import CHECKSUM_MODES, Capabilities
from tests.helpers import PART

__all__ = ["MEASURED", "STORES", "Area", "Store"]

BUCKET = "rec"


@dataclass(frozen=True)
class Store:
    """One S3 implementation: where it listens and the credentials the start script gave it."""

    name: str
    access_key: str
    secret_key: str
    endpoint: str = ""

    @property
    def variable(self) -> str:
        """The environment variable that carries this store's endpoint."""
        return f"COMPAT_{self.name.upper()}_URL"

    def configured(self) -> Store | None:
        """This store with its endpoint from the environment, or None when it is not configured."""
        url = os.environ.get(self.variable, "").strip()
        return Store(self.name, self.access_key, self.secret_key, url.rstrip("/")) if url else None

    def env(self) -> dict[str, str]:
        """Credential variables for streamproxy (serve, check, sweep) talking to this store."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self) -> Any:
        """A plain boto3 client for arranging and asserting (no default CRC trailers: not every store takes them)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                s3={"addressing_style": "path"},
                retries={"total_max_attempts": 3, "mode": "standard"},
            ),
        )


STORES = {
    "moto": Store("moto", "testing", "testing"),
    "ceph": Store("ceph", "INTEROPKEY", "INTEROPSECRET"),
    "swift": Store("swift", "test:tester", "testing"),
    "s3rver": Store("s3rver", "S3RVER", "S3RVER"),
}

_ALL = frozenset(CHECKSUM_MODES)

# Measured with streamproxy.sinks.s3.probe on Debian 12 (November 2026): see docs/storage-compatibility.md.
MEASURED = {
    # moto 5.2: every feature, but it checks no checksum value at all (not even Content-MD5).
    "moto": Capabilities(
        conditional_put=True,
        conditional_complete=True,
        accepted_checksums=_ALL,
        tagging=True,
        upload_part_copy=True,
        list_multipart_uploads=True,
        abort_multipart=True,
        head_bucket=True,
        checksums=frozenset(),
    ),
    # Ceph RGW 16.2.15: If-None-Match is ignored on CompleteMultipartUpload; CRC/SHA256 headers are
    # accepted and not checked; Content-MD5 is.
    "ceph": Capabilities(
        conditional_put=True,
        conditional_complete=False,
        accepted_checksums=_ALL,
        tagging=True,
        upload_part_copy=True,
        list_multipart_uploads=True,
        abort_multipart=True,
        head_bucket=True,
        checksums=frozenset({"md5"}),
    ),
    # Swift 2.30.1 + s3api: conditional PutObject is refused (501), the conditional complete works;
    # x-amz-checksum-* in CompleteMultipartUpload is MalformedXML; no tagging.
    "swift": Capabilities(
        conditional_put=False,
        conditional_complete=True,
        accepted_checksums=frozenset({"md5"}),
        tagging=False,
        upload_part_copy=True,
        list_multipart_uploads=True,
        abort_multipart=True,
        head_bucket=True,
        checksums=frozenset({"md5"}),
    ),
    # s3rver 3.7.1: ignores every condition, checks no checksum, has no UploadPartCopy,
    # ListMultipartUploads or AbortMultipartUpload.
    "s3rver": Capabilities(
        conditional_put=False,
        conditional_complete=False,
        accepted_checksums=_ALL,
        tagging=True,
        upload_part_copy=False,
        list_multipart_uploads=False,
        abort_multipart=False,
        head_bucket=True,
        checksums=frozenset(),
    ),
}


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
