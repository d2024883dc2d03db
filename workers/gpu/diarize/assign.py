"""Giving a transcript's segments and words their speakers from the diarization's turns.

A word takes the speaker whose turns overlap it most (the nearest turn when none does); a
segment whose words change speaker is split at those word boundaries. Anonymous clusters are
labelled ``SPEAKER_1``, ``SPEAKER_2``, ... in order of first appearance; known names stay.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from service.core.transcript import Transcript, TranscriptSegment, TranscriptWord
from workers.gpu.diarize.turns import Turn

__all__ = ["assign_speakers", "speaker_at"]


def speaker_at(turns: Sequence[Turn], start: float, end: float) -> str | None:
    """The speaker who talks most within [start, end], else the nearest turn's; None if none."""
    if not turns:
        return None
    overlap: dict[str, float] = {}
    for turn in turns:
        shared = min(end, turn.end) - max(start, turn.start)
        if shared > 0:
            overlap[turn.speaker] = overlap.get(turn.speaker, 0.0) + shared
    if overlap:
        return max(overlap.items(), key=lambda item: item[1])[0]
    middle = (start + end) / 2
    nearest = min(turns, key=lambda t: min(abs(middle - t.start), abs(middle - t.end)))
    return nearest.speaker


def assign_speakers(transcript: Transcript, turns: Sequence[Turn]) -> Transcript:
    """``transcript`` with a speaker on every segment and word; segments split at changes.

    Segment ids are renumbered from 0 when a split adds segments; the full text is unchanged.
    """
    pieces: list[TranscriptSegment] = []
    for segment in transcript.segments:
        pieces.extend(_split(segment, turns))
    labels = _labels(piece.speaker for piece in pieces)
    segments = [
        msgspec.structs.replace(
            piece,
            id=number,
            speaker=labels.get(piece.speaker or ""),
            words=[
                msgspec.structs.replace(word, speaker=labels.get(word.speaker or ""))
                for word in piece.words
            ]
            if piece.words is not None
            else None,
        )
        for number, piece in enumerate(pieces)
    ]
    return msgspec.structs.replace(transcript, segments=segments)


def _split(segment: TranscriptSegment, turns: Sequence[Turn]) -> list[TranscriptSegment]:
    if not segment.words:
        speaker = speaker_at(turns, segment.start, segment.end)
        return [msgspec.structs.replace(segment, speaker=speaker)]
    words = [
        msgspec.structs.replace(word, speaker=speaker_at(turns, word.start, word.end))
        for word in segment.words
    ]
    runs: list[list[TranscriptWord]] = []
    for word in words:
        if runs and runs[-1][-1].speaker == word.speaker:
            runs[-1].append(word)
        else:
            runs.append([word])
    if len(runs) == 1:
        return [msgspec.structs.replace(segment, words=words, speaker=words[0].speaker)]
    # Decoding statistics belong to the whole segment, so each piece keeps them as they are;
    # the token ids can't be divided by word, so the pieces carry none.
    return [
        msgspec.structs.replace(
            segment,
            start=segment.start if index == 0 else run[0].start,
            end=segment.end if index == len(runs) - 1 else run[-1].end,
            text="".join(word.word for word in run),
            words=run,
            tokens=None,
            speaker=run[0].speaker,
        )
        for index, run in enumerate(runs)
    ]


def _labels(speakers: Iterable[str | None]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for speaker in speakers:
        if speaker is None or speaker in labels:
            continue
        if speaker.startswith("#"):
            labels[speaker] = f"SPEAKER_{sum(1 for k in labels if k.startswith('#')) + 1}"
        else:
            labels[speaker] = speaker
    return labels
