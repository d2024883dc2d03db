"""Answering a submit with a job that already exists: idempotent submits and content dedupe.

**Idempotency-Key.** A submit that carries ``Idempotency-Key`` records (owner, key) with a
fingerprint of the request (the audio's SHA-256 or URL, the options, ``webhook_url`` and
``dedupe``) and the job it made, in the job's own transaction. For
``STENO_IDEMPOTENCY_TTL_SECONDS`` (24 h) the same key with the same request answers ``200``
with that job as it is now (header ``Idempotent-Replayed: true``) and makes nothing; with a
different request it is ``422 idempotency_key_reused``. Keys are scoped per owner. The
primary key on (owner, key) settles concurrent duplicates: the second INSERT waits for the
first transaction, conflicts, and its transaction (job row included) rolls back.

**Dedupe.** ``dedupe=true`` answers ``200`` (header ``Steno-Deduplicated: true``) with the
owner's newest completed job of the same audio (by SHA-256; for a URL job, the same URL,
whose bytes the API has not seen) and the same options, instead of transcribing again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.db.models import IdempotencyKey, Job
from service.core.errors import IdempotencyKeyReused, ValidationFailed
from service.core.states import JobStatus

HEADER = "idempotency-key"
# Printable ASCII without spaces, as a client generates it (a UUID, a hash, a name).
_KEY = re.compile(r"[\x21-\x7e]{1,255}")


@dataclass(frozen=True, slots=True)
class Submission:
    """What decides whether a submit may reuse a job, and what a new job records beside
    its options: the caller, its Idempotency-Key, the request's fingerprint, the webhook."""

    owner: str
    key_id: uuid.UUID | None
    idempotency_key: str | None
    fingerprint: str
    options_digest: str
    webhook_url: str | None
    dedupe: bool
    audio_sha256: str | None = None
    audio_url: str | None = None


class KeyTaken(Exception):
    """A concurrent submit with the same Idempotency-Key committed first."""


def parse_key(value: str | None) -> str | None:
    """The header's key, None when absent; ``ValidationFailed`` for an unusable one."""
    if value is None:
        return None
    if not _KEY.fullmatch(value):
        raise ValidationFailed(
            "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces"
        )
    return value


def digest(value: Any) -> str:
    """SHA-256 (hex) of ``value`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(msgspec.json.encode(value, order="sorted")).hexdigest()


async def replay(
    session: AsyncSession, *, owner: str, key: str, fingerprint: str, ttl_seconds: float
) -> Job | None:
    """The job a live key names when the request matches, None when the key is unused or
    expired; raises ``IdempotencyKeyReused`` when the key named another request."""
    row = await session.scalar(
        select(IdempotencyKey).where(
            IdempotencyKey.owner == owner,
            IdempotencyKey.key == key,
            IdempotencyKey.created_at > func.now() - timedelta(seconds=ttl_seconds),
        )
    )
    if row is None:
        return None
    if row.fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {key!r} was used for a different request within "
            f"{ttl_seconds / 3600:g} h; use a new key for a new request"
        )
    return await session.scalar(
        select(Job).where(Job.id == row.job_id).execution_options(populate_existing=True)
    )


async def remember(
    session: AsyncSession,
    *,
    owner: str,
    key: str,
    fingerprint: str,
    job_id: uuid.UUID,
    ttl_seconds: float,
) -> bool:
    """Record that ``key`` made ``job_id`` (an expired record is taken over); False when a
    live record exists, possibly committed by a concurrent request a moment ago."""
    statement = insert(IdempotencyKey).values(
        owner=owner, key=key, fingerprint=fingerprint, job_id=job_id
    )
    statement = statement.on_conflict_do_update(
        index_elements=["owner", "key"],
        set_={
            "fingerprint": statement.excluded.fingerprint,
            "job_id": statement.excluded.job_id,
            "created_at": func.now(),
        },
        where=IdempotencyKey.created_at <= func.now() - timedelta(seconds=ttl_seconds),
    )
    return await session.scalar(statement.returning(IdempotencyKey.job_id)) is not None


async def completed_duplicate(
    session: AsyncSession,
    *,
    owner: str,
    options_digest: str,
    audio_sha256: str | None = None,
    audio_url: str | None = None,
) -> Job | None:
    """The owner's newest completed job of this audio (hash, or else URL) and options."""
    same_audio = Job.audio_sha256 == audio_sha256 if audio_sha256 else Job.audio_url == audio_url
    return await session.scalar(
        select(Job)
        .where(
            Job.owner == owner,
            Job.status == JobStatus.completed,
            Job.options_digest == options_digest,
            same_audio,
        )
        .order_by(Job.created_at.desc())
        .limit(1)
    )


async def existing_job(
    sessionmaker: async_sessionmaker[AsyncSession], submit: Submission, ttl_seconds: float
) -> tuple[Job, str] | None:
    """The job that answers this submit instead of a new one, and why (``replayed``: the
    Idempotency-Key's, same request; ``deduplicated``: with ``dedupe``, a completed job of
    the same audio and options, which the key then names too)."""
    if submit.idempotency_key is None and not submit.dedupe:
        return None
    try:
        async with sessionmaker() as session, session.begin():
            if submit.idempotency_key is not None:
                job = await replay(
                    session,
                    owner=submit.owner,
                    key=submit.idempotency_key,
                    fingerprint=submit.fingerprint,
                    ttl_seconds=ttl_seconds,
                )
                if job is not None:
                    return job, "replayed"
            if not submit.dedupe:
                return None
            job = await completed_duplicate(
                session,
                owner=submit.owner,
                options_digest=submit.options_digest,
                audio_sha256=submit.audio_sha256,
                audio_url=submit.audio_url,
            )
            if job is None:
                return None
            if submit.idempotency_key is not None and not await remember(
                session,
                owner=submit.owner,
                key=submit.idempotency_key,
                fingerprint=submit.fingerprint,
                job_id=job.id,
                ttl_seconds=ttl_seconds,
            ):
                raise KeyTaken()
            return job, "deduplicated"
    except KeyTaken:
        # A concurrent submit with the key won: answer with its job (or refuse, as it says).
        return await existing_job(
            sessionmaker, dataclasses.replace(submit, dedupe=False), ttl_seconds
        )
