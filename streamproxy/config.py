"""Frozen settings with their defaults as named constants, and one-line validation errors."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .audio import DEFAULT_RAW_AUDIO, DEFAULT_STORE_FORMAT, RAW_AUDIO, STORE_FORMATS, TRANSCODED_FORMATS, load_encoders
from .audio.formats import G711_TYPES
from .errors import ConfigError
from .keys import KeyTemplate
from .notify.targets import MIN_SECRET_CHARS, check_target
from .tags import MAX_CONFIGURED_TAGS, RESERVED_TAGS, parse_tag, sanitize_tag_key

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MAX_BUFFER_BYTES",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_PART_SIZE",
    "DEFAULT_PORT",
    "DEFAULT_STORAGE",
    "MIB",
    "ConfigError",
    "Route",
    "Settings",
    "StorageURI",
    "parse_bitrate",
    "parse_duration",
    "parse_size",
    "per_route",
    "per_route_fields",
]

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_STORAGE = "file://./recordings"
DEFAULT_PART_SIZE = 8 * MIB
DEFAULT_PART_CONCURRENCY = 4
DEFAULT_MAX_BUFFER_BYTES = 256 * MIB
DEFAULT_MAX_UPLOAD_BYTES = 8 * GIB
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_MAX_CONCURRENT_UPLOADS = 64
DEFAULT_KEY_TEMPLATE = "{filename}{ext}"
DEFAULT_FILE_FIELD = "recording"
DEFAULT_CHECKSUM = "auto"
# "auto": full-object CRC64NVME on AWS, elsewhere the strongest mode the store verifies (sinks/s3/adapt.py).
CHECKSUMS = ("auto", "md5", "crc32", "crc32c", "crc64nvme", "sha256", "none")
DEFAULT_S3_MAX_ATTEMPTS = 5
DEFAULT_S3_TIMEOUT = 60.0
# audio/* covers the G.711 types already; naming them keeps them accepted if audio/* is narrowed.
DEFAULT_ACCEPT_TYPES: tuple[str, ...] = ("audio/*", "application/octet-stream", *G711_TYPES)
MIN_AUDIO_BITRATE = 6000  # Opus' floor
MAX_AUDIO_BITRATE = 512000
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
# Connections (streamproxy/connections.py): a request head normally arrives in one packet; 10 s allows
# a slow mobile link. Idle keep-alive connections outlive nginx's default upstream keepalive_timeout
# (60 s), so the proxy closes first and never sends a request on a connection being closed here.
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_KEEPALIVE_TIMEOUT = 75.0
# Below the common open-file limit of 1024 with the S3 connections of 64 uploads (4 parts each).
DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_MAX_UPLOAD_SECONDS = 3600.0
MIN_TOKEN_CHARS = 16
DEFAULT_NOTIFY_MAX_AGE = 7 * 86400.0
DEFAULT_NOTIFY_TIMEOUT = 10.0
DEFAULT_NOTIFY_BACKOFF = 1.0
DEFAULT_NOTIFY_BACKOFF_MAX = 3600.0
URL_MODES = ("object", "presigned", "s3uri")
SSE_MODES = ("AES256", "aws:kms", "aws:kms:dsse")
STORAGE_CLASSES = (
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "OUTPOSTS",
    "EXPRESS_ONEZONE",
)
OBJECT_LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
MAX_OBJECT_LOCK_DAYS = 36500
DEFAULT_PRESIGN_EXPIRES = 604800  # 7 days, the longest a SigV4 presigned URL may live

S3_MIN_PART_SIZE = 5 * MIB
S3_MAX_PART_SIZE = 5 * GIB
S3_MAX_PARTS = 10_000

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TOKEN = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # visible ASCII but ',': fits a header, a password, a list


def parse_size(text: str | int) -> int:
    """Parse ``8388608``, ``8M``, ``8MiB`` or ``1g`` (suffixes are powers of 1024) into bytes."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(f"{text!r} is not a size (examples: 8388608, 8MiB, 256M, 4GiB)")
    number, unit = int(match.group(1)), match.group(2).lower()
    return number * {"": 1, "k": KIB, "m": MIB, "g": GIB, "t": 1024 * GIB}[unit]


