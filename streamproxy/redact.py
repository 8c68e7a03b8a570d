"""Keep secrets out of logs: a structlog processor that scrubs them from every event.

``log.configure_logging`` runs it for structlog events and for standard-library records (aiohttp's
included, tracebacks too), just before rendering.

streamproxy never logs headers, query strings or presigned URLs in the first place; this is the
second line. It removes every token the process was configured with (``remember_secret``) and
anything shaped like a credential: ``Authorization`` values, ``Bearer``/``Basic`` credentials,
``token=`` query parameters and the signature, credential and security-token parts of presigned
S3 URLs.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

__all__ = ["REDACTED", "redact_processor", "remember_secret", "scrub"]

REDACTED = "[redacted]"
_MIN_SECRET = 4  # shorter strings would blank out ordinary words; tokens are validated much longer

_PATTERNS = (
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]{8,}=*"),
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)[^'\",}\r\n]+"),
    re.compile(
        r"(?i)([?&;](?:token|access_token|x-amz-signature|x-amz-credential|x-amz-security-token|signature)=)[^&\s'\"#]+"
    ),
)

_secrets: set[str] = set()


def remember_secret(secret: str) -> None:
    """Register a configured secret so every later log line has it replaced."""
    if len(secret) >= _MIN_SECRET:
        _secrets.add(secret)


def scrub(text: str) -> str:
    """Return ``text`` with known secrets and credential-shaped substrings replaced."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _PATTERNS[0].sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _PATTERNS[1].sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    return _PATTERNS[2].sub(lambda m: f"{m.group(1)}{REDACTED}", text)


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, bytes):
        return scrub(value.decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub_value(v) for v in value]
    return value


def redact_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Scrub every field of a structlog event (run it after ``format_exc_info``, before rendering)."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _scrub_value(value)
    return event_dict
