"""Known speakers of an owner: enrolling a clip, reading, deleting; resolving a job's names.

Every query is scoped to the owner: another owner's speaker is ``SpeakerNotFound`` exactly
as one that does not exist. The voice print is not computed here (the API has no speaker
encoder): a GPU child computes it from the clip at the first job that names the speaker,
and stores it for the next (``service.core.speakers``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.audio import content_type_accepted, probe_audio
from service.core.db.models import Speaker
from service.core.errors import (
    AudioTooLong,
    AudioTooShort,
    SpeakerExists,
    SpeakerNotFound,
    UnknownSpeaker,
    UnsupportedMediaType,
    ValidationFailed,
)
from service.core.settings import Settings
from service.core.storage import speaker_clip_path
from service.jobs.uploads import receive_upload
from service.speakers.options import check_speaker_name

__all__ = [
    "MAX_CLIP_BYTES",
    "MAX_CLIP_SECONDS",
    "MIN_CLIP_SECONDS",
    "delete_speaker",
    "enroll_speaker",
    "get_speaker",
    "list_speakers",
    "resolve_known",
]

MIN_CLIP_SECONDS = 2.0
MAX_CLIP_SECONDS = 60.0
# A minute of 48 kHz stereo 16-bit WAV is 11 MB: room for any reasonable clip.
MAX_CLIP_BYTES = 16 * 1024 * 1024


async def enroll_speaker(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    body: AsyncIterator[bytes],
    content_type: str,
    *,
    owner: str,
) -> Speaker:
    """Store a multipart ``name`` + ``file`` (a 2-60 s clip of one voice) as a speaker.

    Refuses what an upload is refused for (``PayloadTooLarge``, ``UnsupportedMediaType``,
    ``EmptyFile``, ``InvalidAudio``, a malformed body), a clip under 2 s (``AudioTooShort``)
    or over 60 s (``AudioTooLong``), a bad name (``ValidationFailed``) and a name the owner
    already has (``SpeakerExists``). Nothing is left on disk when it refuses.
    """
    speaker_id = uuid.uuid4()
    path = speaker_clip_path(settings.audio_dir, speaker_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    upload = await receive_upload(
        body, content_type, dest=path, max_bytes=min(MAX_CLIP_BYTES, settings.max_upload_bytes)
    )
    stored = False
    try:
        if "name" not in upload.fields:
            raise ValidationFailed("the form has no 'name' field for the speaker")
        name = check_speaker_name(upload.fields["name"])
        if not content_type_accepted(upload.content_type):
            raise UnsupportedMediaType(
                f"the file's content type {upload.content_type!r} is not audio"
            )
        try:
            info = await probe_audio(path, max_seconds=MAX_CLIP_SECONDS)
        except AudioTooLong as exc:
            raise AudioTooLong(
                f"a speaker's clip lasts at most {MAX_CLIP_SECONDS:.0f} s ({exc.detail})"
            ) from exc
        if info.duration < MIN_CLIP_SECONDS:
            raise AudioTooShort(
                f"the clip lasts {info.duration:.1f} s; a speaker's clip needs at least "
                f"{MIN_CLIP_SECONDS:.0f} s of their voice"
            )
        async with sessionmaker() as session, session.begin():
            speaker: Speaker | None = await session.scalar(
                insert(Speaker)
                .values(
                    id=speaker_id,
                    owner=owner,
                    name=name,
                    clip_path=str(path),
                    clip_seconds=info.duration,
                )
                .on_conflict_do_nothing(constraint="uq_speakers_owner_name")
                .returning(Speaker)
            )
        if speaker is None:
            raise SpeakerExists(f"a speaker named {name!r} exists; delete it to enrol it again")
        stored = True
        return speaker
    finally:
        if not stored:
            path.unlink(missing_ok=True)


async def list_speakers(session: AsyncSession, *, owner: str) -> list[Speaker]:
    """The owner's speakers, by name."""
    query = select(Speaker).where(Speaker.owner == owner).order_by(Speaker.name)
    return list(await session.scalars(query))


async def get_speaker(session: AsyncSession, name: str, *, owner: str) -> Speaker:
    """The owner's speaker of that name, or ``SpeakerNotFound``."""
    speaker = await session.scalar(
        select(Speaker).where(Speaker.owner == owner, Speaker.name == name.strip())
    )
    if speaker is None:
        raise SpeakerNotFound(f"no speaker named {name!r}")
    return speaker


async def delete_speaker(
    sessionmaker: async_sessionmaker[AsyncSession], name: str, *, owner: str
) -> None:
    """Delete the owner's speaker and its clip; ``SpeakerNotFound`` when there is none.

    A queued job that named it runs without it (its voice gets a ``SPEAKER_<n>`` label).
    """
    async with sessionmaker() as session, session.begin():
        clip = await session.scalar(
            delete(Speaker)
            .where(Speaker.owner == owner, Speaker.name == name.strip())
            .returning(Speaker.clip_path)
        )
    if clip is None:
        raise SpeakerNotFound(f"no speaker named {name!r}")
    await asyncio.to_thread(Path(clip).unlink, missing_ok=True)


async def resolve_known(
    sessionmaker: async_sessionmaker[AsyncSession],
    diarization: dict[str, Any] | None,
    *,
    owner: str,
) -> dict[str, Any] | None:
    """``diarization`` with ``speaker_ids`` beside its ``known_speakers`` names (in order).

    Raises ``UnknownSpeaker`` naming every name the owner has not enrolled.
    """
    names: Sequence[str] = (diarization or {}).get("known_speakers") or ()
    if not names:
        return diarization
    async with sessionmaker() as session:
        rows = await session.execute(
            select(Speaker.name, Speaker.id).where(
                Speaker.owner == owner, Speaker.name.in_(list(names))
            )
        )
        found = {row.name: row.id for row in rows}
    missing = [name for name in names if name not in found]
    if missing:
        raise UnknownSpeaker(
            f"no speaker named {', '.join(map(repr, missing))}; enrol them with "
            "POST /v1/speakers first"
        )
    return {**(diarization or {}), "speaker_ids": [str(found[name]) for name in names]}