def parse_bitrate(text: str | int) -> int:
    """Parse ``24000``, ``24k`` or ``24kbps`` (``k`` is 1000, as bitrates count) into bits per second."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+)\s*(k?)(?:bps|bit/s)?\s*", text, re.IGNORECASE)
    if not match:
        raise ConfigError(f"{text!r} is not a bitrate (examples: 24000, 24k)")
    return int(match.group(1)) * (1000 if match.group(2) else 1)


def parse_duration(text: str | float) -> float:
    """Parse ``30``, ``30s``, ``500ms``, ``15m``, ``24h`` or ``7d`` into seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"{text!r} is not a duration (examples: 30, 90s, 15m, 24h, 7d)")
    return float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "s").lower()]


def is_loopback_host(host: str) -> bool:
    """Whether listening on ``host`` is reachable from this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token_file(path: str) -> tuple[str, ...]:
    """Read tokens from ``path``: one per line; blank lines and lines starting with ``#`` are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--auth-token-file {path!r}: cannot read it ({exc.__class__.__name__})") from None
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


@dataclass(frozen=True)
class StorageURI:
    """A parsed ``--storage`` value: ``s3://bucket/prefix/`` or ``file:///path``."""

    scheme: str
    bucket: str = ""
    prefix: str = ""
    path: Path = field(default_factory=Path)

    @classmethod
    def parse(cls, uri: str) -> StorageURI:
        """Parse and check a storage URI; a prefix always ends in ``/``."""
        parts = urlsplit(uri)
        if parts.scheme == "s3":
            bucket = parts.netloc
            if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
                raise ConfigError(f"{uri!r}: {bucket!r} is not a valid S3 bucket name")
            prefix = unquote(parts.path).lstrip("/")
            if prefix and not prefix.endswith("/"):
                prefix += "/"
            if any(seg in (".", "..") for seg in prefix.split("/")[:-1]) or "//" in prefix:
                raise ConfigError(f"{uri!r}: the prefix must not contain empty, '.' or '..' segments")
            return cls("s3", bucket=bucket, prefix=prefix)
        if parts.scheme == "file":
            # file://./recordings (relative, for the quick start) and file:///abs/path both work.
            raw = unquote(parts.netloc + parts.path)
            if not raw:
                raise ConfigError(f"{uri!r}: no directory given")
            return cls("file", path=Path(raw).expanduser().resolve())
        raise ConfigError(f"{uri!r}: use s3://bucket/prefix/ or file:///directory")

    def __str__(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.prefix}"
        return self.path.as_uri()


# TOML values of a [[route]] table (routes.py): each converter raises TypeError naming what it expects.
def toml_string(value: object) -> str:
    """Return a TOML string."""
    if not isinstance(value, str):
        raise TypeError("a string")
    return value


def toml_strings(value: object) -> tuple[str, ...]:
    """Return a TOML array of strings as a tuple."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TypeError("a list of strings")
    return tuple(value)


def toml_boolean(value: object) -> bool:
    """Return a TOML boolean."""
    if not isinstance(value, bool):
        raise TypeError("true or false")
    return value


def toml_integer(value: object) -> int:
    """Return a TOML integer (not a boolean)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("an integer")
    return value


