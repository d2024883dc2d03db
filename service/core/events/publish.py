"""Publishing a job's events: what workers (and the API, for cancel) call.

An event goes to the job's Redis Stream; a milestone (started, completed, failed, cancelled)
is also stored in PostgreSQL under the same position, so the history of a finished job
survives Redis losing everything. Progress must never cost a job: a failure to publish is
logged and swallowed; the SSE endpoint falls back on the job row for the terminal event.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import msgspec
from redis.asyncio import Redis
from sqlalchemy import Select, literal, select
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.db.models import Job, JobEvent
from service.core.events.schemas import MILESTONES, Event, encode_event, event_kind
from service.core.events.stream import Frame, Position, append
from service.core.settings import Settings

log = logging.getLogger(__name__)


async def emit(
    redis: Redis | None,
    sessions: async_sessionmaker[AsyncSession] | None,
    settings: Settings,
    event: Event,
) -> Frame | None:
    """Publish ``event`` to its job's stream, and store it too when it is a milestone.

    Returns the frame as published (None when neither store took it). Never raises for a
    Redis or PostgreSQL failure.
    """
    kind = event_kind(event)
    frame: Frame | None = None
    if redis is not None:
        try:
            frame = await append(
                redis,
                event,
                maxlen=settings.events_maxlen,
                ttl_seconds=settings.events_ttl_seconds,
            )
        except Exception as exc:  # Redis is transport: a lost event must not fail the job
            log.warning("job %s: %s event not published: %r", event.job_id, kind, exc)
    if kind not in MILESTONES or sessions is None:
        return frame
    if frame is None:
        # Redis did not number it; this clock's time orders it among the others.
        frame = Frame(Position.now(), kind, encode_event(event))
    try:
        async with sessions() as session, session.begin():
            await store_milestone(session, uuid.UUID(event.job_id), frame)
    except Exception as exc:
        log.warning("job %s: %s milestone not stored: %r", event.job_id, kind, exc)
        return None
    return frame


async def store_milestone(session: AsyncSession, job_id: uuid.UUID, frame: Frame) -> None:
    """Insert a milestone in the caller's transaction (a repeat of a position is a no-op);
    a deleted job's milestone is dropped."""
    statement = (
        insert(JobEvent)
        .from_select(
            ["job_id", "stream_ms", "stream_seq", "kind", "data"],
            _job_exists(job_id, frame),
        )
        .on_conflict_do_nothing(constraint="uq_job_events_position")
    )
    await session.execute(statement)


def _job_exists(job_id: uuid.UUID, frame: Frame) -> Select[Any]:
    return select(
        Job.id,
        literal(frame.position.ms),
        literal(frame.position.seq),
        literal(frame.kind),
        literal(msgspec.json.decode(frame.data), JSONB),
    ).where(Job.id == job_id)
