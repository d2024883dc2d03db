"""What an OpenAI audio request asks for (its form fields, checked) and the answers' shapes.

The form is OpenAI's: ``file``, ``model``, ``language``, ``prompt``, ``response_format``,
``temperature``, ``timestamp_granularities[]``, ``stream`` and ``known_speaker_names[]``.
Fields OpenAI has and Steno does not use (``include[]``, ``chunking_strategy``, ...) are
ignored, as OpenAI ignores fields it does not know. ``model`` is a model Steno serves, or
``whisper-1`` for the default.

``response_format=diarized_json`` (transcriptions only, not streamed) diarizes the job and
answers OpenAI's ``TranscriptionDiarized``. ``known_speaker_names[]`` names speakers the
owner enrolled with ``POST /v1/speakers`` (and diarizes the job whatever the format);
``known_speaker_references[]`` (voices as data URLs) is refused: enrol them instead.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from service.core.errors import ValidationFailed
from service.core.settings import Settings
from service.jobs.formats import TranscriptFormat
from service.jobs.options import JobOptions, parse_options
from service.openai.errors import InvalidParameter, ModelNotFound

# OpenAI's name for Whisper: served by Steno's default model.
WHISPER_1 = "whisper-1"
TRANSCRIBE = "transcribe"
TRANSLATE = "translate"
WORD = "word"
SEGMENT = "segment"
DIARIZED_JSON = "diarized_json"
_SPEAKER_FIELDS = ("known_speaker_names[]", "known_speaker_names")
_REFERENCE_FIELDS = ("known_speaker_references[]", "known_speaker_references")
_GRANULARITY_FIELDS = ("timestamp_granularities[]", "timestamp_granularities")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class AudioRequest:
    """One OpenAI audio request, checked: the job's options and how to answer."""

    options: JobOptions
    response_format: TranscriptFormat
    granularities: frozenset[str]
    stream: bool
    # response_format=diarized_json: answered as OpenAI's TranscriptionDiarized.
    diarized_json: bool = False

    @property
    def task(self) -> str:
        """``transcribe`` or ``translate``."""
        return self.options.task

    @property
    def with_words(self) -> bool:
        """Whether ``verbose_json`` carries ``words`` (asked with ``timestamp_granularities[]``)."""
        return self.response_format is TranscriptFormat.VERBOSE_JSON and WORD in self.granularities

    @property
    def with_segments(self) -> bool:
        """Whether ``verbose_json`` carries ``segments`` (by default, or when asked)."""
        return self.response_format is TranscriptFormat.VERBOSE_JSON and (
            not self.granularities or SEGMENT in self.granularities
        )


def _one(values: Mapping[str, list[str]], name: str) -> str | None:
    found = values.get(name)
    text = found[-1].strip() if found else ""
    return text or None


def _model(settings: Settings, value: str | None) -> str:
    if value is None or value == WHISPER_1:
        return settings.whisper_model
    if value not in settings.models:
        served = ", ".join((WHISPER_1, *settings.models))
        raise ModelNotFound(f"the model {value!r} does not exist here; use one of: {served}")
    return value


def _format(value: str | None) -> TranscriptFormat:
    try:
        return TranscriptFormat(value or TranscriptFormat.JSON)
    except ValueError:
        choices = ", ".join(f.value for f in TranscriptFormat)
        raise InvalidParameter(
            f"response_format {value!r} is not supported; use one of: {choices}",
            param="response_format",
        ) from None


