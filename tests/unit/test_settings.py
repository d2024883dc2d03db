"""``STENO_*`` variables into one typed ``Settings``, and the values derived from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.core.settings import Settings, SettingsError, load_settings


def test_an_empty_environment_gives_the_defaults() -> None:
    # given no STENO_* variable at all
    # when settings are loaded
    settings = load_settings({})

    # then every field has its declared default
    assert settings == Settings()
    assert settings.models == ("tiny.en",)
    assert settings.audio_dir == Path("var") / "audio"
    assert settings.models_dir == Path("var") / "models"
    assert settings.broker == settings.redis_url


def test_variables_are_parsed_into_their_field_types() -> None:
    # given variables for fields of every kind
    environ = {
        "STENO_PORT": "9001",
        "STENO_MAX_AUDIO_SECONDS": "90.5",
        "STENO_DATA_DIR": "/srv/steno",
        "STENO_STORAGE_DIR": "/mnt/audio",
        "STENO_EXTRA_MODELS": "base.en, small ,,",
        "STENO_WHISPER_MODEL": "base",
        "STENO_BROKER_URL": "redis://broker:6379/1",
        "UNRELATED": "ignored",
    }

    # when settings are loaded
    settings = load_settings(environ)

    # then each value has its field's type
    assert settings.port == 9001
    assert settings.max_audio_seconds == 90.5
    assert settings.data_dir == Path("/srv/steno")
    assert settings.audio_dir == Path("/mnt/audio")
    assert settings.models_dir == Path("/srv/steno/models")
    assert settings.extra_models == ("base.en", "small")
    assert settings.whisper_model == "base"
    assert settings.broker == "redis://broker:6379/1"


def test_the_default_model_comes_first_and_is_not_repeated() -> None:
    # given extra models that include the default one
    settings = load_settings({"STENO_EXTRA_MODELS": "a,tiny.en,b"})

    # when the served models are listed
    # then the default leads and each model appears once
    assert settings.models == ("tiny.en", "a", "b")


@pytest.mark.parametrize(
    ("name", "raw"),
    [("STENO_PORT", "eighty"), ("STENO_DB_POOL_SIZE", "2.5"), ("STENO_MAX_AUDIO_SECONDS", "long")],
)
def test_a_number_that_does_not_parse_is_a_settings_error(name: str, raw: str) -> None:
    # given a numeric variable holding text
    # when settings are loaded
    # then the error names the variable
    with pytest.raises(SettingsError, match=name):
        load_settings({name: raw})


@pytest.mark.parametrize(
    "environ",
    [
        {"STENO_MAX_UPLOAD_BYTES": "0"},
        {"STENO_MAX_AUDIO_SECONDS": "-1"},
        {"STENO_MAX_ATTEMPTS": "0"},
        {"STENO_EGRESS_TRANSPORT": "requests"},
    ],
)
def test_limits_out_of_range_are_settings_errors(environ: dict[str, str]) -> None:
    # given a limit that can't work
    # when settings are loaded
    # then they are refused
    with pytest.raises(SettingsError):
        load_settings(environ)


def test_overrides_win_over_the_environment() -> None:
    # given a variable and an override for the same field
    # when settings are loaded
    settings = load_settings({"STENO_PORT": "1"}, port=2)

    # then the override is used
    assert settings.port == 2


def test_as_env_round_trips_through_load_settings() -> None:
    # given settings that differ from the defaults in every kind of field
    original = load_settings(
        {},
        port=8123,
        max_audio_seconds=12.25,
        data_dir=Path("/tmp/steno-data"),
        model_dir=Path("/tmp/steno-models"),
        extra_models=("base.en", "small"),
        database_url="postgresql+asyncpg://u@db:5432/x",
        max_attempts=7,
    )

    # when they travel to a child process as variables and are read back
    environ = original.as_env()
    restored = load_settings(environ)

    # then nothing was lost, and unset optional paths are not exported
    assert restored == original
    assert environ["STENO_EXTRA_MODELS"] == "base.en,small"
    assert "STENO_STORAGE_DIR" not in environ
    assert all(key.startswith("STENO_") for key in environ)


def test_the_visibility_timeout_outlasts_the_longest_task() -> None:
    # given the default limits and a deployment with long audio allowed
    for settings in (load_settings({}), load_settings({"STENO_MAX_AUDIO_SECONDS": "36000"})):
        # when the derived limits are read
        # then no live task can be redelivered by Redis
        assert settings.visibility_timeout > settings.max_time_limit
        assert settings.max_time_limit == settings.transcribe_time_limit(None)


def test_the_transcription_time_limit_grows_with_the_audio() -> None:
    # given a base of 100 s plus 3 s per second of audio
    settings = load_settings(
        {"STENO_TRANSCRIBE_TIME_LIMIT_BASE": "100", "STENO_TRANSCRIBE_TIME_LIMIT_FACTOR": "3"}
    )

    # when limits are asked for audio of different lengths
    # then they scale linearly, and unknown lengths get the longest
    assert settings.transcribe_time_limit(0) == 100.0
    assert settings.transcribe_time_limit(10) == 130.0
    assert settings.transcribe_time_limit(60) == 280.0
    assert settings.transcribe_time_limit(None) == 100.0 + 3 * settings.max_audio_seconds


def test_a_visibility_timeout_shorter_than_twice_the_longest_limit_is_refused() -> None:
    # given limits whose longest hard limit is 300 + 2 * 100 = 500 s
    environ = {"STENO_MAX_AUDIO_SECONDS": "100", "STENO_FETCH_TIMEOUT_SECONDS": "10"}

    # when the visibility timeout is set below twice that, then startup is refused
    with pytest.raises(SettingsError, match=r"shorter than twice the longest hard time limit"):
        load_settings({**environ, "STENO_VISIBILITY_TIMEOUT_SECONDS": "999"})

    # and exactly twice (or the default) is accepted
    assert (
        load_settings({**environ, "STENO_VISIBILITY_TIMEOUT_SECONDS": "1000"}).visibility_timeout
        == 1000
    )
    assert load_settings(environ).visibility_timeout == 1000


def test_fault_injection_may_allow_a_short_visibility_timeout() -> None:
    # given the chaos suite's hook, then a short timeout is accepted (and off by default)
    settings = load_settings(
        {"STENO_VISIBILITY_TIMEOUT_SECONDS": "5", "STENO_FAULT_ALLOW_SHORT_VISIBILITY": "true"}
    )
    assert settings.visibility_timeout == 5
    defaults = load_settings({})
    assert not defaults.fault_allow_short_visibility
    assert defaults.transcribe_delay_seconds == 0
    assert defaults.fault_crash_marker == ""


def test_a_fractional_time_limit_does_not_make_the_default_visibility_timeout_refused() -> None:
    # given limits whose longest hard limit has a fraction (300 + 2.25 * 100.1 s)
    environ = {"STENO_MAX_AUDIO_SECONDS": "100.1", "STENO_TRANSCRIBE_TIME_LIMIT_FACTOR": "2.25"}

    # when the settings load, then the derived timeout (rounded up) satisfies the rule
    settings = load_settings({**environ, "STENO_FETCH_TIMEOUT_SECONDS": "1"})
    assert settings.visibility_timeout >= 2 * settings.max_time_limit
