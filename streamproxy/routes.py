"""Several destinations: ``--config FILE`` with ``[[route]]`` tables, each an upload path of its own.

A route has its own path (``POST /recordings/acme``, ``PUT /recordings/acme/{filename}``), its own
storage, tokens, key template, URL mode and storage options. Flags and ``STREAMPROXY_*`` give the
default route (``/recordings``). What a route does not set takes the built-in default, not the
default route's value: a customer's route must not inherit another customer's tokens, tags or key.
Only process-wide settings (part size, memory budget, limits, timeouts, S3 endpoint and region,
client address rules) are shared. Each route gets its own ``auth.Guard`` built from its settings,
so a token of one route opens no other.

The file is read once at start. Every mistake stops the server with one line naming the file,
the route and the key: unknown keys, wrong types, a duplicate or reserved path, and every check
that ``Settings.validate`` applies to the flags.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, replace
from pathlib import Path
from typing import Any

from .config import Route, Settings, per_route_fields, toml_string
from .errors import ConfigError

__all__ = ["RESERVED_PATHS", "ROUTE_KEYS", "Route", "load_routes", "resolve_routes", "route_settings"]

DEFAULT_PATH = "/recordings"
RESERVED_PATHS = (DEFAULT_PATH, "/healthz", "/readyz", "/metrics", "/openapi.json")
_PATH = re.compile(r"(/[A-Za-z0-9._-]+)+")


def _route_keys() -> dict[str, tuple[str, Callable[[object], Any]]]:
    keys: dict[str, tuple[str, Callable[[object], Any]]] = {"path": ("", toml_string)}
    for settings_field, how in per_route_fields():
        for key in (how.key, *how.aliases):
            keys[key] = (settings_field.name, how.convert)
    return keys


# TOML key -> (Settings field, converter), derived from the ``per_route`` metadata of the Settings
# fields (config.py). Keys are the flag names without "--"; "require-wav" is the old name of
# "require-audio", "notify-urls" sets --notify-url.
ROUTE_KEYS: dict[str, tuple[str, Callable[[object], Any]]] = _route_keys()
# What a route does not set falls back to the built-in default of its Settings field, never to the
# default route's flags. (``storage`` is required in every table, so it has no fallback.)
_PER_ROUTE_DEFAULTS: dict[str, Any] = {
    f.name: f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]  # MISSING excluded above
    for f, _ in per_route_fields()
    if f.name != "storage"
}


def load_routes(path: str) -> tuple[Route, ...]:
    """Read and check a routes file; raise ``ConfigError`` with one line on the first mistake."""
    file = Path(path)
    try:
        document = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    unknown = sorted(set(document) - {"route"})
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (the file holds [[route]] tables only)")
    tables = document.get("route", [])
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{path}: write at least one [[route]] table")
    routes: list[Route] = []
    seen: set[str] = set()
    for number, table in enumerate(tables, start=1):
        route = _route(path, number, table)
        if route.path in seen:
            raise ConfigError(f"{route.where}: the path is used by an earlier route")
        seen.add(route.path)
        routes.append(route)
    return tuple(routes)


def _route(path: str, number: int, table: Mapping[str, Any]) -> Route:
    where = f"{path}: route {number}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: write it as a [[route]] table")
    for key in table:
        if key not in ROUTE_KEYS:
            known = ", ".join(ROUTE_KEYS)
            raise ConfigError(f"{where}: unknown key {key!r} (known: {known})")
    for required in ("path", "storage"):
        if required not in table:
            raise ConfigError(f"{where}: {required!r} is missing")
    values: dict[str, Any] = {}
    for key, raw in table.items():
        _, convert = ROUTE_KEYS[key]
        try:
            values[key] = convert(raw)
        except TypeError as exc:
            raise ConfigError(f"{where}: {key!r} must be {exc}") from None
        except ConfigError as exc:
            raise ConfigError(f"{where}: {key!r}: {exc}") from None
    route_path = values.pop("path")
    where = f"{path}: route {route_path}"
    if not _PATH.fullmatch(route_path):
        raise ConfigError(f"{where}: a path is /segment[/segment...] of letters, digits, '.', '_', '-'")
    if route_path in RESERVED_PATHS:
        raise ConfigError(f"{where}: the path is taken by the default route or a probe")
    overrides = tuple((ROUTE_KEYS[key][0], value) for key, value in values.items())
    return Route(route_path, overrides, where)


def route_settings(settings: Settings, route: Route) -> Settings:
    """Return the settings of ``route``: process-wide ones from ``settings``, the rest from the table."""
    try:
        return replace(settings, routes=(), **{**_PER_ROUTE_DEFAULTS, **dict(route.overrides)})
    except ConfigError as exc:
        # The message names the flag; the route's key is the same name without "--".
        raise ConfigError(f"{route.where}: {exc}") from None


def resolve_routes(settings: Settings) -> tuple[Settings, ...]:
    """Return the settings of every route of ``settings``; raise ``ConfigError`` naming the first bad one."""
    return tuple(route_settings(settings, route) for route in settings.routes)
