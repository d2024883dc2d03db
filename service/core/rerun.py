"""Re-running a failed or cancelled job: back to ``queued`` with its audio, its next task staged.

The one transition out of a final state (see ``states``). ``attempts`` keeps counting: it is
the fencing token, and a worker of the previous run may still hold an old token (a cancelled
job's worker stops only at its next fenced write), so a number it could present must never
be handed out again. The re-run records ``attempts_base = attempts`` instead, and the attempt
cap counts claims since then (``attempts - attempts_base``).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy import delete, func, or_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.db.models import Job, JobEvent
from service.core.errors import AudioGone, JobNotFound, JobNotRetryable
from service.core.events.publish import emit
from service.core.events.schemas import Queued
from service.core.events.stream import stream_key
from service.core.fairness import stage_next_task
from service.core.settings import Settings
from service.core.states import JobStatus

log = logging.getLogger(__name__)

RETRYABLE = (JobStatus.failed, JobStatus.cancelled)


@dataclass(frozen=True, slots=True)
class Rerun:
    """A job queued again, and the outbox message to publish once the caller committed."""

    job: Job
    outbox_id: int


async def rerun_job(
    session: AsyncSession, settings: Settings, job_id: uuid.UUID, *, owner: str
) -> Rerun:
    """Put the owner's failed or cancelled job back to queued, in the caller's transaction.

    Clears the error and the timings of the previous run and its stored events (a client
    following the job must not stop at the old terminal event), and stages the job's next
    task: transcription when the job has audio, a fetch when a URL job has none (never
    fetched, or removed by retention). Raises ``JobNotFound`` (also for another owner's job),
    ``JobNotRetryable`` (active or completed) or ``AudioGone`` (an upload whose audio
    retention removed).
    """
    row = (
        await session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.owner == owner,
                Job.status.in_(RETRYABLE),
                or_(Job.audio_path.is_not(None), Job.source == "url"),
            )
            .values(
                status=JobStatus.queued,
                progress_stage="queued",
                progress_percent=0.0,
                error_code=None,
                error_detail=None,
                worker=None,
                lease_expires_at=None,
                started_at=None,
                finished_at=None,
                attempts_base=Job.attempts,
                updated_at=func.now(),
            )
            .returning(Job.audio_path, Job.audio_seconds, Job.priority)
        )
    ).first()
    if row is None:
        job = await session.get(Job, job_id, populate_existing=True)
        if job is None or job.owner != owner:
            raise JobNotFound(f"no job with id {job_id}")
        if job.status not in RETRYABLE:
            raise JobNotRetryable(
                f"job {job_id} is {job.status}; only a failed or cancelled job can be re-run"
            )
        raise AudioGone(f"the audio of job {job_id} was deleted (retention); submit it again")
    await session.execute(delete(JobEvent).where(JobEvent.job_id == job_id))
    outbox_id = await stage_next_task(
        session,
        settings,
        job_id,
        owner=owner,
        priority=row.priority,
        has_audio=row.audio_path is not None,
        audio_seconds=row.audio_seconds,
    )
    job = await session.get(Job, job_id, populate_existing=True)
    if job is None:  # can't happen: this transaction holds the row since the UPDATE
        raise JobNotFound(f"no job with id {job_id}")
    return Rerun(job=job, outbox_id=outbox_id)


async def restart_events(
    redis: Redis,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    job_id: uuid.UUID,
) -> None:
    """After a re-run committed: drop the previous run's event stream and publish ``queued``.

    Best effort, like every event: Redis is transport, and the stream would expire anyway.
    """
    try:
        await redis.delete(stream_key(job_id))
    except Exception as exc:
        log.warning("job %s: previous event stream not dropped: %r", job_id, exc)
    await emit(redis, sessions, settings, Queued(job_id=str(job_id)))
