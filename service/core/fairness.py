"""Per-owner fairness on the GPU lanes: hold an owner's transcriptions past its fair share.

One key's backlog of 500 jobs must not starve another key's single job, and the broker's
queues are FIFO. So at most ``STENO_FAIR_SHARE_PER_OWNER`` of one owner's transcription
messages wait in each lane's broker queue ("in flight": published or about to be, for a job
still ``queued``); the rest are committed as *held* outbox rows, in PostgreSQL with their job.
``release_held`` tops every owner up to its share, oldest first; since each owner gets the
same room, a newcomer's job waits behind at most ``share x owners`` messages, whatever the
others' backlogs. It runs on every relay sweep and after every transcription, so an owner's
next job is in its lane about as soon as one of its jobs starts.

Delivery guarantees are those of the outbox: a held row is committed with its job, released
rows are ordinary unpublished rows that the sweep publishes, and the relay's redrive (Redis
lost everything, or a queued job untouched for long) re-sends released jobs only; a job whose
row is still held has no message to lose.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

from sqlalchemy import select, text

from service.core.db.models import Job
from service.core.outbox import Offload, add_message, publish_pending
from service.core.routing import GPU_QUEUES, TaskRef, next_task

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from service.core.broker import Publisher
    from service.core.settings import Settings

# One releaser at a time (transaction-scoped advisory lock), so two concurrent releases
# can't both fill the same free slots. The key is arbitrary but fixed: "steno fair".
_RELEASE_LOCK = 0x5745_4E4F_4641_4952 & 0x7FFF_FFFF_FFFF_FFFF

# Held rows of jobs that finished (cancelled) are dropped; every owner with room in a lane
# gets its oldest held rows up to share minus in flight.
_RELEASE = text(
    """
    WITH dropped AS (
        DELETE FROM outbox o USING jobs j
        WHERE o.held AND o.job_id = j.id AND j.status NOT IN ('queued', 'running')
    ),
    inflight AS (
        SELECT o.queue, o.owner, count(DISTINCT o.job_id) AS n
        FROM outbox o JOIN jobs j ON j.id = o.job_id
        WHERE NOT o.held AND o.owner IS NOT NULL AND o.queue = ANY(:lanes)
          AND j.status = 'queued'
        GROUP BY o.queue, o.owner
    ),
    ranked AS (
        SELECT o.id, o.queue, o.owner,
               row_number() OVER (PARTITION BY o.queue, o.owner ORDER BY o.id) AS rank
        FROM outbox o JOIN jobs j ON j.id = o.job_id
        WHERE o.held AND o.published_at IS NULL AND j.status = 'queued'
    )
    UPDATE outbox SET held = false
    WHERE id IN (
        SELECT r.id FROM ranked r
        LEFT JOIN inflight f ON f.queue = r.queue AND f.owner = r.owner
        WHERE r.rank <= :share - coalesce(f.n, 0)
    )
    RETURNING id
    """
)


# One owner's transcriptions in one lane: how many are held, how many in flight.
_OWNER_LANE = text(
    """
    SELECT count(*) FILTER (WHERE o.held) AS held,
           count(DISTINCT o.job_id) FILTER (WHERE NOT o.held) AS inflight
    FROM jobs j JOIN outbox o ON o.job_id = j.id
    WHERE j.status = 'queued' AND j.owner = :owner AND o.queue = :lane
    """
)


def holds(settings: Settings, task: TaskRef, owner: str | None) -> bool:
    """Whether ``task``'s message for ``owner``'s job waits for the owner's fair share."""
    return settings.fair_share_per_owner > 0 and owner is not None and task.queue in GPU_QUEUES


async def stage_next_task(
    session: AsyncSession,
    settings: Settings,
    job_id: uuid.UUID,
    *,
    owner: str | None,
    priority: str,
    has_audio: bool,
    audio_seconds: float | None,
    recovery: bool = False,
) -> int:
    """Stage the task that moves ``job_id`` on (``routing.next_task``), held when the
    owner's fair share says so; a ``recovery`` re-send (its message may be lost) never is."""
    task, limit = next_task(
        settings, has_audio=has_audio, audio_seconds=audio_seconds, priority=priority
    )
    held = False
    if not recovery and holds(settings, task, owner):
        held = not await _has_room(session, settings, task.queue, owner or "")
    return await add_message(
        session,
        task,
        [str(job_id)],
        job_id=job_id,
        time_limit=limit,
        owner=owner,
        held=held,
    )


async def _has_room(session: AsyncSession, settings: Settings, lane: str, owner: str) -> bool:
    """Whether ``owner`` may send one more message to ``lane`` now: under its share, and
    nothing of its held before (first come, first sent). Concurrent submits of one owner
    wait for each other here (a lock until commit), so they can't both take the last slot."""
    lock = f"steno-fair:{owner}:{lane}"
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": lock})
    row = (await session.execute(_OWNER_LANE, {"owner": owner, "lane": lane})).one()
    return bool(row.held == 0 and row.inflight < settings.fair_share_per_owner)


async def stage_transcription(
    session: AsyncSession, settings: Settings, job_id: uuid.UUID, *, audio_seconds: float | None
) -> int:
    """Stage the transcription of ``job_id`` (its audio just arrived) in its owner's lane."""
    row = (await session.execute(select(Job.owner, Job.priority).where(Job.id == job_id))).one()
    return await stage_next_task(
        session,
        settings,
        job_id,
        owner=row.owner,
        priority=row.priority,
        has_audio=True,
        audio_seconds=audio_seconds,
    )


async def release_held(session: AsyncSession, *, share: int) -> list[int]:
    """Release held rows so each owner has up to ``share`` messages in flight per lane;
    returns the released outbox ids (oldest first), for the caller to publish."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _RELEASE_LOCK})
    rows = await session.execute(_RELEASE, {"lanes": list(GPU_QUEUES), "share": share})
    return sorted(row.id for row in rows)


async def release_and_publish(
    sessionmaker: async_sessionmaker[AsyncSession],
    publisher: Publisher,
    settings: Settings,
    *,
    offload: Offload = asyncio.to_thread,
) -> int:
    """Release what the owners' shares allow and publish it; returns how many went out.

    What is released but not published (the broker is down) is an ordinary unpublished
    row: the relay's sweep sends it.
    """
    if settings.fair_share_per_owner <= 0:
        return 0
    async with sessionmaker() as session, session.begin():
        ids = await release_held(session, share=settings.fair_share_per_owner)
    if not ids:
        return 0
    return await publish_pending(sessionmaker, publisher, ids=ids, offload=offload)
