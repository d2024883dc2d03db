"""Recovery: requeue jobs whose worker stopped renewing its lease, and find active jobs whose
task message may be lost, so the relay can send it again."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.db.models import Job, OutboxMessage
from service.core.states import ACTIVE, WORKER_LOST, JobStatus
from service.core.transitions import ATTEMPTS_SPENT, lease_lapsed, mark_failed


@dataclass(frozen=True, slots=True)
class Stranded:
    """An active job that may have no task message left anywhere."""

    job_id: uuid.UUID
    has_audio: bool
    audio_seconds: float | None
    owner: str | None = None
    priority: str = "normal"


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
    queued jobs untouched for ``queued_for`` seconds. A job whose message is still held
    in the outbox (``service.core.fairness``) is never stranded: it has none to lose.
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
    waiting_held = exists().where(OutboxMessage.job_id == Job.id, OutboxMessage.held)
    condition = and_(condition, ~waiting_held)
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
            .returning(Job.id, Job.audio_path, Job.audio_seconds, Job.owner, Job.priority)
        )
    ).all()
    found = [_stranded(row) for row in rows]
    return sorted(found, key=lambda job: job.job_id)


async def reap_expired_leases(
    session: AsyncSession, *, max_attempts: int, limit: int = 1000
) -> tuple[list[Stranded], list[uuid.UUID]]:
    """Requeue running jobs whose worker stopped renewing the lease; fail those at the cap.

    Returns (requeued, failed). A requeued job is ``queued`` again with ``error`` saying
    which worker stopped heartbeating (``worker_lost``); the caller sends its task anew. One
    that already had ``max_attempts`` deliveries fails with ``too_many_attempts``. Both are
    conditional UPDATEs, so a worker that renews at the last moment keeps its job, and the
    old holder's later writes are fenced out.
    """
    expired = and_(Job.status == JobStatus.running, Job.lease_expires_at < func.now())
    picked = (
        select(Job.id)
        .where(expired)
        .order_by(Job.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    failed_ids = sorted(
        await mark_failed(
            session,
            and_(Job.id.in_(picked), ATTEMPTS_SPENT >= max_attempts),
            code="too_many_attempts",
            detail=lease_lapsed(f"gave up after {max_attempts} attempts"),
        )
    )
    rows = (
        await session.execute(
            update(Job)
            .where(Job.id.in_(picked), ATTEMPTS_SPENT < max_attempts)
            .values(
                status=JobStatus.queued,
                progress_stage="queued",
                error_code=WORKER_LOST,
                error_detail=lease_lapsed("requeued"),
                lease_expires_at=None,
                updated_at=func.now(),
            )
            .returning(Job.id, Job.audio_path, Job.audio_seconds, Job.owner, Job.priority)
        )
    ).all()
    requeued = [_stranded(row) for row in rows]
    return sorted(requeued, key=lambda job: job.job_id), failed_ids


def _stranded(row: Any) -> Stranded:
    return Stranded(row.id, row.audio_path is not None, row.audio_seconds, row.owner, row.priority)
