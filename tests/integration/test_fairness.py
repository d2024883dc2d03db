"""Per-owner fairness in PostgreSQL: messages past an owner's share are held, then released."""

from __future__ import annotations

import dataclasses
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
    # Given an owner with a share of 2 that submits 5 transcriptions
    shared = dataclasses.replace(settings, fair_share_per_owner=2)
    owner = f"fair-{uuid.uuid4().hex[:8]}"
    jobs, ids = [], []
    for _ in range(5):
        job_id = uuid.uuid4()
        async with sessions() as session, session.begin():
            new = transitions.NewJob(
                id=job_id, owner=owner, source="upload", model="tiny.en", audio_path="/x.wav"
            )
            await transitions.create_job(session, new)
            ids.append(
                await fairness.stage_next_task(
                    session,
                    shared,
                    job_id,
                    owner=owner,
                    priority="low",
                    has_audio=True,
                    audio_seconds=1.0,
                )
            )
        jobs.append(job_id)

    # then two are in its lane and three are held (and the redrive leaves those alone)
    assert await _held(sessions, ids) == [False, False, True, True, True]
    async with sessions() as session, session.begin():
        queues = set(
            await session.scalars(select(OutboxMessage.queue).where(OutboxMessage.id.in_(ids)))
        )
        stranded = await redrive.stranded_jobs(
            session, everything=True, queued_for=3600, lease_seconds=60
        )
        assert await fairness.release_held(session, share=2) == []
    assert queues == {"gpu.low"}
    assert {job.job_id for job in stranded} & set(jobs) == set(jobs[:2])

    # when one starts and another is cancelled
    async with sessions() as session, session.begin():
        await session.execute(update(Job).where(Job.id == jobs[0]).values(status="running"))
        await session.execute(update(Job).where(Job.id == jobs[2]).values(status="cancelled"))
        released = await fairness.release_held(session, share=2)

    # then the next waiting one is released, and the cancelled one's held row is dropped
    assert released == [ids[3]]
    assert await _held(sessions, ids) == [False, False, False, True]


def test_the_priority_picks_the_gpu_lane_and_fetches_have_one_lane(settings: Settings) -> None:
    lanes = {
        p: next_task(settings, has_audio=True, audio_seconds=1.0, priority=p)[0].queue
        for p in ("high", "normal", "low")
    }
    assert lanes == {"high": "gpu.high", "normal": "gpu", "low": "gpu.low"}
    assert (
        next_task(settings, has_audio=False, audio_seconds=None, priority="high")[0].queue == "io"
    )
