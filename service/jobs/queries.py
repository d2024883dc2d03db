"""What the API reads about jobs: one job, a page of jobs, a transcript; never a write."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any, NamedTuple

import asyncpg
import msgspec
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.keys import INVALID_KEY, KEY_COLUMNS, Principal, check_key, key_prefix
from service.core.db.models import Job, Transcript
from service.core.errors import BadRequest, JobNotCompleted, JobNotFound, Unauthorized
from service.core.states import JobStatus
from service.core.transcript import Transcript as TranscriptData


async def get_job(session: AsyncSession, job_id: uuid.UUID, *, owner: str) -> Job:
    """The owner's job, or ``JobNotFound`` (for another owner's job exactly as for none)."""
    job = await session.scalar(
        select(Job)
        .where(Job.id == job_id, Job.owner == owner)
        .execution_options(populate_existing=True)
    )
    if job is None:
        raise JobNotFound(f"no job with id {job_id}")
    return job


class JobRecord(NamedTuple):
    """The columns of a job that its view shows, read without the ORM (``poll_job``)."""

    id: uuid.UUID
    status: str
    progress_stage: str | None
    progress_percent: float
    audio_seconds: float | None
    started_at: datetime | None
    error_code: str | None
    error_detail: str | None
    attempts: int
    created_at: datetime
    finished_at: datetime | None
    language: str | None
    model: str
    word_timestamps: bool
    source: str
    filename: str | None
    audio_url: str | None
    webhook_url: str | None
    priority: str
    # Decoded by the read pool's jsonb codec (JSON null, the ORM's default, is None too).
    diarization: dict[str, Any] | None
    # Not shown: whether the audio is here (a queued job then waits on the GPU queue).
    has_audio: bool


# Columns of the view that are not plain columns of ``jobs``.
_DERIVED = {"has_audio": "j.audio_path IS NOT NULL"}
# The key and, when it is the key owner's, the job: one round trip for the most polled route.
_KEY_AND_JOB = (
    f"SELECT {KEY_COLUMNS}, "
    + ", ".join(_DERIVED.get(name, f"j.{name}") for name in JobRecord._fields)
    + " FROM api_keys k LEFT JOIN jobs j ON j.id = $2 AND j.owner = k.owner"
    " WHERE k.prefix = $1 AND k.revoked_at IS NULL"
)
_KEY_WIDTH = len(KEY_COLUMNS.split(","))


async def poll_job(
    pool: asyncpg.Pool, key: str, job_id: uuid.UUID | None
) -> tuple[Principal, JobRecord]:
    """The key's principal and the owner's job, checked and read in one query.

    ``Unauthorized`` for a malformed, unknown or revoked key (checked first, as the
    middleware does); ``JobNotFound`` for another owner's job exactly as for none, and for
    ``job_id`` None (a malformed id).
    """
    prefix = key_prefix(key)
    row = await pool.fetchrow(_KEY_AND_JOB, prefix, job_id) if prefix is not None else None
    principal = check_key(row, key)
    if principal is None or row is None:
        raise Unauthorized(INVALID_KEY)
    if row[_KEY_WIDTH] is None:
        raise JobNotFound(f"no job with id {job_id}")
    return principal, JobRecord(*row[_KEY_WIDTH:])


def encode_cursor(job: Job) -> str:
    """An opaque position after ``job`` in newest-first order."""
    raw = f"{job.created_at.isoformat()}|{job.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, job_id = raw.split("|", 1)
        moment = datetime.fromisoformat(created)
        if moment.tzinfo is None or not 1970 <= moment.astimezone(UTC).year <= 9000:
            raise ValueError("timestamp out of range")
        return moment, uuid.UUID(job_id)
    except (ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise BadRequest(f"cursor {cursor!r} is not one this API returned") from exc


async def list_jobs(
    session: AsyncSession,
    *,
    owner: str,
    status: JobStatus | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Job], str | None]:
    """A page of the owner's jobs newest first, and the next page's cursor (None at the end)."""
    query = (
        select(Job)
        .where(Job.owner == owner)
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(limit + 1)
    )
    if status is not None:
        query = query.where(Job.status == status)
    if cursor:
        created, job_id = _decode_cursor(cursor)
        query = query.where(
            or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id))
        )
    jobs = list((await session.scalars(query)).all())
    next_cursor = encode_cursor(jobs[limit - 1]) if len(jobs) > limit else None
    return jobs[:limit], next_cursor


async def get_transcript(session: AsyncSession, job_id: uuid.UUID, *, owner: str) -> TranscriptData:
    """The transcript of the owner's completed job; ``JobNotCompleted`` before that."""
    job = await get_job(session, job_id, owner=owner)
    row = await session.get(Transcript, job_id)
    if job.status != JobStatus.completed or row is None:
        raise JobNotCompleted(f"job {job_id} is {job.status}; the transcript exists once completed")
    return msgspec.convert(
        {
            "text": row.text,
            "language": row.language,
            "duration": row.duration,
            "segments": row.segments,
        },
        TranscriptData,
    )
