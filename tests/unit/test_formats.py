"""Each output format of a stored transcript, including the timing edge cases."""

from __future__ import annotations

import json
import math
import re

import pytest

from service.core.transcript import Transcript, TranscriptSegment, TranscriptWord
from service.jobs.formats import (
    LANGUAGE_NAMES,
    TranscriptFormat,
    language_name,
    render,
)


def _transcript(*segments: TranscriptSegment, language: str = "en") -> Transcript:
    return Transcript(
        text="".join(segment.text for segment in segments),
        language=language,
        duration=max((segment.end for segment in segments), default=0.0),
        segments=list(segments),
    )


SMALL = _transcript(
    TranscriptSegment(
        id=0,
        start=1.0,
        end=2.5,
        text=" Hello there.",
        words=[
            TranscriptWord(word=" Hello", start=1.0, end=1.6, probability=0.9),
            TranscriptWord(word=" there.", start=1.6, end=2.5, probability=0.8),
        ],
        avg_logprob=-0.25,
        no_speech_prob=0.01,
        temperature=0.0,
        compression_ratio=1.1,
        tokens=[50364, 2425, 456, 13],
    ),
    TranscriptSegment(id=1, start=2.5, end=4.0, text=" General Kenobi!"),
)


def _text(fmt: TranscriptFormat, transcript: Transcript = SMALL) -> str:
    body, _ = render(transcript, fmt)
    return body.decode("utf-8")


SRT_CUE = re.compile(
    r"(\d+)\n(\d{2,}):([0-5]\d):([0-5]\d),(\d{3}) --> (\d{2,}):([0-5]\d):([0-5]\d),(\d{3})\n"
    r"((?:[^\n]+\n)+)\n"
)
VTT_CUE = re.compile(
    r"(\d{2,}):([0-5]\d):([0-5]\d)\.(\d{3}) --> (\d{2,}):([0-5]\d):([0-5]\d)\.(\d{3})\n"
    r"((?:[^\n]+\n)+)\n"
)


def _ms(h: str, m: str, s: str, ms: str) -> int:
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms)


def parse_srt(body: str) -> list[tuple[int, int, int, str]]:
    """Parse SRT strictly: the whole body must be cues; returns (number, start, end, text)."""
    cues = []
    position = 0
    while position < len(body):
        match = SRT_CUE.match(body, position)
        assert match, f"unparseable SRT at {position}: {body[position : position + 40]!r}"
        g = match.groups()
        cues.append((int(g[0]), _ms(*g[1:5]), _ms(*g[5:9]), g[9].rstrip("\n")))
        position = match.end()
    return cues


def parse_vtt(body: str) -> list[tuple[int, int, str]]:
    """Parse WebVTT strictly: header, then only cues; returns (start, end, text)."""
    assert body.startswith("WEBVTT\n\n")
    cues = []
    position = len("WEBVTT\n\n")
    while position < len(body):
        match = VTT_CUE.match(body, position)
        assert match, f"unparseable VTT at {position}: {body[position : position + 40]!r}"
        g = match.groups()
        cues.append((_ms(*g[0:4]), _ms(*g[4:8]), g[8].rstrip("\n")))
        position = match.end()
    return cues


def test_json() -> None:
    body, media_type = render(SMALL, TranscriptFormat.JSON)
    assert media_type == "application/json"
    assert json.loads(body) == {"text": " Hello there. General Kenobi!"}


def test_verbose_json() -> None:
    body, media_type = render(SMALL, TranscriptFormat.VERBOSE_JSON)
    assert media_type == "application/json"
    data = json.loads(body)
    assert data["task"] == "transcribe"
    assert data["language"] == "english"
    assert data["duration"] == 4.0
    assert data["text"] == " Hello there. General Kenobi!"
    assert data["segments"][0] == {
        "id": 0,
        "seek": 0,
        "start": 1.0,
        "end": 2.5,
        "text": " Hello there.",
        "tokens": [50364, 2425, 456, 13],
        "temperature": 0.0,
        "avg_logprob": -0.25,
        "compression_ratio": 1.1,
        "no_speech_prob": 0.01,
        # whisper's own shape: the segment's words with their probability
        "words": [
            {"word": "Hello", "start": 1.0, "end": 1.6, "probability": 0.9},
            {"word": "there.", "start": 1.6, "end": 2.5, "probability": 0.8},
        ],
    }
    # Unknown statistics are numbers, not null: OpenAI's typed clients require them.
    assert data["segments"][1] == {
        "id": 1,
        "seek": 0,
        "start": 2.5,
        "end": 4.0,
        "text": " General Kenobi!",
        "tokens": [],
        "temperature": 0.0,
        "avg_logprob": 0.0,
        "compression_ratio": 0.0,
        "no_speech_prob": 0.0,
    }
    # OpenAI's flat list, words without Whisper's leading space
    assert data["words"] == [
        {"word": "Hello", "start": 1.0, "end": 1.6},
        {"word": "there.", "start": 1.6, "end": 2.5},
    ]


