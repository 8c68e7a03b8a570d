"""The stores streamproxy adapts to, as the tests imitate them: what the probe finds, and how each behaves.

Measured on Ceph RGW 16.2.15, Swift 2.30.1 + s3api and s3rver 3.7.1 (docs/storage-compatibility.md):

* Ceph 16 honours ``If-None-Match`` on PutObject but ignores it on CompleteMultipartUpload, and
  verifies only Content-MD5 (it accepts any ``x-amz-checksum-*`` value, even a wrong one);
* Swift refuses ``If-None-Match`` on PutObject and CopyObject with 501, honours it on
  CompleteMultipartUpload, has no tagging (501), verifies only Content-MD5 and answers
  ``MalformedXML`` to checksums in a completion;
* s3rver ignores every condition, verifies no checksum, and lacks UploadPartCopy,
  ListMultipartUploads and AbortMultipartUpload.

``CAPABILITIES`` is what the probe reports; ``FAKE`` configures ``tests.fake_s3.FakeS3``;
``IMITATIONS`` make moto behave the same way behind ``tests.s3_proxy.S3Proxy``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from streamproxy.sinks.s3.capabilities import CHECKSUM_MODES, Capabilities
from tests.s3_proxy import Imitation

__all__ = ["CAPABILITIES", "FAKE", "IMITATIONS", "S3"]

S3 = Capabilities(
    conditional_put=True,
    conditional_complete=True,
    checksums=frozenset(CHECKSUM_MODES),
    tagging=True,
    upload_part_copy=True,
    list_multipart_uploads=True,
    abort_multipart=True,
    head_bucket=True,
)

CAPABILITIES: dict[str, Capabilities] = {
    "s3": S3,
    "ceph16": replace(S3, conditional_complete=False, checksums=frozenset({"md5"})),
    "swift": replace(S3, conditional_put=False, checksums=frozenset({"md5"}), tagging=False),
    "s3rver": replace(
        S3,
        conditional_put=False,
        conditional_complete=False,
        checksums=frozenset(),
        upload_part_copy=False,
        list_multipart_uploads=False,
        abort_multipart=False,
    ),
}

FAKE: dict[str, dict[str, Any]] = {
    "s3": {},
    "ceph16": {"conditional_complete": "ignore"},
    "swift": {"conditional_put": "refuse", "tagging": False},
    "s3rver": {"conditional_put": "ignore", "conditional_complete": "ignore", "part_copy": False, "abort": False},
}

_NOT_IMPLEMENTED = (501, "NotImplemented")
IMITATIONS: dict[str, list[Imitation]] = {
    "s3": [],
    "ceph16": [Imitation("CompleteMultipartUpload", ignore_header="if-none-match")],
    "swift": [
        Imitation("PutObject", refuse=_NOT_IMPLEMENTED, when_header="if-none-match"),
        Imitation("CopyObject", refuse=_NOT_IMPLEMENTED, when_header="if-none-match"),
        Imitation("PutObjectTagging", refuse=_NOT_IMPLEMENTED),
    ],
    "s3rver": [
        Imitation("PutObject", ignore_header="if-none-match"),
        Imitation("CompleteMultipartUpload", ignore_header="if-none-match"),
        Imitation("UploadPartCopy", refuse=_NOT_IMPLEMENTED),
        Imitation("AbortMultipartUpload", refuse=(405, "MethodNotAllowed")),
    ],
}
