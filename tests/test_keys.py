"""Filename rules and key templates: every key stays under the prefix or the request is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamproxy.errors import BadRequest
from streamproxy.keys import KeyTemplate, check_filename, decode_filename, join_key
from tests.helpers import KEY_TEMPLATES


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "empty"),
        ("a" * 201, "longer than 200"),
        ("../etc/evil", "path separator"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("..", "'..'"),
        ("x..y", "'..'"),
        (".hidden", "starts with '.'"),
        ("nul\x00byte", "control character"),
        ("tab\there", "control character"),
        ("del\x7f", "control character"),
        ("c1\x85", "control character"),
    ],
)
def test_unsafe_filenames_are_refused_naming_the_rule(name: str, rule: str) -> None:
    """Each unsafe name gets invalid_filename with the rule it broke in the message."""
    with pytest.raises(BadRequest) as info:
        check_filename(name)
    assert info.value.code == "invalid_filename"
    assert rule in info.value.message


def test_non_utf8_filename_is_refused() -> None:
    """Bytes that are not UTF-8 are refused rather than guessed at."""
    with pytest.raises(BadRequest, match="UTF-8"):
        decode_filename(b"call-\xff\xfe")


@pytest.mark.parametrize("name", ["call-7", "2024-01-01_12.30.00", "Anruf Müller", "a" * 200, "x.y.z"])
def test_ordinary_filenames_pass(name: str) -> None:
    """Names the platform sends pass unchanged."""
    assert check_filename(name) == name


def test_default_template_gives_the_sample_key() -> None:
    """{filename}.wav under rec/ turns call-7 into rec/call-7.wav, like the PHP sample."""
    assert join_key("rec/", KeyTemplate("{filename}.wav").render("call-7", {})) == "rec/call-7.wav"


def test_template_variables() -> None:
    """{date:...} is UTC strftime, {field:NAME} is sanitized, {uuid} is unique."""
    template = KeyTemplate("{field:call_id}/{date:%Y/%m/%d}/{filename}-{uuid}.wav")
    now = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
    key = template.render("leg-1", {"call_id": "abc/../x y"}, now)
    call_id, year, month, day, rest = key.split("/")
    assert (call_id, year, month, day) == ("abc_.._x_y", "2026", "11", "26")
    assert rest.startswith("leg-1-") and rest.endswith(".wav")
    assert template.render("leg-1", {"call_id": "a"}, now) != template.render("leg-1", {"call_id": "a"}, now)


def test_missing_template_field_is_a_400() -> None:
    """A field the template needs but the request lacks is missing_field."""
    with pytest.raises(BadRequest) as info:
        KeyTemplate("{field:call_id}/{filename}").render("x", {})
    assert info.value.code == "missing_field"


@pytest.mark.parametrize(
    "template",
    [
        "static.wav",
        "{nope}",
        "{filename!r}",
        "/{filename}",
        "{date}",
        "{field:a/b}",
        "{filename",
        "{field:id}/../{filename}",
        "a//{filename}",
        "{filename}/./x",
    ],
)
def test_bad_templates_fail_at_start(template: str) -> None:
    """Templates that cannot produce safe, distinct keys are refused when the server starts."""
    with pytest.raises(ValueError):
        KeyTemplate(template)


def test_overlong_key_is_refused() -> None:
    """S3 keys are at most 1024 bytes."""
    with pytest.raises(BadRequest, match="1024"):
        join_key("p/" * 450, "a" * 200)


templates = st.sampled_from(KEY_TEMPLATES)


@given(filename=st.text(max_size=250), field=st.text(max_size=80), template=templates)
def test_any_filename_stays_under_the_prefix_or_is_refused(filename: str, field: str, template: str) -> None:
    """Property: for any filename and field value, the key is under the prefix with no '..' segment, or 400."""
    try:
        key = join_key("rec/", KeyTemplate(template).render(filename, {"id": field}))
    except BadRequest as exc:
        assert exc.status == 400
        return
    assert key.startswith("rec/")
    segments = key.split("/")
    assert all(seg not in ("", ".", "..") for seg in segments)
    assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in key)


def test_ext_is_the_stored_formats_extension() -> None:
    """``{ext}`` carries its dot; the default template ``{filename}{ext}`` gives ``call-7.wav`` or ``call-7.ul``."""
    template = KeyTemplate("{filename}{ext}")
    assert template.render("call-7", {}, ext=".wav") == "call-7.wav"
    assert template.render("call-7", {}, ext=".ul") == "call-7.ul"
    assert KeyTemplate("{date:%Y}/{filename}-x{ext}").render("a", {}, datetime(2026, 1, 2, tzinfo=UTC), ".mp3") == (
        "2026/a-x.mp3"
    )
    with pytest.raises(ValueError, match="takes no format"):
        KeyTemplate("{filename}{ext:x}")
