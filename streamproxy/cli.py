"""Command line: ``streamproxy serve|check|sweep|notify``: flags and ``STREAMPROXY_*`` variables into settings."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__
from .audio import DEFAULT_RAW_AUDIO, DEFAULT_STORE_FORMAT
from .config import (
    DEFAULT_ACCEPT_TYPES,
    DEFAULT_CHECKSUM,
    DEFAULT_FILE_FIELD,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_HOST,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_KEY_TEMPLATE,
    DEFAULT_MAX_BUFFER_BYTES,
    DEFAULT_MAX_CONCURRENT_UPLOADS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_MAX_UPLOAD_SECONDS,
    DEFAULT_NOTIFY_BACKOFF,
    DEFAULT_NOTIFY_BACKOFF_MAX,
    DEFAULT_NOTIFY_MAX_AGE,
    DEFAULT_NOTIFY_TIMEOUT,
    DEFAULT_PART_CONCURRENCY,
    DEFAULT_PART_SIZE,
    DEFAULT_PORT,
    DEFAULT_PRESIGN_EXPIRES,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_S3_MAX_ATTEMPTS,
    DEFAULT_S3_TIMEOUT,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_STORAGE,
    ConfigError,
    Settings,
    StorageURI,
    parse_bitrate,
    parse_duration,
    parse_size,
)
from .errors import StorageError
from .log import configure_logging
from .routes import load_routes, resolve_routes

__all__ = ["main", "settings_from_args"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _env_name(flag: str) -> str:
    return "STREAMPROXY_" + flag.lstrip("-").replace("-", "_").upper()


def _flag_bool(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ConfigError(f"{text!r} is not a boolean (use true or false)")


def _types(text: str) -> tuple[str, ...]:
    return tuple(t.strip().lower() for t in text.split(",") if t.strip())


def _seconds(text: str) -> int:
    return round(parse_duration(text))


def _tag(text: str) -> tuple[str, str]:
    key, value = text.partition("=")[::2]
    if "=" not in text:
        raise ConfigError(f"--tag {text!r} is not KEY=VALUE")
    return key, value


class _Options:
    """Adds flags whose defaults come from ``STREAMPROXY_<FLAG>``, converting both the same way."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser
        self.converters: dict[str, tuple[str, Callable[[str], Any]]] = {}
        self.lists: dict[str, tuple[str, str]] = {}

    def add(
        self, flag: str, convert: Callable[[str], Any], default: Any, help: str, *, dest: str | None = None
    ) -> None:
        dest = dest or flag.lstrip("-").replace("-", "_")
        env = _env_name(flag)
        self.converters[dest] = (flag, convert)
        if convert is _flag_bool:
            self.parser.add_argument(
                flag, dest=dest, action="store_const", const="true", default=None, help=f"{help} (env {env})"
            )
        else:
            self.parser.add_argument(
                flag, dest=dest, default=None, metavar=dest.upper(), help=f"{help} (default {default}; env {env})"
            )
        self.parser.set_defaults(**{f"_default_{dest}": default})

    def add_list(self, flag: str, help: str, *, env: str | None = None, dest: str | None = None) -> None:
        """Add a repeatable flag; each value, and its environment variable (``env``), may be a comma-separated list.

        Values given on the command line replace the variable's list instead of adding to it.
        """
        dest = dest or flag.lstrip("-").replace("-", "_")
        env = env or _env_name(flag)
        self.lists[dest] = (flag, env)
        self.parser.add_argument(
            flag, dest=dest, action="append", default=None, metavar=dest.upper(), help=f"{help} (repeatable; env {env})"
        )

    def resolve(self, args: argparse.Namespace) -> dict[str, Any]:
        """Flag, else environment, else default; each converted, with the source named on error."""
        values: dict[str, Any] = {}
        for dest, (_flag, env) in self.lists.items():
            given: list[str] | None = getattr(args, dest)
            if given is None:
                given = [os.environ.get(env, "")]
            values[dest] = tuple(item.strip() for text in given for item in text.split(",") if item.strip())
        for dest, (flag, convert) in self.converters.items():
            raw = getattr(args, dest)
            source = flag
            if raw is None:
                raw = os.environ.get(_env_name(flag))
                source = _env_name(flag)
            if raw is None:
                values[dest] = getattr(args, f"_default_{dest}")
                continue
            try:
                values[dest] = convert(raw)
            except (ConfigError, ValueError) as exc:
                raise ConfigError(f"{source}: {exc}") from None
        return values


