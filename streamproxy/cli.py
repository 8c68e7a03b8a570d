"""Command line: ``streamproxy serve|check|sweep|notify``: flags and ``STREAMPROXY_*`` variables into settings."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any

from . import __version__
from .config import DEFAULT_ACCEPT_TYPES, ConfigError, Settings, StorageURI, parse_bitrate, parse_duration, parse_size
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


_FROM_SETTINGS: Any = object()  # a flag's default is its Settings field's


def _settings_default(dest: str) -> Any:
    # Called as the parser is built, not at import: the default storage resolves against the working directory.
    field = next(f for f in fields(Settings) if f.name == dest)
    return field.default if field.default is not MISSING else field.default_factory()  # type: ignore[operator]  # MISSING excluded


@dataclass(frozen=True)
class _Flag:
    """A flag whose value, else ``STREAMPROXY_<FLAG>``, goes through ``convert``; else the default.

    The default is the ``Settings`` field's (named ``dest``), unless ``default`` is given.
    """

    flag: str
    convert: Callable[[str], Any]
    help: str
    dest: str = ""
    default: Any = _FROM_SETTINGS


@dataclass(frozen=True)
class _Repeated:
    """A repeatable flag; each value, and its environment variable (``env``), may be a comma-separated list.

    Values given on the command line replace the variable's list instead of adding to it.
    """

    flag: str
    help: str
    dest: str = ""
    env: str = ""


def _dest(flag: str, dest: str) -> str:
    return dest or flag.lstrip("-").replace("-", "_")


class _Options:
    """Adds the flags of one command, with defaults from ``STREAMPROXY_<FLAG>``, converting both the same way."""

    def __init__(self, parser: argparse.ArgumentParser, *tables: tuple[_Flag | _Repeated, ...]) -> None:
        self.parser = parser
        self.converters: dict[str, tuple[str, Callable[[str], Any]]] = {}
        self.lists: dict[str, tuple[str, str]] = {}
        for table in tables:
            for option in table:
                if isinstance(option, _Flag):
                    self._add(option)
                else:
                    self._add_list(option)

    def _add(self, option: _Flag) -> None:
        flag, convert, dest = option.flag, option.convert, _dest(option.flag, option.dest)
        default = _settings_default(dest) if option.default is _FROM_SETTINGS else option.default
        env = _env_name(flag)
        self.converters[dest] = (flag, convert)
        if convert is _flag_bool:
            self.parser.add_argument(
                flag, dest=dest, action="store_const", const="true", default=None, help=f"{option.help} (env {env})"
            )
        else:
            self.parser.add_argument(
                flag,
                dest=dest,
                default=None,
                metavar=dest.upper(),
                help=f"{option.help} (default {default}; env {env})",
            )
        self.parser.set_defaults(**{f"_default_{dest}": default})

    def _add_list(self, option: _Repeated) -> None:
        dest = _dest(option.flag, option.dest)
        env = option.env or _env_name(option.flag)
        self.lists[dest] = (option.flag, env)
        self.parser.add_argument(
            option.flag,
            dest=dest,
            action="append",
            default=None,
            metavar=dest.upper(),
            help=f"{option.help} (repeatable; env {env})",
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


# The flags of each command, in the order --help lists them. A flag's default is its Settings field's.
_Table = tuple[_Flag | _Repeated, ...]
_LISTEN: _Table = (_Flag("--host", str, "address to listen on"), _Flag("--port", int, "port to listen on"))
_STORAGE: _Table = (
    _Flag("--storage", StorageURI.parse, "where recordings go: s3://bucket/prefix/ or file:///directory"),
    _Flag("--s3-endpoint-url", str, "S3-compatible endpoint (also AWS_ENDPOINT_URL_S3)"),
    _Flag("--s3-region", str, "S3 region (default: the AWS configuration)"),
    _Flag("--s3-max-attempts", int, "tries per S3 call (retries back off on throttling, 5xx and connection errors)"),
    _Flag(
        "--s3-timeout",
        parse_duration,
        "seconds one S3 request attempt may go without progress before it is retried or fails",
    ),
    _Flag("--part-size", parse_size, "bytes per multipart part, at least 5MiB"),
    _Flag("--part-concurrency", int, "parts of one upload sent at once"),
    _Flag("--max-buffer-bytes", parse_size, "memory all uploads together may hold; reading pauses beyond it"),
    _Flag("--max-upload-bytes", parse_size, "largest recording accepted"),
    _Flag("--key-template", str, "object key below the prefix"),
    _Flag("--overwrite", _flag_bool, "replace an existing object instead of answering 409"),
    _Flag(
        "--checksum",
        str,
        "integrity value S3 verifies: auto (full-object CRC64NVME on AWS, else the strongest the store verifies), "
        "md5, crc32, crc32c, crc64nvme, sha256 or none",
    ),
    _Flag(
        "--require-conditional-writes",
        _flag_bool,
        "refuse to start unless the store itself refuses to replace an existing recording",
    ),
    _Flag("--sse", str, "server-side encryption: AES256 or aws:kms"),
    _Flag("--sse-kms-key-id", str, "KMS key for --sse aws:kms (default: the account's aws/s3 key)"),
    _Flag("--storage-class", str, "S3 storage class of recordings (default: the bucket's)"),
    _Flag("--object-lock-mode", str, "Object Lock retention: GOVERNANCE or COMPLIANCE"),
    _Flag("--object-lock-days", int, "days each recording is retained under --object-lock-mode"),
    _Flag("--object-lock-legal-hold", _flag_bool, "put a legal hold on every recording"),
    _Repeated("--tag", "object tag KEY=VALUE", dest="tags"),
    _Repeated("--tag-field", "text field whose value becomes a tag", dest="tag_fields"),
    _Flag("--config", load_routes, "TOML file of [[route]] tables: more upload paths", dest="routes"),
    _Flag("--manifest", _flag_bool, "write <key>.json with the upload's facts beside each recording"),
    _Flag("--url-mode", str, "url in the answer: object, presigned (SigV4 GET link) or s3uri"),
    _Flag("--presign-expires", _seconds, "lifetime of presigned links (at most 7d)"),
    _Flag("--s3-ca-bundle", str, "PEM bundle of CAs to trust for the S3 endpoint (private CAs)"),
    _Flag(
        "--s3-capabilities",
        str,
        "what the store supports: probe it at start (probe), assume AWS S3's documented set (aws), "
        "or a JSON file written by check --save-capabilities",
    ),
)
_SERVING: _Table = (
    _Flag("--read-timeout", parse_duration, "seconds a client may send nothing before 408"),
    _Flag("--max-concurrent-uploads", int, "uploads in flight before 503"),
    _Flag("--file-field", str, "multipart field that carries the recording"),
    _Flag(
        "--accept-types",
        _types,
        "comma-separated recording content types accepted",
        default=",".join(DEFAULT_ACCEPT_TYPES),
    ),
    _Flag("--require-audio", _flag_bool, "refuse recordings that are not audio (415 not_audio)"),
    _Flag("--require-wav", _flag_bool, "old name of --require-audio", default=False),
    _Flag("--raw-audio", str, "how headerless bytes without a hint are read: ulaw, alaw, none"),
    _Flag("--store-format", str, "what to store: wav, original, wav-pcm16, mp3, opus, flac"),
    _Flag("--audio-bitrate", parse_bitrate, "bitrate of mp3 and opus output in bit/s (e.g. 24k)"),
    _Flag(
        "--shutdown-timeout",
        parse_duration,
        "on SIGTERM/SIGINT, seconds uploads in flight may take to finish before they are aborted",
    ),
    _Flag(
        "--header-timeout",
        parse_duration,
        "seconds a new connection may take to send its request line and headers before 408 and close (0: off)",
    ),
    _Flag("--keepalive-timeout", parse_duration, "seconds an idle kept-alive connection stays open"),
    _Flag("--max-connections", int, "open connections before new ones get 503 busy (0: no cap)"),
)
_SECURITY: _Table = (
    _Repeated(
        "--auth-token",
        "a token clients must send (Bearer, or the Basic auth password)",
        dest="auth_tokens",
        env="STREAMPROXY_AUTH_TOKENS",
    ),
    _Flag("--auth-token-file", str, "file with one token per line (keeps tokens out of ps)"),
    _Flag("--allow-query-token", _flag_bool, "also accept the token as ?token= (for clients without headers)"),
    _Flag("--allow-anonymous", _flag_bool, "listen beyond loopback without any token"),
    _Repeated("--allow-cidr", "client addresses allowed to upload, e.g. 203.0.113.0/24"),
    _Repeated("--trusted-proxy", "proxy addresses whose X-Forwarded-For is believed"),
    _Flag("--tls-cert", str, "PEM certificate chain: serve HTTPS directly"),
    _Flag("--tls-key", str, "PEM private key for --tls-cert"),
    _Flag("--max-upload-seconds", parse_duration, "longest time a client may take to send one upload before 408"),
)
_NOTIFY: _Table = (
    _Repeated("--notify-url", "webhook that gets a signed recording.stored event per stored upload"),
    _Repeated("--notify-sqs", "SQS queue URL that gets the events"),
    _Repeated("--notify-sns", "SNS topic ARN that gets the events"),
    _Flag("--notify-secret", str, "HMAC secret for Streamproxy-Signature (at least 16 characters)"),
    _Flag("--notify-secret-file", str, "file whose first line is the notify secret (keeps it out of ps)"),
    _Flag(
        "--notify-max-age",
        parse_duration,
        "seconds (or 7d, 12h) an event is retried before it is kept as a dead letter",
    ),
    _Flag("--notify-timeout", parse_duration, "seconds one delivery attempt may take"),
    _Flag("--notify-backoff", parse_duration, "seconds before the first retry (then doubling)"),
    _Flag("--notify-backoff-max", parse_duration, "longest wait between retries, seconds"),
)
_LOG: _Table = (
    _Flag("--log-format", str, "json or console (auto: console on a terminal)"),
    _Flag("--log-level", str, "debug, info, warning or error"),
)
_CHECK: _Table = (
    _Flag("--write-probe", _flag_bool, "also put and delete a probe object (and multipart upload)"),
    *_NOTIFY,
    _Flag("--save-capabilities", str, "write the probed capabilities to this JSON file (for --s3-capabilities)"),
)
_DEAD_LETTERS: _Table = (
    _Flag("--list", _flag_bool, "print one JSON line per dead letter", dest="notify_list"),
    _Repeated(
        "--retry",
        "put the dead letter NAME back for delivery (or all)",
        dest="notify_retry",
        env="STREAMPROXY_NOTIFY_RETRY",
    ),
    _Repeated(
        "--drop", "delete the dead letter NAME for good (or all)", dest="notify_drop", env="STREAMPROXY_NOTIFY_DROP"
    ),
)
_SWEEP: _Table = (
    _Flag("--older-than", parse_duration, "remove only leftovers older than this (90s, 15m, 24h, 7d); required"),
    _Flag("--dry-run", _flag_bool, "list what would be removed, remove nothing"),
    _Flag("--metrics-file", str, "also write the findings here for node_exporter's textfile collector (*.prom)"),
)
# command -> (help, its flags)
_COMMANDS: dict[str, tuple[str, tuple[_Table, ...]]] = {
    "serve": ("run the upload server", (_LISTEN, _STORAGE, _SERVING, _SECURITY, _NOTIFY, _LOG)),
    "check": ("check configuration, credentials and storage, then exit", (_STORAGE, _CHECK, _LOG)),
    "notify": ("list, retry or drop notification dead letters, then exit", (_STORAGE, _DEAD_LETTERS, _LOG)),
    "sweep": ("remove leftovers of interrupted uploads, then exit", (_STORAGE, _SWEEP, _LOG)),
}


def _parser() -> tuple[argparse.ArgumentParser, dict[str, _Options]]:
    parser = argparse.ArgumentParser(prog="streamproxy", description="Stream call recordings into object storage.")
    parser.add_argument("--version", action="version", version=f"streamproxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    options = {
        name: _Options(commands.add_parser(name, help=help), *tables) for name, (help, tables) in _COMMANDS.items()
    }
    return parser, options


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
