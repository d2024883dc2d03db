"""Speaker assignment, splitting at word boundaries, options and speaker-aware rendering."""

from __future__ import annotations

import msgspec
import pytest

from service.core.errors import ValidationFailed
from service.core.transcript import Transcript, TranscriptSegment, TranscriptWord
from service.jobs.formats import TranscriptFormat, render
from service.speakers.options import check_speaker_name, parse_diarization
from workers.gpu.diarize.assign import assign_speakers, speaker_at
from workers.gpu.diarize.turns import Turn


def _words(*spans: tuple[str, float, float]) -> list[TranscriptWord]:
    return [TranscriptWord(word=w, start=a, end=b, probability=0.9) for w, a, b in spans]


TURNS = [Turn(0.0, 2.0, "#1"), Turn(2.2, 4.0, "#0"), Turn(4.2, 6.0, "#1")]


def test_a_segment_straddling_a_change_is_split_at_the_word_boundary() -> None:
    # given one segment whose first two words fall in one turn and the last two in another
    words = _words(
        (" Hello", 0.2, 0.8), (" there.", 0.9, 1.8), (" Hi", 2.3, 2.8), (" you.", 2.9, 3.5)
    )
    transcript = Transcript(
        text="Hello there. Hi you.",
        language="en",
        duration=6.0,
        segments=[
            TranscriptSegment(
                id=0, start=0.0, end=3.6, text=" Hello there. Hi you.", words=words, tokens=[1, 2]
            )
        ],
    )
    # when speakers are assigned
    out = assign_speakers(transcript, TURNS)
    # then the segment is split in two, labelled in order of first appearance
    assert [(s.id, s.start, s.end, s.text, s.speaker) for s in out.segments] == [
        (0, 0.0, 1.8, " Hello there.", "SPEAKER_1"),
        (1, 2.3, 3.6, " Hi you.", "SPEAKER_2"),
    ]
    assert [w.speaker for w in out.segments[1].words or ()] == ["SPEAKER_2", "SPEAKER_2"]
    assert out.text == transcript.text


def test_segments_without_words_take_the_speaker_who_talks_most() -> None:
    segments = [
        TranscriptSegment(id=0, start=0.0, end=2.1, text=" One."),
        TranscriptSegment(id=1, start=2.1, end=4.1, text=" Two."),
        TranscriptSegment(id=2, start=4.1, end=6.0, text=" Three."),
    ]
    out = assign_speakers(Transcript("One. Two. Three.", "en", 6.0, segments), TURNS)
    assert [s.speaker for s in out.segments] == ["SPEAKER_1", "SPEAKER_2", "SPEAKER_1"]


def test_known_names_are_kept_and_a_gap_takes_the_nearest_turn() -> None:
    turns = [Turn(0.0, 1.0, "alice"), Turn(3.0, 4.0, "#0")]
    assert speaker_at(turns, 1.2, 1.4) == "alice"
    assert speaker_at(turns, 2.7, 2.9) == "#0"
    assert speaker_at([], 0.0, 1.0) is None
    segments = [
        TranscriptSegment(id=0, start=3.0, end=4.0, text=" B."),
        TranscriptSegment(id=1, start=0.0, end=1.0, text=" A."),
    ]
    out = assign_speakers(Transcript("B. A.", "en", 4.0, segments), turns)
    assert [s.speaker for s in out.segments] == ["SPEAKER_1", "alice"]


DIARIZED = Transcript(
    text="Hello there. Hi you.",
    language="en",
    duration=4.0,
    segments=[
        TranscriptSegment(id=0, start=0.0, end=1.8, text=" Hello there.", speaker="SPEAKER_1"),
        TranscriptSegment(id=1, start=2.3, end=3.0, text=" Hi", speaker="SPEAKER_2"),
        TranscriptSegment(id=2, start=3.0, end=3.6, text=" you.", speaker="SPEAKER_2"),
    ],
)