def _storage_options(options: _Options) -> None:
    options.add(
        "--storage",
        StorageURI.parse,
        StorageURI.parse(DEFAULT_STORAGE),
        "where recordings go: s3://bucket/prefix/ or file:///directory",
    )
    options.add("--s3-endpoint-url", str, None, "S3-compatible endpoint (also AWS_ENDPOINT_URL_S3)")
    options.add("--s3-region", str, None, "S3 region (default: the AWS configuration)")
    options.add(
        "--s3-max-attempts",
        int,
        DEFAULT_S3_MAX_ATTEMPTS,
        "tries per S3 call (retries back off on throttling, 5xx and connection errors)",
    )
    options.add(
        "--s3-timeout",
        parse_duration,
        DEFAULT_S3_TIMEOUT,
        "seconds one S3 request attempt may go without progress before it is retried or fails",
    )
    options.add("--part-size", parse_size, DEFAULT_PART_SIZE, "bytes per multipart part, at least 5MiB")
    options.add("--part-concurrency", int, DEFAULT_PART_CONCURRENCY, "parts of one upload sent at once")
    options.add(
        "--max-buffer-bytes",
        parse_size,
        DEFAULT_MAX_BUFFER_BYTES,
        "memory all uploads together may hold; reading pauses beyond it",
    )
    options.add("--max-upload-bytes", parse_size, DEFAULT_MAX_UPLOAD_BYTES, "largest recording accepted")
    options.add("--key-template", str, DEFAULT_KEY_TEMPLATE, "object key below the prefix")
    options.add("--overwrite", _flag_bool, False, "replace an existing object instead of answering 409")
    options.add(
        "--checksum",
        str,
        DEFAULT_CHECKSUM,
        "integrity value S3 verifies: auto (full-object CRC64NVME on AWS, else the strongest the store verifies), "
        "md5, crc32, crc32c, crc64nvme, sha256 or none",
    )
    options.add(
        "--require-conditional-writes",
        _flag_bool,
        False,
        "refuse to start unless the store itself refuses to replace an existing recording",
    )
    options.add("--sse", str, None, "server-side encryption: AES256 or aws:kms")
    options.add("--sse-kms-key-id", str, None, "KMS key for --sse aws:kms (default: the account's aws/s3 key)")
    options.add("--storage-class", str, None, "S3 storage class of recordings (default: the bucket's)")
    options.add("--object-lock-mode", str, None, "Object Lock retention: GOVERNANCE or COMPLIANCE")
    options.add("--object-lock-days", int, None, "days each recording is retained under --object-lock-mode")
    options.add("--object-lock-legal-hold", _flag_bool, False, "put a legal hold on every recording")
    options.add_list("--tag", "object tag KEY=VALUE", dest="tags")
    options.add_list("--tag-field", "text field whose value becomes a tag", dest="tag_fields")
    options.add("--config", load_routes, (), "TOML file of [[route]] tables: more upload paths", dest="routes")
    options.add("--manifest", _flag_bool, False, "write <key>.json with the upload's facts beside each recording")
    options.add("--url-mode", str, "object", "url in the answer: object, presigned (SigV4 GET link) or s3uri")
    options.add("--presign-expires", _seconds, DEFAULT_PRESIGN_EXPIRES, "lifetime of presigned links (at most 7d)")
    options.add("--s3-ca-bundle", str, None, "PEM bundle of CAs to trust for the S3 endpoint (private CAs)")
    options.add(
        "--s3-capabilities",
        str,
        "probe",
        "what the store supports: probe it at start (probe), assume AWS S3's documented set (aws), "
        "or a JSON file written by check --save-capabilities",
    )


def _security_options(options: _Options) -> None:
    options.add_list(
        "--auth-token",
        "a token clients must send (Bearer, or the Basic auth password)",
        env="STREAMPROXY_AUTH_TOKENS",
        dest="auth_tokens",
    )
    options.add("--auth-token-file", str, None, "file with one token per line (keeps tokens out of ps)")
    options.add(
        "--allow-query-token", _flag_bool, False, "also accept the token as ?token= (for clients without headers)"
    )
    options.add("--allow-anonymous", _flag_bool, False, "listen beyond loopback without any token")
    options.add_list("--allow-cidr", "client addresses allowed to upload, e.g. 203.0.113.0/24")
    options.add_list("--trusted-proxy", "proxy addresses whose X-Forwarded-For is believed")
    options.add("--tls-cert", str, None, "PEM certificate chain: serve HTTPS directly")
    options.add("--tls-key", str, None, "PEM private key for --tls-cert")
    options.add(
        "--max-upload-seconds",
        parse_duration,
        DEFAULT_MAX_UPLOAD_SECONDS,
        "longest time a client may take to send one upload before 408",
    )


