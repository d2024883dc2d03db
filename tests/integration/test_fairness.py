"""Per-owner fairness in PostgreSQL: messages past an owner's share are held, then released."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core import fairness, redrive, transitions
from service.core.db.models import Job, OutboxMessage
from service.core.routing import next_task
from service.core.settings import Settings


async def _held(sessions: async_sessionmaker[AsyncSession], ids: list[int]) -> list[bool]:
    async with sessions() as session:
        rows = await session.execute(
            select(OutboxMessage.id, OutboxMessage.held).where(OutboxMessage.id.in_(ids))
        )
        return [held for _, held in sorted(rows.all())]


async def test_past_its_share_an_owner_waits_in_postgresql_and_is_released_in_turn(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Given an owner that submits three transcriptions more than its share. The share is the
    # one the test session's workers release with (their relay sweeps this database too), so
    # that they and this test agree on what stays held.
    share = settings.fair_share_per_owner
    assert share >= 2
    owner = f"fair-{uuid.uuid4().hex[:8]}"
    jobs, ids = [], []
    for _ in range(share + 3):
        job_id = uuid.uuid4()
        async with sessions() as session, session.begin():
            new = transitions.NewJob(
                id=job_id, owner=owner, source="upload", model="tiny.en", audio_path="/x.wav"
            )
            await transitions.create_job(session, new)
            ids.append(
                await fairness.stage_next_task(
                    session,
                    settings,
                    job_id,
                    owner=owner,
                    priority="low",
                    has_audio=True,
                    audio_seconds=1.0,
                )
            )
        jobs.append(job_id)

    # then its share is in its lane and three are held (and the redrive leaves those alone)
    assert await _held(sessions, ids) == [False] * share + [True] * 3
    async with sessions() as session, session.begin():
        queues = set(
            await session.scalars(select(OutboxMessage.queue).where(OutboxMessage.id.in_(ids)))
        )
        stranded = await redrive.stranded_jobs(
            session, everything=True, queued_for=3600, lease_seconds=60
        )
        assert await fairness.release_held(session, share=share) == []
    assert queues == {"gpu.low"}
    assert {job.job_id for job in stranded} & set(jobs) == set(jobs[:share])

    # when one starts and a held one is cancelled (one transaction, as the worker's claim)
    async with sessions() as session, session.begin():
        await session.execute(update(Job).where(Job.id == jobs[0]).values(status="running"))
        await session.execute(update(Job).where(Job.id == jobs[share]).values(status="cancelled"))
        released = await fairness.release_held(session, share=share)

    # then the next waiting one is released, and the cancelled one's held row is dropped
    assert released == [ids[share + 1]]
    assert await _held(sessions, ids) == [False] * (share + 1) + [True]


def test_the_priority_picks_the_gpu_lane_and_fetches_have_one_lane(settings: Settings) -> None:
    lanes = {
        p: next_task(settings, has_audio=True, audio_seconds=1.0, priority=p)[0].queue
        for p in ("high", "normal", "low")
    }
    assert lanes == {"high": "gpu.high", "normal": "gpu", "low": "gpu.low"}
    assert (
        next_task(settings, has_audio=False, audio_seconds=None, priority="high")[0].queue == "io"
    )
