"""The tasks the API sends, by stable name and queue (it never imports ``workers/``).

``workers/routing.py`` declares the same names and queues; a unit test keeps them in step.
"""

from __future__ import annotations

from dataclasses import dataclass

EXCHANGE = "steno"


@dataclass(frozen=True, slots=True)
class TaskRef:
    """A Celery task addressed by name, routed to one queue."""

    name: str
    queue: str


TRANSCRIBE = TaskRef("gpu.transcribe", "gpu")
FETCH_AUDIO = TaskRef("io.fetch_audio", "io")