def _temperature(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0.0 <= number <= 1.0:
        raise InvalidParameter(
            f"temperature must be a number from 0 to 1 (got {value!r})", param="temperature"
        )
    return number


def _granularities(values: Mapping[str, list[str]]) -> frozenset[str]:
    asked = {v.strip() for name in _GRANULARITY_FIELDS for v in values.get(name, []) if v.strip()}
    unknown = asked - {WORD, SEGMENT}
    if unknown:
        raise InvalidParameter(
            f"timestamp_granularities[] takes 'word' and 'segment' (got {sorted(unknown)})",
            param="timestamp_granularities",
        )
    return frozenset(asked)


def _flag(value: str | None, name: str) -> bool:
    text = (value or "false").lower()
    if text not in _TRUE | _FALSE:
        raise InvalidParameter(f"{name} must be true or false", param=name)
    return text in _TRUE


def read_request(settings: Settings, values: Mapping[str, list[str]], *, task: str) -> AudioRequest:
    """Check an OpenAI form's fields (every value of each, in order) for a job of ``task``.

    Raises ``ModelNotFound`` for a model Steno does not serve, and ``InvalidParameter``
    (naming the field) for any other value it can't use, such as a translation by an
    English-only model or a language such a model can't hear.
    """
    model = _model(settings, _one(values, "model"))
    if task == TRANSLATE and model.endswith(".en"):
        raise InvalidParameter(
            f"model {model!r} is English-only and can't translate; use a multilingual model "
            f"({', '.join(m for m in settings.models if not m.endswith('.en')) or 'none here'})",
            param="model",
        )
    asked_format = _one(values, "response_format")
    diarized_json = asked_format == DIARIZED_JSON
    response_format = TranscriptFormat.JSON if diarized_json else _format(asked_format)
    granularities = _granularities(values)
    stream = _flag(_one(values, "stream"), "stream")
    names = [v for name in _SPEAKER_FIELDS for v in values.get(name, []) if v.strip()]
    _check_diarized(task, diarized_json=diarized_json, stream=stream, values=values)
    try:
        options = parse_options(
            settings,
            model=model,
            language=_one(values, "language"),
            # Word timing costs an alignment pass: only when the answer will show words.
            word_timestamps=response_format is TranscriptFormat.VERBOSE_JSON
            and WORD in granularities,
            initial_prompt=_one(values, "prompt"),
            diarize=diarized_json or bool(names),
            known_speakers=names,
        )
    except ValidationFailed as exc:
        param = "prompt" if "initial_prompt" in exc.detail else "language"
        if "speaker" in exc.detail:
            param = "known_speaker_names"
        raise InvalidParameter(exc.detail.replace("initial_prompt", "prompt"), param=param) from exc
    return AudioRequest(
        options=dataclasses.replace(
            options, task=task, temperature=_temperature(_one(values, "temperature"))
        ),
        response_format=response_format,
        granularities=granularities,
        stream=stream,
        diarized_json=diarized_json,
    )


def _check_diarized(
    task: str, *, diarized_json: bool, stream: bool, values: Mapping[str, list[str]]
) -> None:
    if diarized_json and task != TRANSCRIBE:
        raise InvalidParameter(
            "diarized_json is a transcription format; translations don't have it",
            param="response_format",
        )
    if diarized_json and stream:
        raise InvalidParameter(
            "diarized_json is not streamed here; send it without stream=true", param="stream"
        )
    if any(v.strip() for name in _REFERENCE_FIELDS for v in values.get(name, [])):
        raise InvalidParameter(
            "known_speaker_references[] is not supported here: enrol each voice once with "
            "POST /v1/speakers (a name and a 2-60 s clip), then send only known_speaker_names[]",
            param="known_speaker_references",
        )


class Usage(msgspec.Struct):
    """What OpenAI bills Whisper by: the audio's length in whole seconds."""

    seconds: int
    type: str = "duration"


class TextAnswer(msgspec.Struct, omit_defaults=True):
    """``response_format=json``: OpenAI's ``Transcription`` (or ``Translation``)."""

    text: str
    usage: Usage | None = None


class Word(msgspec.Struct):
    """One word of ``verbose_json``'s ``words``."""

    word: str
    start: float
    end: float


class Segment(msgspec.Struct):
    """One segment of ``verbose_json``'s ``segments``, with Whisper's decoding statistics."""

    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class VerboseAnswer(msgspec.Struct, omit_defaults=True):
    """``response_format=verbose_json``: OpenAI's ``TranscriptionVerbose``."""

    task: str
    language: str
    duration: float
    text: str
    words: list[Word] | None = None
    segments: list[Segment] | None = None
    usage: Usage | None = None


class DiarizedSegment(msgspec.Struct):
    """One segment of ``diarized_json``: OpenAI's ``TranscriptionDiarizedSegment``."""

    id: str
    start: float
    end: float
    text: str
    speaker: str
    type: str = "transcript.text.segment"


class DiarizedUsage(msgspec.Struct):
    """``diarized_json``'s usage: the audio's duration (a number, as OpenAI's type has it)."""

    seconds: float
    type: str = "duration"


class DiarizedAnswer(msgspec.Struct):
    """``response_format=diarized_json``: OpenAI's ``TranscriptionDiarized``."""

    task: str
    duration: float
    text: str
    segments: list[DiarizedSegment]
    usage: DiarizedUsage


class TextDelta(msgspec.Struct, tag_field="type", tag="transcript.text.delta"):
    """A streamed piece of the text, as Whisper decoded it."""

    delta: str


class TextDone(msgspec.Struct, tag_field="type", tag="transcript.text.done"):
    """The last streamed event: the whole text."""

    text: str
