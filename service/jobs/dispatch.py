"""The tasks the API sends, by stable name and queue (it never imports ``workers/``).

``workers/routing.py`` declares the same names and queues; a unit test keeps them in step.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.settings import Settings

EXCHANGE = "steno"


@dataclass(frozen=True, slots=True)
class TaskRef:
    """A Celery task addressed by name, routed to one queue."""

    name: str
    queue: str


TRANSCRIBE = TaskRef("gpu.transcribe", "gpu")
FETCH_AUDIO = TaskRef("io.fetch_audio", "io")


def next_task(
    settings: Settings, *, has_audio: bool, audio_seconds: float | None
) -> tuple[TaskRef, float]:
    """The task that moves an active job on, and its hard time limit.

    A job with stored audio is transcribed (the limit scales with its duration); one
    without is fetched first.
    """
    if has_audio:
        return TRANSCRIBE, settings.transcribe_time_limit(audio_seconds)
    return FETCH_AUDIO, settings.fetch_time_limit
