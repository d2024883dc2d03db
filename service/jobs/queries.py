"""What the API reads about jobs: one job, a page of jobs, a transcript; never a write."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import msgspec
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.db.models import Job, Transcript
from service.core.errors import BadRequest, JobNotCompleted, JobNotFound
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