def _notify_options(options: _Options) -> None:
    options.add_list("--notify-url", "webhook that gets a signed recording.stored event per stored upload")
    options.add_list("--notify-sqs", "SQS queue URL that gets the events")
    options.add_list("--notify-sns", "SNS topic ARN that gets the events")
    options.add("--notify-secret", str, None, "HMAC secret for Streamproxy-Signature (at least 16 characters)")
    options.add("--notify-secret-file", str, None, "file whose first line is the notify secret (keeps it out of ps)")
    options.add(
        "--notify-max-age",
        parse_duration,
        DEFAULT_NOTIFY_MAX_AGE,
        "seconds (or 7d, 12h) an event is retried before it is kept as a dead letter",
    )
    options.add("--notify-timeout", parse_duration, DEFAULT_NOTIFY_TIMEOUT, "seconds one delivery attempt may take")
    options.add(
        "--notify-backoff", parse_duration, DEFAULT_NOTIFY_BACKOFF, "seconds before the first retry (then doubling)"
    )
    options.add(
        "--notify-backoff-max", parse_duration, DEFAULT_NOTIFY_BACKOFF_MAX, "longest wait between retries, seconds"
    )


def _parser() -> tuple[argparse.ArgumentParser, dict[str, _Options]]:
    parser = argparse.ArgumentParser(prog="streamproxy", description="Stream call recordings into object storage.")
    parser.add_argument("--version", action="version", version=f"streamproxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the upload server")
    options = _Options(serve)
    options.add("--host", str, DEFAULT_HOST, "address to listen on")
    options.add("--port", int, DEFAULT_PORT, "port to listen on")
    _storage_options(options)
    options.add("--read-timeout", parse_duration, DEFAULT_READ_TIMEOUT, "seconds a client may send nothing before 408")
    options.add("--max-concurrent-uploads", int, DEFAULT_MAX_CONCURRENT_UPLOADS, "uploads in flight before 503")
    options.add("--file-field", str, DEFAULT_FILE_FIELD, "multipart field that carries the recording")
    options.add(
        "--accept-types", _types, ",".join(DEFAULT_ACCEPT_TYPES), "comma-separated recording content types accepted"
    )
    options.add("--require-audio", _flag_bool, False, "refuse recordings that are not audio (415 not_audio)")
    options.add("--require-wav", _flag_bool, False, "old name of --require-audio")
    options.add("--raw-audio", str, DEFAULT_RAW_AUDIO, "how headerless bytes without a hint are read: ulaw, alaw, none")
    options.add("--store-format", str, DEFAULT_STORE_FORMAT, "what to store: wav, original, wav-pcm16, mp3, opus, flac")
    options.add("--audio-bitrate", parse_bitrate, None, "bitrate of mp3 and opus output in bit/s (e.g. 24k)")
    options.add(
        "--shutdown-timeout",
        parse_duration,
        DEFAULT_SHUTDOWN_TIMEOUT,
        "on SIGTERM/SIGINT, seconds uploads in flight may take to finish before they are aborted",
    )
    options.add(
        "--header-timeout",
        parse_duration,
        DEFAULT_HEADER_TIMEOUT,
        "seconds a new connection may take to send its request line and headers before 408 and close (0: off)",
    )
    options.add(
        "--keepalive-timeout",
        parse_duration,
        DEFAULT_KEEPALIVE_TIMEOUT,
        "seconds an idle kept-alive connection stays open",
    )
    options.add(
        "--max-connections", int, DEFAULT_MAX_CONNECTIONS, "open connections before new ones get 503 busy (0: no cap)"
    )
    _security_options(options)
    _notify_options(options)
    _log_options(options)

    check = commands.add_parser("check", help="check configuration, credentials and storage, then exit")
    check_options = _Options(check)
    _storage_options(check_options)
    check_options.add("--write-probe", _flag_bool, False, "also put and delete a probe object (and multipart upload)")
    _notify_options(check_options)
    check_options.add(
        "--save-capabilities", str, None, "write the probed capabilities to this JSON file (for --s3-capabilities)"
    )
    _log_options(check_options)

    notify = commands.add_parser("notify", help="list, retry or drop notification dead letters, then exit")
    notify_options = _Options(notify)
    _storage_options(notify_options)
    notify_options.add("--list", _flag_bool, False, "print one JSON line per dead letter", dest="notify_list")
    notify_options.add_list(
        "--retry",
        "put the dead letter NAME back for delivery (or all)",
        env="STREAMPROXY_NOTIFY_RETRY",
        dest="notify_retry",
    )
    notify_options.add_list(
        "--drop", "delete the dead letter NAME for good (or all)", env="STREAMPROXY_NOTIFY_DROP", dest="notify_drop"
    )
    _log_options(notify_options)

    sweep = commands.add_parser("sweep", help="remove leftovers of interrupted uploads, then exit")
    sweep_options = _Options(sweep)
    _storage_options(sweep_options)
    sweep_options.add(
        "--older-than", parse_duration, None, "remove only leftovers older than this (90s, 15m, 24h, 7d); required"
    )
    sweep_options.add("--dry-run", _flag_bool, False, "list what would be removed, remove nothing")
    sweep_options.add(
        "--metrics-file", str, None, "also write the findings here for node_exporter's textfile collector (*.prom)"
    )
    _log_options(sweep_options)
    return parser, {"serve": options, "check": check_options, "sweep": sweep_options, "notify": notify_options}


