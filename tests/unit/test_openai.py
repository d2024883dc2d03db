"""The OpenAI-compatible layer on its own: reading the form, the answers' shapes, the stream.

The request a route receives and the transcript a job stores go in; what OpenAI's clients
parse comes out. The routes themselves are tested in ``tests/integration`` and, with
OpenAI's own client, in ``tests/e2e``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from service.core.errors import BadRequest, PayloadTooLarge, RateLimited
from service.core.settings import load_settings
from service.core.transcript import Transcript, TranscriptSegment, TranscriptWord
from service.jobs.formats import TranscriptFormat
from service.openai.answers import answer_body, ended_without_text
from service.openai.errors import InvalidParameter, ModelNotFound, openai_status
from service.openai.schemas import AudioRequest, TextDone, read_request
from service.openai.stream import Ended, Expired, Heartbeat, SegmentText, Step, text_events

SETTINGS = load_settings({}, whisper_model="tiny.en", extra_models=("base",))

TRANSCRIPT = Transcript(
    text="Hello there. General Kenobi.",
    language="en",
    duration=3.2,
    segments=[
        TranscriptSegment(
            id=0,
            start=0.0,
            end=1.4,
            text="Hello there.",
            words=[
                TranscriptWord(word=" Hello", start=0.0, end=0.6, probability=0.9),
                TranscriptWord(word=" there.", start=0.6, end=1.4, probability=0.8),
            ],
            avg_logprob=-0.2,
            no_speech_prob=0.01,
            temperature=0.0,
            compression_ratio=1.1,
            tokens=[1, 2],
        ),
        TranscriptSegment(id=1, start=1.5, end=3.2, text="General Kenobi.", words=[]),
    ],
)


def _read(task: str = "transcribe", **fields: str | list[str]) -> AudioRequest:
    values = {k: v if isinstance(v, list) else [v] for k, v in fields.items()}
    return read_request(SETTINGS, values, task=task)


def test_whisper_1_is_the_default_model_and_unknown_fields_are_ignored() -> None:
    asked = _read(model="whisper-1", **{"include[]": "logprobs", "chunking_strategy": "auto"})

    assert asked.options.model == "tiny.en"
    assert asked.options.task == "transcribe" and asked.options.temperature is None
    assert asked.response_format is TranscriptFormat.JSON and not asked.stream


def test_the_openai_fields_become_the_jobs_options() -> None:
    asked = _read(
        model="base",
        language="German",
        prompt="  Names: Kenobi.  ",
        temperature="0.3",
        response_format="verbose_json",
        stream="true",
        **{"timestamp_granularities[]": ["word", "segment"]},
    )

    options = asked.options
    assert (options.model, options.language, options.initial_prompt) == (
        "base",
        "de",
        "Names: Kenobi.",
    )
    assert options.temperature == 0.3 and options.word_timestamps
    assert asked.stream and asked.with_words and asked.with_segments


@pytest.mark.parametrize(
    "granularities,fmt,words,segments,timing",
    [
        ([], "verbose_json", False, True, False),
        (["segment"], "verbose_json", False, True, False),
        (["word"], "verbose_json", True, False, True),
        (["word"], "json", False, False, False),  # words cost an alignment pass: not for json
    ],
)
def test_granularities_decide_words_segments_and_word_timing(
    granularities: list[str], fmt: str, words: bool, segments: bool, timing: bool
) -> None:
    asked = _read(response_format=fmt, **{"timestamp_granularities[]": granularities})

    assert (asked.with_words, asked.with_segments) == (words, segments)
    assert asked.options.word_timestamps is timing


def test_a_translation_needs_a_multilingual_model() -> None:
    with pytest.raises(InvalidParameter) as refused:
        _read("translate", model="whisper-1")
    assert refused.value.param == "model" and "English-only" in refused.value.detail

    assert _read("translate", model="base").options.task == "translate"


@pytest.mark.parametrize(
    "fields,param",
    [
        ({"response_format": "mp3"}, "response_format"),
        ({"response_format": "diarized_json", "stream": "true"}, "stream"),
        ({"known_speaker_names[]": "SPEAKER_1"}, "known_speaker_names"),
        ({"known_speaker_references[]": "data:audio/wav;base64,AAAA"}, "known_speaker_references"),
        ({"temperature": "-0.1"}, "temperature"),
        ({"temperature": "nan"}, "temperature"),
        ({"temperature": "warm"}, "temperature"),
        ({"timestamp_granularities": "char"}, "timestamp_granularities"),
        ({"stream": "sometimes"}, "stream"),
        ({"language": "klingon"}, "language"),
        ({"language": "de"}, "language"),  # tiny.en can't hear German
        ({"prompt": "x" * 3000}, "prompt"),
    ],
)
def test_a_bad_field_is_named(fields: dict[str, str], param: str) -> None:
    with pytest.raises(InvalidParameter) as refused:
        _read(**fields)
    assert refused.value.param == param
    assert "initial_prompt" not in refused.value.detail


def test_diarized_json_diarizes_the_job_with_the_named_speakers() -> None:
    asked = _read(
        response_format="diarized_json",
        chunking_strategy="auto",
        **{"known_speaker_names[]": ["agent", "customer"]},
    )
    assert asked.diarized_json and not asked.stream
    assert asked.options.diarization == {"known_speakers": ["agent", "customer"]}
    assert _read(response_format="diarized_json").options.diarization == {}
    # Names alone diarize too; a plain request does not.
    assert _read(**{"known_speaker_names[]": "agent"}).options.diarization is not None
    assert _read().options.diarization is None


def test_diarized_json_is_transcriptions_only() -> None:
    with pytest.raises(InvalidParameter) as refused:
        _read("translate", model="base", response_format="diarized_json")
    assert refused.value.param == "response_format"


def test_diarized_json_is_openais_transcription_diarized() -> None:
    # Given a transcript with a known speaker between two anonymous ones
    segments = [
        msgspec.structs.replace(TRANSCRIPT.segments[0], id=0, speaker="SPEAKER_1"),
        msgspec.structs.replace(TRANSCRIPT.segments[1], id=1, speaker="A"),
        msgspec.structs.replace(TRANSCRIPT.segments[1], id=2, speaker="SPEAKER_2"),
        msgspec.structs.replace(TRANSCRIPT.segments[1], id=3, speaker=None),
    ]
    transcript = msgspec.structs.replace(TRANSCRIPT, segments=segments)
    # when it is answered as diarized_json
    body, media_type = answer_body(transcript, _read(response_format="diarized_json"))
    # then it parses as OpenAI's type: names kept, the others lettered past the names
    from openai.types.audio import TranscriptionDiarized

    parsed = TranscriptionDiarized.model_validate_json(body)
    assert media_type == "application/json"
    assert [s.speaker for s in parsed.segments] == ["B", "A", "C", "C"]
    assert [s.id for s in parsed.segments] == ["seg_0", "seg_1", "seg_2", "seg_3"]
    assert parsed.task == "transcribe" and parsed.text == TRANSCRIPT.text
    assert parsed.usage is not None and parsed.usage.type == "duration"
    assert {s.type for s in parsed.segments} == {"transcript.text.segment"}


def test_an_unknown_model_is_openais_404() -> None:
    with pytest.raises(ModelNotFound) as refused:
        _read(model="whisper-2")
    assert openai_status(refused.value) == 404
    assert "whisper-1, tiny.en, base" in refused.value.detail


@pytest.mark.parametrize(
    "error,status",
    [
        (InvalidParameter("x", param=None), 400),
        (BadRequest("x"), 400),
        (PayloadTooLarge("x"), 413),
        (RateLimited("x", retry_after=3), 429),
    ],
)
def test_statuses_follow_openai(error: Exception, status: int) -> None:
    assert openai_status(error) == status  # type: ignore[arg-type]


def test_json_is_the_text_with_the_audio_seconds_used() -> None:
    body, media_type = answer_body(TRANSCRIPT, _read())

    assert media_type == "application/json"
    assert json.loads(body) == {
        "text": "Hello there. General Kenobi.",
        "usage": {"seconds": 4, "type": "duration"},
    }
    translated, _ = answer_body(TRANSCRIPT, _read("translate", model="base"))
    assert json.loads(translated) == {"text": "Hello there. General Kenobi."}


def test_verbose_json_has_openais_fields() -> None:
    asked = _read(
        "translate",
        model="base",
        response_format="verbose_json",
        **{"timestamp_granularities[]": ["word", "segment"]},
    )

    body = json.loads(answer_body(TRANSCRIPT, asked)[0])

    assert body["task"] == "translate" and body["language"] == "english"
    assert body["duration"] == 3.2 and body["text"] == TRANSCRIPT.text
    assert body["words"] == [
        {"word": "Hello", "start": 0.0, "end": 0.6},
        {"word": "there.", "start": 0.6, "end": 1.4},
    ]
    assert body["segments"][1] == {
        "id": 1,
        "seek": 0,
        "start": 1.5,
        "end": 3.2,
        "text": "General Kenobi.",
        "tokens": [],
        "temperature": 0.0,
        "avg_logprob": 0.0,
        "compression_ratio": 0.0,
        "no_speech_prob": 0.0,
    }
    assert "usage" not in body  # OpenAI's TranslationVerbose has none


@pytest.mark.parametrize("fmt,media", [("text", "text/plain"), ("srt", "application/x-subrip")])
def test_text_formats_are_steno_renderings(fmt: str, media: str) -> None:
    body, media_type = answer_body(TRANSCRIPT, _read(response_format=fmt))
    assert media_type.startswith(media)
    assert body.decode().startswith("Hello there." if fmt == "text" else "1\n00:00:00,000 --> ")


class _Row:
    def __init__(self, status: str, error_code: str | None = None) -> None:
        self.status = status
        self.error_code = error_code
        self.error_detail = "ffprobe found no audio" if error_code else None


@pytest.mark.parametrize(
    "row,status,code",
    [
        (None, 404, "job_not_found"),
        (_Row("cancelled"), 409, "job_cancelled"),
        (_Row("failed", "invalid_audio"), 400, "invalid_audio"),
        (_Row("failed", "too_many_attempts"), 500, "too_many_attempts"),
    ],
)
def test_a_job_without_text_answers_an_error_naming_it(row: Any, status: int, code: str) -> None:
    answered, body = ended_without_text("j-1", row)

    assert answered == status
    assert body.error.code == code and "j-1" in body.error.message
    assert body.error.type == ("server_error" if status >= 500 else "invalid_request_error")


async def _steps(*steps: Step) -> AsyncIterator[Step]:
    for step in steps:
        yield step


async def test_a_stream_is_deltas_heartbeats_done_and_the_end_line() -> None:
    beats: list[int] = []

    async def beat() -> None:
        beats.append(1)

    async def ended(_: Ended) -> TextDone:
        return TextDone(text="Hello there. General Kenobi.")

    chunks = [
        chunk
        async for chunk in text_events(
            _steps(
                SegmentText(0, "Hello there."),
                Heartbeat(),
                SegmentText(1, " "),  # a blank segment adds nothing
                SegmentText(2, "General Kenobi."),
                Ended(None),
            ),
            ended=ended,
            expired=lambda: pytest.fail("not expired"),
            on_heartbeat=beat,
        )
    ]

    assert chunks == [
        b'data: {"type":"transcript.text.delta","delta":"Hello there."}\n\n',
        b": heartbeat\n\n",
        b'data: {"type":"transcript.text.delta","delta":" General Kenobi."}\n\n',
        b'data: {"type":"transcript.text.done","text":"Hello there. General Kenobi."}\n\n',
        b"data: [DONE]\n\n",
    ]
    assert beats == [1]


async def test_a_stream_that_runs_out_of_time_ends_with_one_error_event() -> None:
    _, error = ended_without_text("j-2", None)

    async def ended(_: Ended) -> TextDone:
        raise AssertionError("not ended")

    chunks = [
        c
        async for c in text_events(
            _steps(SegmentText(0, "Hi."), Expired(), SegmentText(1, "never")),
            ended=ended,
            expired=lambda: error,
            on_heartbeat=lambda: pytest.fail("no heartbeat"),  # type: ignore[arg-type,return-value]
        )
    ]

    assert len(chunks) == 2
    assert (
        msgspec.json.decode(chunks[1].removeprefix(b"data: "))["error"]["code"] == "job_not_found"
    )
