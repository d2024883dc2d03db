"""A job's event history after a position, merged from PostgreSQL, Redis and the job row.

PostgreSQL holds the milestones, Redis the whole recent stream; both number events by the
Redis entry id, so the merge is a union by position. The job row stands in for what both
may lack: ``queued`` (at the job's creation time) and, for a finished job whose terminal
event was never published, that terminal event.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

import msgspec
from redis.asyncio import Redis
from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.db.models import Job, JobEvent
from service.core.events.publish import store_milestone
from service.core.events.schemas import (
    TERMINAL,
    Cancelled,
    Completed,
    Event,
    Failed,
    Queued,
    encode_event,
    event_kind,
)
from service.core.events.stream import ORIGIN, Frame, Position, read_after
from service.core.states import FINAL, JobStatus

log = logging.getLogger(__name__)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def stored_milestones(
    session: AsyncSession, job_id: uuid.UUID, after: Position
) -> list[Frame]:
    """The job's milestones in PostgreSQL after ``after``, oldest first."""
    rows = await session.execute(
        select(JobEvent.stream_ms, JobEvent.stream_seq, JobEvent.kind, JobEvent.data)
        .where(
            JobEvent.job_id == job_id,
            tuple_(JobEvent.stream_ms, JobEvent.stream_seq) > (after.ms, after.seq),
        )
        .order_by(JobEvent.stream_ms, JobEvent.stream_seq)
    )
    return [
        Frame(Position(row.stream_ms, row.stream_seq), row.kind, msgspec.json.encode(row.data))
        for row in rows
    ]


def row_terminal(job: Job, *, after: Position) -> Frame | None:
    """The terminal event the job row implies (None while it runs), placed after ``after``."""
    event: Event
    job_id = str(job.id)
    if job.status == JobStatus.completed:
        event = Completed(job_id=job_id, duration=job.audio_seconds, language=job.language)
    elif job.status == JobStatus.failed:
        event = Failed(
            job_id=job_id, code=job.error_code or "failed", detail=job.error_detail or ""
        )
    elif job.status == JobStatus.cancelled:
        event = Cancelled(job_id=job_id)
    else:
        return None
    finished = job.finished_at or job.updated_at
    event.at = finished.timestamp()
    position = max(Position(_ms(finished), 0), after.next())
    return Frame(position, event_kind(event), encode_event(event))


def queued_frame(job: Job) -> Frame:
    """The ``queued`` event of a job, at its creation time."""
    event = Queued(job_id=str(job.id), at=job.created_at.timestamp())
    return Frame(Position(_ms(job.created_at), 0), "queued", encode_event(event))


async def history(
    session: AsyncSession, redis: Redis | None, job: Job, after: Position
) -> list[Frame]:
    """Every event of ``job`` after ``after``, oldest first, ending with the terminal event
    when the job is finished (and nothing when ``after`` is at or past that event)."""
    merged: dict[Position, Frame] = {}
    queued = queued_frame(job)
    if queued.position > after:
        merged[queued.position] = queued
    for frame in await stored_milestones(session, job.id, after):
        merged[frame.position] = frame
    if redis is not None:
        try:
            for frame in await read_after(redis, job.id, after):
                merged.setdefault(frame.position, frame)
        except Exception as exc:  # Redis down: PostgreSQL's milestones still tell the story
            log.warning("job %s: event stream unreadable: %r", job.id, exc)
    frames = sorted(merged.values(), key=lambda frame: frame.position)
    for index, frame in enumerate(frames):
        if frame.terminal:
            return frames[: index + 1]
    if job.status in FINAL and not await terminal_seen(session, job.id, after):
        last = frames[-1].position if frames else after
        terminal = row_terminal(job, after=max(last, after))
        if terminal is not None:
            # Stored, so that a client resuming after it is told nothing more.
            await store_milestone(session, job.id, terminal)
            await session.commit()
            frames.append(terminal)
    return frames


async def terminal_seen(session: AsyncSession, job_id: uuid.UUID, after: Position) -> bool:
    """Whether a stored terminal milestone lies at or before ``after`` (the client had it)."""
    if after == ORIGIN:
        return False
    found = await session.scalar(
        select(JobEvent.id)
        .where(
            JobEvent.job_id == job_id,
            JobEvent.kind.in_(TERMINAL),
            tuple_(JobEvent.stream_ms, JobEvent.stream_seq) <= (after.ms, after.seq),
        )
        .limit(1)
    )
    return found is not None
