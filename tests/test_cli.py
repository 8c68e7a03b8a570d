"""The command line: flags, STREAMPROXY_* variables, and one-line configuration errors."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from streamproxy.cli import settings_from_args
from streamproxy.config import MIB, ConfigError
from tests.servers import config_error, streamproxy_server


def test_flags_and_defaults() -> None:
    """Flags parse sizes and durations; unset flags take the documented defaults."""
    command, settings = settings_from_args(["serve", "--part-size", "16MiB", "--read-timeout", "2m"])
    assert command == "serve"
    assert settings.part_size == 16 * MIB and settings.read_timeout == 120
    assert settings.key_template == "{filename}{ext}" and settings.storage.scheme == "file"
    assert settings.storage.path == (Path.cwd() / "recordings").resolve()


def test_environment_fills_in_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    """STREAMPROXY_<FLAG> sets a value; a flag on the command line overrides it."""
    monkeypatch.setenv("STREAMPROXY_STORAGE", "s3://calls/rec")
    monkeypatch.setenv("STREAMPROXY_PART_CONCURRENCY", "2")
    monkeypatch.setenv("STREAMPROXY_OVERWRITE", "true")
    _, settings = settings_from_args(["serve", "--part-concurrency", "3"])
    assert (settings.storage.bucket, settings.storage.prefix) == ("calls", "rec/")
    assert settings.part_concurrency == 3 and settings.overwrite is True


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["serve", "--part-size", "1MiB"], {}, "--part-size"),
        (["serve", "--storage", "ftp://x"], {}, "--storage"),
        (["serve", "--key-template", "fixed.wav"], {}, "no variable"),
        (["serve", "--key-template", "{filename}/../x.wav"], {}, "'..' segment"),
        (["serve", "--max-buffer-bytes", "6MiB"], {}, "--max-buffer-bytes"),
        (["serve", "--s3-timeout", "0"], {}, "--s3-timeout"),
        (["serve"], {"STREAMPROXY_PART_SIZE": "lots"}, "STREAMPROXY_PART_SIZE"),
        (["serve", "--storage", "s3://calls/", "--max-upload-bytes", "100GiB"], {}, "10000 parts"),
        (["serve", "--shutdown-timeout", "soon"], {}, "--shutdown-timeout"),
        (["sweep", "--storage", "file:///tmp/x"], {}, "--older-than"),
        (["check", "--checksum", "sha1"], {}, "--checksum"),
    ],
)
def test_bad_configuration_is_one_line(argv: list[str], env: dict[str, str], needle: str) -> None:
    """The process exits 2 with one line naming the problem, not a traceback."""
    assert needle in config_error(*argv, env=env)


def test_settings_reject_bad_values_directly() -> None:
    """The same validation applies when settings are built in code."""
    with pytest.raises(ConfigError, match="checksum"):
        settings_from_args(["serve", "--checksum", "sha1"])


def test_serve_runs_on_the_filesystem_default(tmp_path: Path) -> None:
    """`streamproxy serve` with no storage flag stores into ./recordings under the working directory."""
    with streamproxy_server([], cwd=tmp_path) as (_, base):
        request = urllib.request.Request(
            f"{base}/recordings/first-call", data=b"RIFF....WAVE", method="PUT", headers={"Content-Type": "audio/wav"}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200
    assert (tmp_path / "recordings" / "first-call.wav").read_bytes() == b"RIFF....WAVE"