def test_text_srt_and_vtt_carry_the_speaker() -> None:
    text, _ = render(DIARIZED, TranscriptFormat.TEXT)
    assert text.decode() == "SPEAKER_1: Hello there.\nSPEAKER_2: Hi you.\n"
    srt, _ = render(DIARIZED, TranscriptFormat.SRT)
    assert "00:00:00,000 --> 00:00:01,800\nSPEAKER_1: Hello there.\n" in srt.decode()
    vtt, _ = render(DIARIZED, TranscriptFormat.VTT)
    assert "00:00:02.300 --> 00:00:03.000\n<v SPEAKER_2>Hi\n" in vtt.decode()


def test_json_and_verbose_json_carry_the_speaker_only_when_diarized() -> None:
    body = msgspec.json.decode(render(DIARIZED, TranscriptFormat.JSON)[0])
    assert [s["speaker"] for s in body["segments"]] == ["SPEAKER_1", "SPEAKER_2", "SPEAKER_2"]
    verbose = msgspec.json.decode(render(DIARIZED, TranscriptFormat.VERBOSE_JSON)[0])
    assert verbose["segments"][0]["speaker"] == "SPEAKER_1"
    plain = msgspec.structs.replace(
        DIARIZED, segments=[msgspec.structs.replace(s, speaker=None) for s in DIARIZED.segments]
    )
    assert render(plain, TranscriptFormat.JSON)[0] == b'{"text":"Hello there. Hi you."}'
    assert b"speaker" not in render(plain, TranscriptFormat.VERBOSE_JSON)[0]
    assert render(plain, TranscriptFormat.TEXT)[0] == b"Hello there. Hi you.\n"
    assert b"<v " not in render(plain, TranscriptFormat.VTT)[0]


def test_diarization_options() -> None:
    assert parse_diarization(None) is None
    assert parse_diarization("false") is None
    assert parse_diarization("true") == {}
    assert parse_diarization(True, num_speakers="3") == {"num_speakers": 3}
    assert parse_diarization("on", min_speakers=2, max_speakers="4") == {
        "min_speakers": 2,
        "max_speakers": 4,
    }
    for bad in (
        {"num_speakers": 0},
        {"num_speakers": 11},
        {"num_speakers": "two"},
        {"min_speakers": 3, "max_speakers": 2},
        {"num_speakers": 2, "max_speakers": 3},
    ):
        with pytest.raises(ValidationFailed):
            parse_diarization(True, **bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationFailed):
        parse_diarization(None, num_speakers=2)
    with pytest.raises(ValidationFailed):
        parse_diarization("maybe")


def test_known_speakers_imply_diarization_and_are_checked() -> None:
    # A list, a repeated field or commas: one ordered list without duplicates.
    assert parse_diarization(None, known_speakers=["alice, bob", "alice"]) == {
        "known_speakers": ["alice", "bob"]
    }
    assert parse_diarization("true", known_speakers="Zoë O'Neil") == {
        "known_speakers": ["Zoë O'Neil"]
    }
    assert parse_diarization(None, known_speakers=[" ", ""]) is None
    with pytest.raises(ValidationFailed, match="diarize=false"):
        parse_diarization("false", known_speakers=["alice"])
    with pytest.raises(ValidationFailed, match="at most"):
        parse_diarization(True, known_speakers=[f"s{n}" for n in range(11)])


@pytest.mark.parametrize(
    "name", ["", " ", "x" * 65, "SPEAKER_1", "speaker_12", "a:b", "<v>", "_lead", "-x", "a/b"]
)
def test_a_bad_speaker_name_is_refused(name: str) -> None:
    with pytest.raises(ValidationFailed):
        check_speaker_name(name)


@pytest.mark.parametrize("name", ["alice", "Dr. J. Smith", "SPEAKER_", "speaker one", "李雷", "7"])
def test_a_good_speaker_name_is_kept(name: str) -> None:
    assert check_speaker_name(f" {name} ") == name