def test_verbose_json_without_words_has_no_words_key() -> None:
    transcript = _transcript(TranscriptSegment(id=0, start=0.0, end=1.0, text="Hi"))
    data = json.loads(render(transcript, TranscriptFormat.VERBOSE_JSON)[0])
    assert "words" not in data


def test_verbose_json_cleans_non_finite_numbers() -> None:
    transcript = Transcript(
        text="x",
        language="en",
        duration=math.nan,
        segments=[
            TranscriptSegment(id=0, start=-1.0, end=math.inf, text="x", avg_logprob=math.nan)
        ],
    )
    data = json.loads(render(transcript, TranscriptFormat.VERBOSE_JSON)[0])
    assert data["duration"] == 0.0
    assert data["segments"][0]["start"] == 0.0
    assert data["segments"][0]["end"] == 0.0
    assert data["segments"][0]["avg_logprob"] == 0.0


def test_text() -> None:
    body, media_type = render(SMALL, TranscriptFormat.TEXT)
    assert media_type == "text/plain; charset=utf-8"
    assert body == b"Hello there. General Kenobi!\n"


def test_srt() -> None:
    body, media_type = render(SMALL, TranscriptFormat.SRT)
    assert media_type == "application/x-subrip; charset=utf-8"
    assert body.decode() == (
        "1\n00:00:01,000 --> 00:00:02,500\nHello there.\n\n"
        "2\n00:00:02,500 --> 00:00:04,000\nGeneral Kenobi!\n\n"
    )
    assert parse_srt(body.decode()) == [
        (1, 1000, 2500, "Hello there."),
        (2, 2500, 4000, "General Kenobi!"),
    ]


def test_vtt() -> None:
    body, media_type = render(SMALL, TranscriptFormat.VTT)
    assert media_type == "text/vtt; charset=utf-8"
    assert body.decode() == (
        "WEBVTT\n\n"
        "00:00:01.000 --> 00:00:02.500\nHello there.\n\n"
        "00:00:02.500 --> 00:00:04.000\nGeneral Kenobi!\n\n"
    )
    assert parse_vtt(body.decode()) == [
        (1000, 2500, "Hello there."),
        (2500, 4000, "General Kenobi!"),
    ]


def test_rounding_carries_into_the_next_unit() -> None:
    transcript = _transcript(
        TranscriptSegment(id=0, start=59.9996, end=3599.9999, text="carry"),
    )
    srt = _text(TranscriptFormat.SRT, transcript)
    assert "00:01:00,000 --> 01:00:00,000" in srt
    assert ",1000" not in srt
    vtt = _text(TranscriptFormat.VTT, transcript)
    assert "00:01:00.000 --> 01:00:00.000" in vtt


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.0004, "00:00:00,000"),
        (0.0006, "00:00:00,001"),
        (1.0005, "00:00:01,000"),  # 1000.4999... in binary: rounds down
        (59.999, "00:00:59,999"),
        (-3.0, "00:00:00,000"),
        (math.nan, "00:00:00,000"),
        (math.inf, "00:00:00,000"),
    ],
)
def test_timestamp_edges(seconds: float, expected: str) -> None:
    transcript = _transcript(TranscriptSegment(id=0, start=seconds, end=seconds, text="t"))
    assert parse_srt(_text(TranscriptFormat.SRT, transcript))
    assert _text(TranscriptFormat.SRT, transcript).splitlines()[1].startswith(expected)


