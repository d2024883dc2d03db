"""The stored shape of a finished transcript, shared by the API and the workers.

These are frozen msgspec Structs so that a worker can encode a transcript once, the API can
decode it without validation code of its own, and neither side can mutate a shared value.
"""

from __future__ import annotations

import msgspec

__all__ = ["Transcript", "TranscriptSegment", "TranscriptWord"]


class TranscriptWord(msgspec.Struct, frozen=True):
    """One recognised word with its time span in seconds and the model's confidence."""

    word: str
    start: float
    end: float
    probability: float
    # The word's speaker label, only in diarized transcripts.
    speaker: str | None = None


class TranscriptSegment(msgspec.Struct, frozen=True):
    """One decoded segment; the optional fields are whisper's per-segment decoding statistics.

    Statistics are optional because not every backend reports them, and renderers must not
    invent values they cannot know beyond what the output format requires.
    """

    id: int
    start: float
    end: float
    text: str
    words: list[TranscriptWord] | None = None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    temperature: float | None = None
    compression_ratio: float | None = None
    tokens: list[int] | None = None
    # The segment's speaker label (SPEAKER_1, ... or a known speaker's name), only when diarized.
    speaker: str | None = None


class Transcript(msgspec.Struct, frozen=True):
    """A whole transcript: full text, detected language code, audio duration and segments."""

    text: str
    language: str
    duration: float
    segments: list[TranscriptSegment]