def toml_seconds(value: object) -> int:
    """Whole seconds, or a duration string like ``'24h'``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        return round(parse_duration(value))
    raise TypeError("seconds or a duration like '24h'")


def toml_bitrate(value: object) -> int:
    """Bits per second, as a number or a string like ``'24k'``."""
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        return parse_bitrate(value)
    raise TypeError("bits per second, like 24000 or '24k'")


def toml_tags(value: object) -> tuple[tuple[str, str], ...]:
    """Return a TOML inline table of strings (the object tags) as pairs."""
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise TypeError('a table of strings, like { team = "ivr" }')
    return tuple(value.items())


def toml_storage(value: object) -> StorageURI:
    """Return the parsed storage URI of a TOML string."""
    return StorageURI.parse(toml_string(value))


PER_ROUTE = "per_route"  # the key of a Settings field's metadata that makes it settable per route


@dataclass(frozen=True)
class PerRoute:
    """How a ``[[route]]`` table sets one ``Settings`` field.

    ``key`` is the flag without ``--``, ``aliases`` older names still read, ``convert`` the converter
    of the TOML value (it raises ``TypeError`` naming what it expects).
    """

    key: str
    convert: Callable[[object], Any]
    aliases: tuple[str, ...] = ()


def per_route(key: str, convert: Callable[[object], Any], *, aliases: tuple[str, ...] = ()) -> Mapping[str, PerRoute]:
    """Metadata for a ``Settings`` field that each ``[[route]]`` may set (see routes.py)."""
    return {PER_ROUTE: PerRoute(key, convert, aliases)}


def per_route_fields() -> tuple[tuple[Field[Any], PerRoute], ...]:
    """Every ``Settings`` field a route may set, with how it is set, in declaration order."""
    return tuple((f, f.metadata[PER_ROUTE]) for f in fields(Settings) if PER_ROUTE in f.metadata)


@dataclass(frozen=True)
class Route:
    """One ``[[route]]`` table, checked for keys and types (its settings are resolved by ``routes``)."""

    path: str
    overrides: tuple[tuple[str, Any], ...]
    where: str  # "routes.toml: route /recordings/acme", for error messages

    def __repr__(self) -> str:
        return f"Route({self.path!r})"  # never print the overrides: they hold the tokens


@dataclass(frozen=True)
class Settings:
    """Everything ``streamproxy serve``, ``check`` and ``sweep`` are configured with."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    storage: StorageURI = field(
        default_factory=lambda: StorageURI.parse(DEFAULT_STORAGE), metadata=per_route("storage", toml_storage)
    )
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_max_attempts: int = DEFAULT_S3_MAX_ATTEMPTS
    s3_timeout: float = DEFAULT_S3_TIMEOUT
    part_size: int = DEFAULT_PART_SIZE
    part_concurrency: int = DEFAULT_PART_CONCURRENCY
    max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_concurrent_uploads: int = DEFAULT_MAX_CONCURRENT_UPLOADS
    key_template: str = field(default=DEFAULT_KEY_TEMPLATE, metadata=per_route("key-template", toml_string))
    overwrite: bool = field(default=False, metadata=per_route("overwrite", toml_boolean))
    require_conditional_writes: bool = False  # refuse to start where duplicates are refused only best-effort
    file_field: str = DEFAULT_FILE_FIELD
    checksum: str = DEFAULT_CHECKSUM
    accept_types: tuple[str, ...] = DEFAULT_ACCEPT_TYPES
    require_audio: bool = field(
        default=False, metadata=per_route("require-audio", toml_boolean, aliases=("require-wav",))
    )
    raw_audio: str = field(default=DEFAULT_RAW_AUDIO, metadata=per_route("raw-audio", toml_string))
    store_format: str = field(default=DEFAULT_STORE_FORMAT, metadata=per_route("store-format", toml_string))
    audio_bitrate: int | None = field(default=None, metadata=per_route("audio-bitrate", toml_bitrate))
    url_mode: str = field(default="object", metadata=per_route("url-mode", toml_string))
    presign_expires: int = field(default=DEFAULT_PRESIGN_EXPIRES, metadata=per_route("presign-expires", toml_seconds))
    sse: str | None = field(default=None, metadata=per_route("sse", toml_string))
    sse_kms_key_id: str | None = field(default=None, metadata=per_route("sse-kms-key-id", toml_string))
    storage_class: str | None = field(default=None, metadata=per_route("storage-class", toml_string))
    object_lock_mode: str | None = field(default=None, metadata=per_route("object-lock-mode", toml_string))
    object_lock_days: int | None = field(default=None, metadata=per_route("object-lock-days", toml_integer))
    object_lock_legal_hold: bool = field(default=False, metadata=per_route("object-lock-legal-hold", toml_boolean))
    tags: tuple[tuple[str, str], ...] = field(default=(), metadata=per_route("tags", toml_tags))
    tag_fields: tuple[str, ...] = field(default=(), metadata=per_route("tag-fields", toml_strings))
    manifest: bool = field(default=False, metadata=per_route("manifest", toml_boolean))
    routes: tuple[Route, ...] = ()
    log_format: str = "auto"
    log_level: str = "info"
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    metrics_file: str | None = None
    write_probe: bool = False
    older_than: float | None = None
    dry_run: bool = False
    auth_tokens: tuple[str, ...] = field(default=(), metadata=per_route("auth-tokens", toml_strings), repr=False)
    auth_token_file: str | None = field(default=None, metadata=per_route("auth-token-file", toml_string))
    allow_query_token: bool = field(default=False, metadata=per_route("allow-query-token", toml_boolean))
    allow_anonymous: bool = False
    allow_cidr: tuple[str, ...] = ()
    trusted_proxy: tuple[str, ...] = ()
    tls_cert: str | None = None
    tls_key: str | None = None
    s3_ca_bundle: str | None = None
    max_upload_seconds: float = DEFAULT_MAX_UPLOAD_SECONDS
    notify_url: tuple[str, ...] = field(default=(), metadata=per_route("notify-urls", toml_strings))
    notify_sqs: tuple[str, ...] = field(default=(), metadata=per_route("notify-sqs", toml_strings))
    notify_sns: tuple[str, ...] = field(default=(), metadata=per_route("notify-sns", toml_strings))
    notify_secret: str | None = field(default=None, repr=False)
    notify_secret_file: str | None = None
    notify_max_age: float = DEFAULT_NOTIFY_MAX_AGE
    notify_timeout: float = DEFAULT_NOTIFY_TIMEOUT
    notify_backoff: float = DEFAULT_NOTIFY_BACKOFF
    notify_backoff_max: float = DEFAULT_NOTIFY_BACKOFF_MAX
    notify_list: bool = False
    notify_retry: tuple[str, ...] = ()
    notify_drop: tuple[str, ...] = ()
    s3_capabilities: str = "probe"  # probe at start, "aws" (assume AWS's documented set) or a JSON file (pinned)
    save_capabilities: str | None = None  # check: write the probed capabilities to this JSON file

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ConfigError`` with one line naming the first setting that is wrong."""
        if not 0 < self.port < 65536 and self.port != 0:
            raise ConfigError(f"--port {self.port}: must be between 1 and 65535")
        if self.part_size < S3_MIN_PART_SIZE or self.part_size > S3_MAX_PART_SIZE:
            raise ConfigError(f"--part-size {self.part_size}: S3 needs 5 MiB to 5 GiB per part")
        if self.part_concurrency < 1:
            raise ConfigError("--part-concurrency must be at least 1")
        if self.max_buffer_bytes < self.part_size:
            raise ConfigError(
                f"--max-buffer-bytes {self.max_buffer_bytes} must hold at least one part ({self.part_size} bytes)"
            )
        if self.max_upload_bytes < 1:
            raise ConfigError("--max-upload-bytes must be at least 1")
        if self.storage.scheme == "s3" and self.max_upload_bytes > self.part_size * S3_MAX_PARTS:
            raise ConfigError(
                f"--max-upload-bytes {self.max_upload_bytes} needs more than S3's {S3_MAX_PARTS} parts "
                f"at --part-size {self.part_size}: raise --part-size"
            )
        if self.s3_max_attempts < 1:
            raise ConfigError("--s3-max-attempts must be at least 1")
        if self.s3_timeout <= 0:
            raise ConfigError("--s3-timeout must be positive")
        if self.read_timeout <= 0:
            raise ConfigError("--read-timeout must be positive")
        if self.max_concurrent_uploads < 1:
            raise ConfigError("--max-concurrent-uploads must be at least 1")
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", self.file_field):
            raise ConfigError(f"--file-field {self.file_field!r}: use letters, digits, '_', '.', '-'")
        if self.checksum not in CHECKSUMS:
            raise ConfigError(f"--checksum {self.checksum!r}: choose one of {', '.join(CHECKSUMS)}")
        if self.require_conditional_writes and self.overwrite:
            raise ConfigError("--require-conditional-writes protects existing recordings, --overwrite replaces them")
        for media in self.accept_types:
            if not re.fullmatch(r"[a-z0-9.+\-]+/(\*|[a-z0-9.+\-]+)", media):
                raise ConfigError(f"--accept-types {media!r}: write a media type like audio/* or audio/wav")
        self._validate_audio()
        if self.log_format not in ("auto", "json", "console"):
            raise ConfigError(f"--log-format {self.log_format!r}: choose json or console")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"--log-level {self.log_level!r}: choose debug, info, warning or error")
        if self.shutdown_timeout < 0:
            raise ConfigError("--shutdown-timeout must not be negative")
        if self.header_timeout < 0:
            raise ConfigError("--header-timeout must not be negative (0 turns it off)")
        if self.keepalive_timeout <= 0:
            raise ConfigError("--keepalive-timeout must be positive")
        if self.max_connections < 0:
            raise ConfigError("--max-connections must not be negative (0: no cap)")
        if 0 < self.max_connections < self.max_concurrent_uploads:
            raise ConfigError(
                "--max-connections must be at least --max-concurrent-uploads (each upload is a connection)"
            )
        if self.older_than is not None and self.older_than < 0:
            raise ConfigError("--older-than must not be negative")
        try:
            KeyTemplate(self.key_template)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.url_mode not in URL_MODES:
            raise ConfigError(f"--url-mode {self.url_mode!r}: choose one of {', '.join(URL_MODES)}")
        if self.url_mode != "object" and self.storage.scheme != "s3":
            raise ConfigError(f"--url-mode {self.url_mode} needs s3:// storage (the filesystem answers file:// URLs)")
        if not 1 <= self.presign_expires <= DEFAULT_PRESIGN_EXPIRES:
            raise ConfigError(
                f"--presign-expires {self.presign_expires}: SigV4 links live 1 to {DEFAULT_PRESIGN_EXPIRES} seconds"
            )
        self._validate_storage_options()
        if self.s3_endpoint_url is not None and not re.match(r"^https?://", self.s3_endpoint_url):
            raise ConfigError(f"--s3-endpoint-url {self.s3_endpoint_url!r}: must start with http:// or https://")
        self._validate_security()
        self._validate_notify()

    def _validate_notify(self) -> None:
        for spec in self.notify_targets:
            problem = check_target(spec)
            if problem is not None:
                raise ConfigError(f"{problem}: {spec.partition(':')[2]!r}")
        if self.notify_secret is not None and self.notify_secret_file is not None:
            raise ConfigError("--notify-secret and --notify-secret-file: give one of them")
        secret = self.notify_signing_secret
        if secret is not None and len(secret) < MIN_SECRET_CHARS:
            # The secret itself never appears in an error.
            raise ConfigError(f"the notify secret must be at least {MIN_SECRET_CHARS} characters long")
        if self.notify_url and secret is None:
            raise ConfigError(
                "--notify-url needs --notify-secret (or --notify-secret-file, STREAMPROXY_NOTIFY_SECRET) to sign events"
            )
        for flag, value in (
            ("--notify-max-age", self.notify_max_age),
            ("--notify-timeout", self.notify_timeout),
            ("--notify-backoff", self.notify_backoff),
            ("--notify-backoff-max", self.notify_backoff_max),
        ):
            if value <= 0:
                raise ConfigError(f"{flag} must be positive")
        if self.notify_backoff > self.notify_backoff_max:
            raise ConfigError("--notify-backoff must not exceed --notify-backoff-max")

    @property
    def notify_targets(self) -> tuple[str, ...]:
        """Every notification target as a spec: ``webhook:URL``, ``sqs:QUEUE_URL``, ``sns:TOPIC_ARN``."""
        return (
            tuple(f"webhook:{u}" for u in self.notify_url)
            + tuple(f"sqs:{q}" for q in self.notify_sqs)
            + tuple(f"sns:{t}" for t in self.notify_sns)
        )

    @property
    def notify_signing_secret(self) -> str | None:
        """The webhook signing secret: ``--notify-secret``, else the first line of ``--notify-secret-file``."""
        if self.notify_secret is not None:
            return self.notify_secret
        if self.notify_secret_file is None:
            return None
        try:
            text = Path(self.notify_secret_file).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(
                f"--notify-secret-file {self.notify_secret_file!r}: cannot read it ({exc.__class__.__name__})"
            ) from None
        secret = next((line.strip() for line in text.splitlines() if line.strip()), "")
        if not secret:
            raise ConfigError(f"--notify-secret-file {self.notify_secret_file!r}: holds no secret")
        return secret

    def _validate_security(self) -> None:
        if self.max_upload_seconds <= 0:
            raise ConfigError("--max-upload-seconds must be positive")
        if self.auth_token_file is not None and not read_token_file(self.auth_token_file):
            raise ConfigError(f"--auth-token-file {self.auth_token_file!r}: holds no token")
        for number, token in enumerate(self.tokens, start=1):
            # The token itself never appears in an error: only its position.
            if len(token) < MIN_TOKEN_CHARS:
                raise ConfigError(f"auth token #{number} is shorter than {MIN_TOKEN_CHARS} characters")
            if not _TOKEN.fullmatch(token):
                raise ConfigError(f"auth token #{number} must be visible ASCII without spaces or commas")
        for flag, values in (("--allow-cidr", self.allow_cidr), ("--trusted-proxy", self.trusted_proxy)):
            for value in values:
                try:
                    ipaddress.ip_network(value, strict=False)
                except ValueError:
                    raise ConfigError(f"{flag} {value!r}: write an address or a network like 10.0.0.0/8") from None
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
        for flag, path in (
            ("--tls-cert", self.tls_cert),
            ("--tls-key", self.tls_key),
            ("--s3-ca-bundle", self.s3_ca_bundle),
        ):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{flag} {path!r}: no such file")
        if not self.tokens and not self.allow_anonymous and not is_loopback_host(self.host):
            raise ConfigError(
                f"--host {self.host}: refusing to accept uploads from the network without --auth-token "
                "(or pass --allow-anonymous)"
            )

    def _validate_audio(self) -> None:
        if self.raw_audio not in RAW_AUDIO:
            raise ConfigError(f"--raw-audio {self.raw_audio!r}: choose one of {', '.join(RAW_AUDIO)}")
        if self.store_format not in STORE_FORMATS:
            raise ConfigError(f"--store-format {self.store_format!r}: choose one of {', '.join(STORE_FORMATS)}")
        if self.audio_bitrate is not None and not MIN_AUDIO_BITRATE <= self.audio_bitrate <= MAX_AUDIO_BITRATE:
            raise ConfigError(
                f"--audio-bitrate {self.audio_bitrate}: "
                f"give {MIN_AUDIO_BITRATE} to {MAX_AUDIO_BITRATE} bit/s (e.g. 24k)"
            )
        if self.store_format in TRANSCODED_FORMATS:
            try:
                load_encoders()
            except ImportError as exc:
                raise ConfigError(f"--store-format {self.store_format}: {exc}") from None
        if (
            self.storage.scheme == "s3"
            and self.store_format != "original"
            and self.max_buffer_bytes < 2 * self.part_size
        ):
            # S3 takes a WAV header's part 1 last: the upload holds it while it fills others.
            raise ConfigError(
                f"--max-buffer-bytes {self.max_buffer_bytes} must hold two parts ({2 * self.part_size} bytes) "
                f"for --store-format {self.store_format} on S3"
            )

    @property
    def tokens(self) -> tuple[str, ...]:
        """Every valid token: ``--auth-token`` values, then the lines of ``--auth-token-file``."""
        from_file = read_token_file(self.auth_token_file) if self.auth_token_file else ()
        return self.auth_tokens + from_file

    def _validate_storage_options(self) -> None:
        if self.sse is not None and self.sse not in SSE_MODES:
            raise ConfigError(f"--sse {self.sse!r}: choose one of {', '.join(SSE_MODES)}")
        if self.sse_kms_key_id and not (self.sse or "").startswith("aws:kms"):
            raise ConfigError("--sse-kms-key-id needs --sse aws:kms")
        if self.storage_class is not None and self.storage_class not in STORAGE_CLASSES:
            raise ConfigError(f"--storage-class {self.storage_class!r}: choose one of {', '.join(STORAGE_CLASSES)}")
        if self.object_lock_mode is not None and self.object_lock_mode not in OBJECT_LOCK_MODES:
            raise ConfigError(f"--object-lock-mode {self.object_lock_mode!r}: choose GOVERNANCE or COMPLIANCE")
        if (self.object_lock_mode is None) != (self.object_lock_days is None):
            raise ConfigError("--object-lock-mode and --object-lock-days go together")
        if self.object_lock_days is not None and not 1 <= self.object_lock_days <= MAX_OBJECT_LOCK_DAYS:
            raise ConfigError(f"--object-lock-days {self.object_lock_days}: give 1 to {MAX_OBJECT_LOCK_DAYS} days")
        if (self.object_lock_mode or self.object_lock_legal_hold) and self.checksum == "none":
            raise ConfigError("--checksum none: S3 requires a checksum on writes under Object Lock")
        for key, value in self.tags:
            try:
                parse_tag(f"{key}={value}")
            except ValueError as exc:
                raise ConfigError(f"--tag {exc}") from None
        for name in self.tag_fields:
            if not name or sanitize_tag_key(name) != name or name in RESERVED_TAGS:
                raise ConfigError(f"--tag-field {name!r}: not usable as a tag key (or reserved)")
        tag_keys = {key for key, _ in self.tags} | set(self.tag_fields)
        if len(tag_keys) > MAX_CONFIGURED_TAGS:
            raise ConfigError(
                f"--tag/--tag-field: {len(tag_keys)} tags; S3 allows 10 and streamproxy writes "
                f"{', '.join(RESERVED_TAGS)}, so at most {MAX_CONFIGURED_TAGS}"
            )
        if self.storage.scheme == "s3" and self.s3_capabilities != "probe":
            from .sinks.s3.pin import load_pin  # botocore-free; only loaded for an s3:// storage

            try:
                load_pin(self.s3_capabilities)
            except ValueError as exc:
                raise ConfigError(f"--s3-capabilities {self.s3_capabilities}: {exc}") from None
        if self.storage.scheme != "s3":
            s3_only: dict[str, object] = {
                "--sse": self.sse,
                "--storage-class": self.storage_class,
                "--object-lock-mode": self.object_lock_mode,
                "--object-lock-legal-hold": self.object_lock_legal_hold,
                "--tag": self.tags,
                "--tag-field": self.tag_fields,
            }
            for flag, given in s3_only.items():
                if given:
                    raise ConfigError(f"{flag} applies to s3:// storage only")

    @property
    def endpoint_url(self) -> str | None:
        """The S3 endpoint: the flag, else the AWS convention ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``."""
        return (
            self.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        )
