"""Known speakers as the GPU workers read them: the voice prints a diarized job names.

A print is computed from the speaker's clip by the first GPU child that needs it (the API
has no speaker encoder) and stored back here, so later jobs reuse it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.db.models import Speaker

__all__ = ["KnownSpeaker", "diarization_view", "known_speakers", "store_voice_print"]


def diarization_view(diarization: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a job's view shows of its ``jobs.diarization`` options: ``diarize`` and the
    ``known_speakers`` named (None when none were). One definition for the API's job view
    and the webhook payload's copy of it."""
    names = (diarization or {}).get("known_speakers")
    return {"diarize": diarization is not None, "known_speakers": names or None}


@dataclass(frozen=True, slots=True)
class KnownSpeaker:
    """A speaker a job names: its clip, and its voice print when already computed."""

    id: uuid.UUID
    name: str
    clip_path: str
    voice_print: list[float] | None


async def known_speakers(session: AsyncSession, ids: Sequence[str]) -> list[KnownSpeaker]:
    """The speakers among ``ids`` that still exist (one deleted since the submit is left out)."""
    wanted = [uuid.UUID(str(value)) for value in ids]
    if not wanted:
        return []
    rows = await session.execute(
        select(Speaker.id, Speaker.name, Speaker.clip_path, Speaker.voice_print).where(
            Speaker.id.in_(wanted)
        )
    )
    return [
        KnownSpeaker(
            id=row.id,
            name=row.name,
            clip_path=row.clip_path,
            voice_print=list(row.voice_print) if row.voice_print is not None else None,
        )
        for row in rows
    ]


async def store_voice_print(
    session: AsyncSession, speaker_id: uuid.UUID, voice_print: Sequence[float]
) -> None:
    """Keep a speaker's computed voice print (a no-op when the speaker was deleted)."""
    await session.execute(
        update(Speaker)
        .where(Speaker.id == speaker_id)
        .values(voice_print=[float(x) for x in voice_print])
    )
