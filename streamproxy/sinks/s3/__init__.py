"""The S3 sink (aiobotocore), by concern.

| module | what it owns |
| --- | --- |
| ``options`` | ``S3Options.from_settings`` (no defaults of its own) and the object arguments |
| ``client`` | ``S3Client``: start/close, ``call`` with error mapping, key locks, ``is_ours``, the client factory |
| ``transport`` | every process-wide patch (payload type, signer, warning filter, writelines), one ``install()`` |
| ``checksums`` | the per-part checksum arguments and the signer's payload digest |
| ``upload`` | ``MultipartUpload`` (direct and staged paths) and the conditional ``final_write`` |
| ``writer`` | ``S3Writer``: single PUT, direct multipart, staged copy, tagging |
| ``admin`` | ``S3Admin``: probe, Object Lock, sweep |
| ``sink`` | ``S3Sink``, which ties them together |
"""

from __future__ import annotations

from .client import UPLOAD_ID_META, ClientFactory, S3Client
from .options import S3Options
from .sink import S3Sink
from .writer import STAGING_DIR, S3Writer

__all__ = ["STAGING_DIR", "UPLOAD_ID_META", "ClientFactory", "S3Client", "S3Options", "S3Sink", "S3Writer"]
