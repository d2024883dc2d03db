"""What a client may ask of a job, checked: model, language, timestamps, prompt, priority,
diarization, and the shape of an ``audio_url``; each bad value a ``ValidationFailed``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from service.core.errors import InvalidUrl, UnsupportedModel, ValidationFailed
from service.core.routing import Priority
from service.core.settings import Settings
from service.jobs.formats import LANGUAGE_NAMES
from service.speakers.options import parse_diarization

MAX_PROMPT_CHARS = 2000
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_LANGUAGE_BY_NAME = {name.lower(): code for code, name in LANGUAGE_NAMES.items()}


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Validated transcription options of one job."""

    model: str
    language: str | None
    word_timestamps: bool
    initial_prompt: str | None
    # Whisper's task (transcribe, or translate into English) and sampling temperature (None:
    # Whisper's fallback schedule); only the OpenAI-compatible routes set them.
    task: str = "transcribe"
    temperature: float | None = None
    # Speaker diarization (see service.speakers.options); None: not diarized.
    diarization: dict[str, Any] | None = None


def parse_options(
    settings: Settings,
    *,
    model: str | None,
    language: str | None,
    word_timestamps: bool | str | None,
    initial_prompt: str | None,
    diarize: bool | str | None = None,
    num_speakers: int | str | None = None,
    min_speakers: int | str | None = None,
    max_speakers: int | str | None = None,
    known_speakers: str | Iterable[str] | None = None,
) -> JobOptions:
    """Check the options a client sent; raises ``ValidationFailed``/``UnsupportedModel``."""
    chosen = (model or "").strip() or settings.whisper_model
    if chosen not in settings.models:
        raise UnsupportedModel(
            f"model {chosen!r} is not served here; choose one of: {', '.join(settings.models)}"
        )
    code = _language(language)
    if code is not None and chosen.endswith(".en") and code != "en":
        raise ValidationFailed(f"model {chosen!r} is English-only; it can't transcribe {code!r}")
    if isinstance(word_timestamps, str):
        flag = word_timestamps.strip().lower()
        if flag not in _TRUE | _FALSE:
            raise ValidationFailed("word_timestamps must be true or false")
        words = flag in _TRUE
    else:
        words = bool(word_timestamps)
    prompt = (initial_prompt or "").strip() or None
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise ValidationFailed(f"initial_prompt is longer than {MAX_PROMPT_CHARS} characters")
    if prompt is not None and "\x00" in prompt:
        raise ValidationFailed("initial_prompt may not contain NUL characters")
    diarization = parse_diarization(
        diarize,
        num_speakers=num_speakers,
        min_speakers=min_speakers,
        max_speakers=max_speakers,
        known_speakers=known_speakers,
    )
    return JobOptions(
        model=chosen,
        language=code,
        word_timestamps=words,
        initial_prompt=prompt,
        diarization=diarization,
    )


def parse_priority(value: str | None) -> str:
    """The job's priority (``high``, ``normal``, ``low``; empty means normal)."""
    text = (value or "").strip().lower() or Priority.NORMAL.value
    if text not in set(Priority):
        raise ValidationFailed(
            f"priority {value!r} is not one of: {', '.join(p.value for p in Priority)}"
        )
    return text


def parse_flag(value: bool | str | None, name: str) -> bool:
    """A boolean option as JSON or a form field sends it."""
    if not isinstance(value, str):
        return bool(value)
    flag = value.strip().lower()
    if flag not in _TRUE | _FALSE:
        raise ValidationFailed(f"{name} must be true or false")
    return flag in _TRUE


def _language(value: str | None) -> str | None:
    text = (value or "").strip().lower()
    if not text or text == "auto":
        return None
    if text in LANGUAGE_NAMES:
        return text
    if text in _LANGUAGE_BY_NAME:
        return _LANGUAGE_BY_NAME[text]
    raise ValidationFailed(f"language {value!r} is not one Whisper knows (use a code like 'en')")


def check_audio_url(url: str) -> str:
    """An absolute http(s) URL with a host; raises ``InvalidUrl`` otherwise."""
    text = url.strip()
    try:
        # urlsplit and .port raise ValueError on a broken IPv6 host or an out-of-range port.
        parts = urlsplit(text)
        hostname, _ = parts.hostname, parts.port
    except ValueError as exc:
        raise InvalidUrl(f"audio_url is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not hostname:
        raise InvalidUrl("audio_url must be an absolute http:// or https:// URL")
    # Control characters (NUL above all, which PostgreSQL text can't store) never belong in a URL.
    if re.search(r"[\s\x00-\x1f\x7f]", text) or len(text) > 4096:
        raise InvalidUrl("audio_url is not a valid URL")
    try:
        # What the fetcher will parse: catches hosts IDNA refuses (e.g. "xn--zz.com").
        _ = httpx.URL(text).host
    except (httpx.InvalidURL, ValueError) as exc:
        raise InvalidUrl(f"audio_url is not a valid URL: {exc}") from exc
    return text
