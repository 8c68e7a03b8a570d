"""The audio flags --raw-audio, --store-format, --audio-bitrate, --require-audio (alias --require-wav), per route."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from streamproxy.audio import load_encoders
from streamproxy.cli import settings_from_args
from streamproxy.config import DEFAULT_ACCEPT_TYPES, ConfigError
from streamproxy.routes import route_settings
from tests.servers import config_error


def test_defaults() -> None:
    _, settings = settings_from_args(["serve"])
    assert (settings.raw_audio, settings.store_format, settings.audio_bitrate) == ("ulaw", "wav", None)
    assert settings.require_audio is False and settings.key_template == "{filename}{ext}"
    for media in ("audio/basic", "audio/x-mulaw", "audio/mulaw", "audio/x-ulaw", "audio/pcmu", "audio/pcma"):
        assert media in DEFAULT_ACCEPT_TYPES


@pytest.mark.parametrize("store", ["wav", "original"])
def test_flags_and_environment(monkeypatch: pytest.MonkeyPatch, store: str) -> None:
    monkeypatch.setenv("STREAMPROXY_RAW_AUDIO", "alaw")
    _, settings = settings_from_args(["serve", "--store-format", store, "--audio-bitrate", "24k"])
    assert (settings.raw_audio, settings.store_format, settings.audio_bitrate) == ("alaw", store, 24000)


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["serve", "--require-audio"], {}),
        (["serve", "--require-wav"], {}),
        (["serve"], {"STREAMPROXY_REQUIRE_WAV": "1"}),
    ],
)
def test_require_wav_is_an_alias_of_require_audio(monkeypatch: pytest.MonkeyPatch, argv, env) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert settings_from_args(argv)[1].require_audio is True


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["serve", "--raw-audio", "pcm"], "--raw-audio 'pcm': choose one of ulaw, alaw, none"),
        (["serve", "--store-format", "aac"], "--store-format 'aac': choose one of"),
        (["serve", "--audio-bitrate", "fast"], "--audio-bitrate: 'fast' is not a bitrate"),
        (["serve", "--audio-bitrate", "1k"], "--audio-bitrate 1000: give 6000 to 512000"),
        (
            ["serve", "--storage", "s3://bucket/p/", "--part-size", "8MiB", "--max-buffer-bytes", "8MiB"],
            "must hold two parts",
        ),
    ],
)
def test_bad_values_stop_the_server_with_one_line(argv: list[str], needle: str) -> None:
    assert needle in config_error(*argv)


def test_one_part_budget_is_fine_when_nothing_is_held() -> None:
    """The two-part rule applies only where a header's part 1 is held (S3, a store format that may add one)."""
    argv = ["serve", "--storage", "s3://bucket/p/", "--max-buffer-bytes", "8MiB", "--store-format", "original"]
    assert settings_from_args(argv)[1].max_buffer_bytes == 8 * 1024 * 1024
    assert settings_from_args(["serve", "--max-buffer-bytes", "8MiB"])[1].store_format == "wav"  # filesystem


def test_per_route_keys(tmp_path: Path) -> None:
    config = tmp_path / "routes.toml"
    config.write_text(
        '[[route]]\npath = "/a"\nstorage = "file:///tmp/a"\nraw-audio = "alaw"\nstore-format = "original"\n'
        'audio-bitrate = "32k"\nrequire-wav = true\n\n'
        '[[route]]\npath = "/b"\nstorage = "file:///tmp/b"\n'
    )
    _, settings = settings_from_args(["serve", "--config", str(config), "--store-format", "original"])
    a, b = (route_settings(settings, route) for route in settings.routes)
    assert (a.raw_audio, a.store_format, a.audio_bitrate, a.require_audio) == ("alaw", "original", 32000, True)
    # a route never inherits the default route's choices: built-in defaults
    assert (b.raw_audio, b.store_format, b.audio_bitrate, b.require_audio) == ("ulaw", "wav", None, False)


def test_transcoding_without_the_extra_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "streamproxy.audio.transcode", raising=False)
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV (the audio extra) were not installed
    with pytest.raises(ImportError, match="audio"):
        load_encoders()
    with pytest.raises(ConfigError, match=r"--store-format mp3: transcoding needs the 'audio' extra"):
        settings_from_args(["serve", "--store-format", "mp3"])
