"""What ``/v1/speakers`` answers, as msgspec Structs (never ORM rows)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from service.core.db.models import Speaker


class SpeakerView(msgspec.Struct):
    """A known speaker: its name, its clip's length, and whether its voice print exists yet
    (a GPU worker computes it at the first diarized job that names the speaker)."""

    name: str
    clip_seconds: float
    voice_print_ready: bool
    created_at: datetime

    @classmethod
    def from_row(cls, speaker: Speaker) -> SpeakerView:
        """The view of one speaker row."""
        return cls(
            name=speaker.name,
            clip_seconds=round(speaker.clip_seconds, 2),
            voice_print_ready=speaker.voice_print is not None,
            created_at=speaker.created_at,
        )


class SpeakerList(msgspec.Struct):
    """``GET /v1/speakers``: the owner's speakers, by name."""

    items: list[SpeakerView]
