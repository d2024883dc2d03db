"""The body of one SSE stream: history after the client's position, then live events.

Nothing is sent twice or skipped: the client subscribes to live entries first, then the
history is replayed, and a live entry at or before the last position sent is dropped.
A heartbeat comment goes out every ``sse_heartbeat_seconds``; at each heartbeat the hub has
also renewed the stream's slot and looked at the job row (for every stream due at once), so
a job that finished (or was deleted) without its terminal event reaching Redis still ends
the stream.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncGenerator

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.db.models import Job
from service.core.events.schemas import Cancelled, encode_event
from service.core.events.stream import Frame, Position
from service.core.settings import Settings
from service.core.states import FINAL
from service.events.history import history, terminal_seen
from service.events.hub import BEAT, EventHub

log = logging.getLogger(__name__)

HEARTBEAT = b": heartbeat\n\n"
# Sent first: how long a client waits before reconnecting, and the headers go out at once.
PREAMBLE = b"retry: 2000\n: connected\n\n"


async def job_events(
    job_id: uuid.UUID,
    after: Position,
    *,
    hub: EventHub,
    client: str,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    settings: Settings,
    slot: tuple[uuid.UUID, str] | None = None,
) -> AsyncGenerator[bytes, None]:
    """SSE bytes of the job's events after ``after``, ending after the terminal event.

    ``slot`` (key id, slot), when given, is the stream slot the hub renews at every heartbeat.
    """
    subscription = await hub.subscribe(
        str(job_id), heartbeat=settings.sse_heartbeat_seconds, slot=slot
    )
    try:
        yield PREAMBLE
        replay, done = await _replay(job_id, after, sessions=sessions, redis=redis)
        last = after
        for frame in replay:
            yield frame.sse
            last = frame.position
            if frame.terminal:
                return
        if done:
            return  # the client already had the terminal event
        while True:
            # Whatever else is queued goes out in the same write: under load, fewer sends.
            batch = await subscription.frames()
            chunks = []
            terminal = beat = False
            for frame in batch:
                if frame is BEAT:
                    beat = True
                elif frame.position > last:
                    chunks.append(frame.sse)
                    last = frame.position
                    if frame.terminal:
                        terminal = True
                        break
            if beat and not chunks:
                chunks.append(HEARTBEAT)  # events, when there are, keep the stream alive too
            if chunks:
                yield b"".join(chunks)
            if terminal:
                return
            if beat and not subscription.job_running:
                ending = await _ended(job_id, last, sessions=sessions, redis=redis)
                for frame in ending:
                    yield frame.sse
                    last = frame.position
                    if frame.terminal:
                        return
            if subscription.overflowed and not subscription.pending():
                log.info("job %s: SSE client %s fell behind; closing its stream", job_id, client)
                return
    finally:
        hub.unsubscribe(subscription)


async def _replay(
    job_id: uuid.UUID,
    after: Position,
    *,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
) -> tuple[list[Frame], bool]:
    """The job's history after ``after``, and whether the stream ends with it (the job is
    finished, or the client already had its terminal event).

    A function of its own so that its session and job row are let go once it returns: a
    stream lives long, and every object it holds is one more for each full GC to walk.
    """
    async with sessions() as session:
        job = await session.get(Job, job_id)
        if job is None:
            return [_deleted(job_id, after)], True
        frames = await history(session, redis, job, after)
        return frames, job.status in FINAL or await terminal_seen(session, job_id, after)


async def _ended(
    job_id: uuid.UUID,
    last: Position,
    *,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
) -> list[Frame]:
    """What a finished or deleted job still owes the client after ``last`` (else nothing)."""
    async with sessions() as session:
        job = await session.get(Job, job_id)
        if job is None:
            return [_deleted(job_id, last)]
        if job.status not in FINAL:
            return []
        return await history(session, redis, job, last)


def _deleted(job_id: uuid.UUID, after: Position) -> Frame:
    event = Cancelled(job_id=str(job_id), reason="deleted")
    return Frame(max(Position.now(), after.next()), "cancelled", encode_event(event))