def _log_options(options: _Options) -> None:
    options.add("--log-format", str, "auto", "json or console (auto: console on a terminal)")
    options.add("--log-level", str, "info", "debug, info, warning or error")


def settings_from_args(argv: Sequence[str]) -> tuple[str, Settings]:
    """Parse a command line (and the environment) into the command name and its settings."""
    parser, options = _parser()
    args = parser.parse_args(argv)
    values = options[args.command].resolve(args)
    if isinstance(values.get("accept_types"), str):
        values["accept_types"] = _types(values["accept_types"])
    if "tags" in values:
        values["tags"] = tuple(_tag(text) for text in values["tags"])
    if args.command == "notify" and not (
        values.get("notify_list") or values.get("notify_retry") or values.get("notify_drop")
    ):
        raise ConfigError("notify needs --list, --retry NAME or --drop NAME")
    if "require_wav" in values:  # the old flag is an alias
        alias = values.pop("require_wav")
        values["require_audio"] = values["require_audio"] or alias
    if args.command == "sweep" and values.get("older_than") is None:
        raise ConfigError("sweep needs --older-than DURATION (for example 24h): leftovers younger than it may be live")
    settings = Settings(**values)
    resolve_routes(settings)  # every route's own settings are checked at start, with the file and route named
    return args.command, settings


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamproxy`` console script."""
    try:
        command, settings = settings_from_args(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"streamproxy: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    if command == "serve":
        return _serve(settings)
    if command == "check":
        from .check import run_check

        return asyncio.run(run_check(settings))
    if command == "sweep":
        from .sweep import run_sweep

        return asyncio.run(run_sweep(settings))
    if command == "notify":
        return asyncio.run(_notify(settings))
    return 2


async def _notify(settings: Settings) -> int:
    from .notify.service import dead_letter_command
    from .sinks.outbox import OutboxCapable
    from .wiring import build_sink

    sink = build_sink(settings)
    if not isinstance(sink, OutboxCapable):
        print(f"streamproxy: error: {settings.storage} holds no outbox", file=sys.stderr)
        return 2
    await sink.start()
    try:
        return await dead_letter_command(
            sink.outbox_store(),
            show=settings.notify_list,
            retry=settings.notify_retry,
            drop=settings.notify_drop,
            out=sys.stdout,
            err=sys.stderr,
        )
    except StorageError as exc:
        print(f"streamproxy: error: storage {settings.storage}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await sink.close()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """Return a uvloop loop where available, else asyncio's.

    uvloop sends part bodies without copying them into a transport buffer (asyncio's selector
    transport copies every unsent byte on Python 3.11), and it is faster.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _serve(settings: Settings) -> int:
    from .app import make_app
    from .connections import ConnectionLimits
    from .lifecycle import serve

    ssl_context = None
    if settings.tls_cert and settings.tls_key:
        from .tls import server_context

        try:
            ssl_context = server_context(settings.tls_cert, settings.tls_key)
        except ConfigError as exc:
            print(f"streamproxy: error: {exc}", file=sys.stderr)
            return 2
    app = make_app(settings)
    loop = new_event_loop()
    try:
        loop.run_until_complete(
            serve(
                app,
                host=settings.host,
                port=settings.port,
                shutdown_timeout=settings.shutdown_timeout,
                ssl_context=ssl_context,
                limits=ConnectionLimits(settings.header_timeout, settings.max_connections),
                keepalive_timeout=settings.keepalive_timeout,
            )
        )
    except OSError as exc:
        print(f"streamproxy: error: cannot listen on {settings.host}:{settings.port}: {exc.strerror}", file=sys.stderr)
        return 1
    except StorageError as exc:
        print(f"streamproxy: error: storage {settings.storage}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return 0