def test_hours() -> None:
    transcript = _transcript(
        TranscriptSegment(id=0, start=3723.456, end=3725.0, text="late"),
        TranscriptSegment(id=1, start=360000.0, end=360001.5, text="very late"),
    )
    srt = _text(TranscriptFormat.SRT, transcript)
    assert "01:02:03,456 --> 01:02:05,000" in srt
    assert "100:00:00,000 --> 100:00:01,500" in srt
    assert parse_srt(srt)[1][1] == 360_000_000
    vtt = _text(TranscriptFormat.VTT, transcript)
    assert "01:02:03.456 --> 01:02:05.000" in vtt
    assert parse_vtt(vtt)[1][:2] == (360_000_000, 360_001_500)


def test_empty_transcript() -> None:
    empty = Transcript(text="", language="en", duration=0.0, segments=[])
    assert json.loads(render(empty, TranscriptFormat.JSON)[0]) == {"text": ""}
    verbose = json.loads(render(empty, TranscriptFormat.VERBOSE_JSON)[0])
    assert verbose["segments"] == []
    assert "words" not in verbose
    assert render(empty, TranscriptFormat.TEXT)[0] == b"\n"
    assert render(empty, TranscriptFormat.SRT)[0] == b""
    assert render(empty, TranscriptFormat.VTT)[0] == b"WEBVTT\n\n"


def test_cue_numbering_skips_empty_segments() -> None:
    transcript = _transcript(
        TranscriptSegment(id=0, start=0.0, end=1.0, text=" one"),
        TranscriptSegment(id=1, start=1.0, end=2.0, text="   "),
        TranscriptSegment(id=2, start=2.0, end=3.0, text=""),
        TranscriptSegment(id=3, start=3.0, end=4.0, text=" two "),
    )
    assert parse_srt(_text(TranscriptFormat.SRT, transcript)) == [
        (1, 0, 1000, "one"),
        (2, 3000, 4000, "two"),
    ]
    assert [cue[2] for cue in parse_vtt(_text(TranscriptFormat.VTT, transcript))] == [
        "one",
        "two",
    ]


def test_cue_text_cannot_break_the_cue_structure() -> None:
    transcript = _transcript(
        TranscriptSegment(id=0, start=2.0, end=1.0, text="a --> b\n\n  c  \n"),
        TranscriptSegment(id=1, start=3.0, end=4.0, text="next"),
    )
    cues = parse_srt(_text(TranscriptFormat.SRT, transcript))
    assert cues == [(1, 2000, 2000, "a -> b\nc"), (2, 3000, 4000, "next")]
    assert len(parse_vtt(_text(TranscriptFormat.VTT, transcript))) == 2


def test_unicode_text() -> None:
    transcript = _transcript(
        TranscriptSegment(id=0, start=0.0, end=1.5, text=" Grüße, 世界! 🎙️"),
        TranscriptSegment(id=1, start=1.5, end=2.0, text=" Ça va?"),
        language="de",
    )
    assert json.loads(render(transcript, TranscriptFormat.JSON)[0])["text"] == (
        " Grüße, 世界! 🎙️ Ça va?"
    )
    assert json.loads(render(transcript, TranscriptFormat.VERBOSE_JSON)[0])["language"] == (
        "german"
    )
    assert _text(TranscriptFormat.TEXT, transcript) == "Grüße, 世界! 🎙️ Ça va?\n"
    assert parse_srt(_text(TranscriptFormat.SRT, transcript))[0][3] == "Grüße, 世界! 🎙️"
    assert parse_vtt(_text(TranscriptFormat.VTT, transcript))[1][2] == "Ça va?"


def test_language_names() -> None:
    assert len(LANGUAGE_NAMES) >= 99
    assert language_name("en") == "english"
    assert language_name("yue") == "cantonese"
    assert language_name("EN") == "english"
    assert language_name("english") == "english"
    assert language_name("xx") == "xx"


def test_every_format_has_its_media_type() -> None:
    expected = {
        "json": "application/json",
        "verbose_json": "application/json",
        "text": "text/plain; charset=utf-8",
        "srt": "application/x-subrip; charset=utf-8",
        "vtt": "text/vtt; charset=utf-8",
    }
    assert {fmt.value: render(SMALL, fmt)[1] for fmt in TranscriptFormat} == expected
    assert TranscriptFormat("verbose_json") is TranscriptFormat.VERBOSE_JSON
