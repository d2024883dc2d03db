"""Finding active jobs whose task message may be lost, so the relay can send it again."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.db.models import Job
from service.core.states import ACTIVE, JobStatus


@dataclass(frozen=True, slots=True)
class Stranded:
    """An active job that may have no task message left anywhere."""

    job_id: uuid.UUID
    has_audio: bool
    audio_seconds: float | None


async def stranded_jobs(
    session: AsyncSession,
    *,
    everything: bool,
    queued_for: float,
    lease_seconds: float,
    after: uuid.UUID | None = None,
    limit: int = 1000,
) -> list[Stranded]:
    """Active jobs whose message may be lost, marked as looked at (so each comes back rarely).

    With ``everything`` (the broker lost its queues) that is every queued or running job,
    in pages by id after ``after``. Otherwise it is running jobs whose lease ran out and
    that were not touched for a lease (so a job is re-sent at most once per lease), and
    queued jobs untouched for ``queued_for`` seconds.
    """
    condition: Any = Job.status.in_(ACTIVE)
    if everything:
        if after is not None:
            condition = and_(condition, Job.id > after)
    else:
        condition = or_(
            and_(
                Job.status == JobStatus.running,
                Job.lease_expires_at < func.now(),
                Job.updated_at < func.now() - timedelta(seconds=lease_seconds),
            ),
            and_(
                Job.status == JobStatus.queued,
                Job.updated_at < func.now() - timedelta(seconds=queued_for),
            ),
        )
    rows = (
        await session.execute(
            update(Job)
            .where(
                Job.id.in_(
                    select(Job.id)
                    .where(condition)
                    .order_by(Job.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                    .scalar_subquery()
                )
            )
            .values(updated_at=func.now())
            .returning(Job.id, Job.audio_path, Job.audio_seconds)
        )
    ).all()
    found = [Stranded(row.id, row.audio_path is not None, row.audio_seconds) for row in rows]
    return sorted(found, key=lambda job: job.job_id)
