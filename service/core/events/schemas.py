"""The progress events of a job, as msgspec Structs; ``kind`` names each one.

An event's JSON (the SSE ``data:`` line and the Redis Stream entry) is the Struct with its
``kind`` tag, the job id and ``at``, the Unix time the worker published it.
"""

from __future__ import annotations

import time

import msgspec

# The events after which a job's stream has nothing more to say.
TERMINAL = frozenset({"completed", "failed", "cancelled"})
# The events kept in PostgreSQL too, so they outlive Redis.
MILESTONES = frozenset({"started", *TERMINAL})


class _Event(msgspec.Struct, tag_field="kind", kw_only=True, omit_defaults=False):
    job_id: str
    at: float = msgspec.field(default_factory=time.time)


class Queued(_Event, tag="queued"):
    """The job was accepted and waits for a worker."""


class Started(_Event, tag="started"):
    """A GPU worker claimed the job (``attempt`` counts claims, from 1)."""

    attempt: int
    worker: str | None = None


class Progress(_Event, tag="progress"):
    """Where the job is: ``stage`` (fetching, probing, transcribing) and how far.

    ``percent`` is the share of the audio Whisper has decoded, not a timer; ``eta_seconds``
    extrapolates the decoding rate so far (None until there is one).
    """

    stage: str
    percent: float
    audio_seconds_done: float | None = None
    audio_seconds: float | None = None
    eta_seconds: float | None = None


class Segment(_Event, tag="segment"):
    """A transcript segment, sent as soon as Whisper decoded it (times in seconds)."""

    id: int
    start: float
    end: float
    text: str


class SpeakerSegment(msgspec.Struct):
    """A segment of the diarized transcript with its speaker label."""

    id: int
    start: float
    end: float
    text: str
    speaker: str | None


class Speakers(_Event, tag="speakers"):
    """Diarization is done: the final segments (split at speaker changes) with speakers.

    Sent once, before ``completed``, only for jobs submitted with ``diarize=true``; it
    replaces the ``segment`` events seen so far (their ids may differ after splits).
    """

    segments: list[SpeakerSegment]


class Completed(_Event, tag="completed"):
    """The transcript is stored; fetch it from ``/v1/jobs/{id}/transcript``."""

    duration: float | None = None
    language: str | None = None
    segments: int | None = None


class Failed(_Event, tag="failed"):
    """The job failed for good: a stable ``code`` and a human ``detail``."""

    code: str
    detail: str


class Cancelled(_Event, tag="cancelled"):
    """The job was cancelled (``reason`` is ``deleted`` when the job was deleted)."""

    reason: str | None = None


Event = Queued | Started | Progress | Segment | Speakers | Completed | Failed | Cancelled

_encoder = msgspec.json.Encoder()


def encode_event(event: Event) -> bytes:
    """The event's JSON."""
    return _encoder.encode(event)


def event_kind(event: Event) -> str:
    """The event's ``kind`` tag."""
    return str(type(event).__struct_config__.tag)
