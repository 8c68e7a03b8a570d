r"""Pure functions that turn a client's filename into an object key that stays under the prefix.

The filename rule (documented in README.md) accepts a name only if it is

* not empty and at most 200 characters long,
* free of ``/`` and ``\\`` (no path separators),
* free of ``..`` and not starting with ``.`` (no parent references, no hidden or staging names),
* free of control characters (C0, DEL, C1) and valid UTF-8.

Every other name is refused with 400 ``invalid_filename``; the message names the rule it broke.
A key template is checked once at start, and each rendered key is checked again, so no
combination of filename and template can leave the configured prefix.
"""

from __future__ import annotations

import re
import string
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from .errors import BadRequest

__all__ = [
    "MAX_FILENAME_CHARS",
    "MAX_KEY_BYTES",
    "KeyTemplate",
    "check_filename",
    "decode_filename",
    "join_key",
]

MAX_FILENAME_CHARS = 200
MAX_KEY_BYTES = 1024  # S3's limit for a whole key, prefix included

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FIELD_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_TEMPLATE_FIELDS = ("filename", "ext", "uuid", "date", "field")


def _invalid(rule: str) -> BadRequest:
    return BadRequest(f"filename is not allowed: {rule}", code="invalid_filename")


def decode_filename(raw: bytes) -> str:
    """Decode a filename sent as bytes, refusing anything that is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("it is not valid UTF-8") from None


def check_filename(name: str) -> str:
    """Return ``name`` unchanged if it obeys the filename rule, else raise ``invalid_filename``."""
    if not name:
        raise _invalid("it is empty")
    if len(name) > MAX_FILENAME_CHARS:
        raise _invalid(f"it is longer than {MAX_FILENAME_CHARS} characters")
    if "/" in name or "\\" in name:
        raise _invalid("it contains a path separator ('/' or '\\')")
    if ".." in name:
        raise _invalid("it contains '..'")
    if name.startswith("."):
        raise _invalid("it starts with '.'")
    if _CONTROL.search(name):
        raise _invalid("it contains a control character")
    if "\ufffd" in name:
        raise _invalid("it is not valid UTF-8")
    return name


def _sanitize_field(value: str) -> str:
    cleaned = _FIELD_UNSAFE.sub("_", value).lstrip(".")
    return cleaned[:MAX_FILENAME_CHARS]


class KeyTemplate:
    """A validated key template such as ``{filename}{ext}`` or ``{field:call_id}/{uuid}{ext}``.

    Variables: ``{filename}``, ``{ext}`` (the stored format's extension with its dot, ``.wav``),
    ``{uuid}``, ``{date:FORMAT}`` (strftime, UTC) and ``{field:NAME}`` (a text field sent before
    the file, reduced to ``[A-Za-z0-9._-]``).
    """

    def __init__(self, template: str) -> None:
        self.template = template
        self.fields: list[str] = []
        self.uses_filename = False
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ValueError(f"key template {template!r} is malformed: {exc}") from None
        has_variable = False
        for _literal, name, spec, conversion in parsed:
            if name is None:
                continue
            has_variable = True
            if conversion:
                raise ValueError(f"key template {template!r}: conversions like !{conversion} are not allowed")
            if name in {"filename", "uuid", "ext"}:
                if spec:
                    raise ValueError(f"key template {template!r}: {{{name}}} takes no format")
                self.uses_filename |= name == "filename"
            elif name == "date":
                if not spec:
                    raise ValueError(f"key template {template!r}: write {{date:FORMAT}}, e.g. {{date:%Y/%m/%d}}")
            elif name == "field":
                if not spec or _FIELD_UNSAFE.search(spec):
                    raise ValueError(f"key template {template!r}: write {{field:NAME}} with a plain field name")
                self.fields.append(spec)
            else:
                raise ValueError(
                    f"key template {template!r}: unknown variable {{{name}}} (known: {', '.join(_TEMPLATE_FIELDS)})"
                )
        if not has_variable:
            raise ValueError(f"key template {template!r} has no variable: every upload would get the same key")
        if template.startswith("/"):
            raise ValueError(f"key template {template!r} must not start with '/'")
        # Render once with harmless values so a template that can never yield a valid key fails at start.
        try:
            _check_key(self._render("x", {f: "x" for f in self.fields}, datetime(2000, 1, 1, tzinfo=UTC), ".wav"))
        except BadRequest as exc:
            raise ValueError(f"key template {template!r}: {exc.message}") from None

    def render(
        self, filename: str | None, fields: Mapping[str, str], now: datetime | None = None, ext: str = ""
    ) -> str:
        """Return the key (below the prefix) for this upload, or raise a 400 naming what is wrong.

        ``ext`` is the stored format's extension with its dot (``.wav``, ``.ul``), for ``{ext}``.
        """
        if filename is not None:
            check_filename(filename)
        elif self.uses_filename:
            raise BadRequest("the text field 'filename' is missing", code="missing_field")
        for name in self.fields:
            if not fields.get(name):
                raise BadRequest(
                    f"the key template needs the text field {name!r} before the file", code="missing_field"
                )
        key = self._render(filename or "", fields, now or datetime.now(UTC), ext)
        return _check_key(key)

    def _render(self, filename: str, fields: Mapping[str, str], now: datetime, ext: str) -> str:
        out: list[str] = []
        for literal, name, spec, _ in string.Formatter().parse(self.template):
            out.append(literal)
            if name == "filename":
                out.append(filename)
            elif name == "ext":
                out.append(ext)
            elif name == "uuid":
                out.append(uuid.uuid4().hex)
            elif name == "date":
                out.append(now.strftime(spec or ""))
            elif name == "field":
                out.append(_sanitize_field(fields.get(spec or "", "")))
        return "".join(out)


def _check_key(key: str) -> str:
    segments = key.split("/")
    if not key or any(seg in ("", ".", "..") for seg in segments):
        raise BadRequest(f"the key {key!r} would have an empty, '.' or '..' segment", code="invalid_key")
    if _CONTROL.search(key):
        raise BadRequest("the key would contain a control character", code="invalid_key")
    return key


def join_key(prefix: str, key: str) -> str:
    """Put ``key`` under ``prefix`` and check the whole key against S3's length limit."""
    full = prefix + key
    if len(full.encode("utf-8")) > MAX_KEY_BYTES:
        raise BadRequest(f"the key would be longer than {MAX_KEY_BYTES} bytes", code="invalid_key")
    return full
