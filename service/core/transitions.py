"""The job state machine's transitions: one conditional UPDATE each (see ``states``).

The API creates, cancels and deletes; workers claim, renew, report, complete, fail, release
and reap. Every write after a claim presents the claim's fencing token.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec
from sqlalchemy import and_, case, delete, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.core import metrics
from service.core.db.models import Job, Transcript
from service.core.errors import JobAlreadyFinished, JobNotFound
from service.core.states import ACTIVE, WORKER_LOST, JobStatus
from service.core.transcript import Transcript as TranscriptData


@dataclass(frozen=True, slots=True)
class NewJob:
    """What a submission knows before the job row exists."""

    id: uuid.UUID
    owner: str
    source: str
    model: str
    language: str | None = None
    word_timestamps: bool = False
    initial_prompt: str | None = None
    task: str = "transcribe"
    temperature: float | None = None
    diarization: dict[str, Any] | None = None
    audio_url: str | None = None
    audio_path: str | None = None
    filename: str | None = None
    content_type: str | None = None
    audio_bytes: int | None = None
    audio_seconds: float | None = None
    webhook_url: str | None = None
    webhook_key_id: uuid.UUID | None = None
    audio_sha256: str | None = None
    options_digest: str | None = None
    priority: str = "normal"


@dataclass(frozen=True, slots=True)
class Claim:
    """A worker's hold on a running job; ``token`` fences its later writes."""

    job_id: uuid.UUID
    token: int
    audio_path: str | None
    audio_seconds: float | None
    model: str
    language: str | None
    word_timestamps: bool
    initial_prompt: str | None
    filename: str | None = None
    # ``attempts`` at the job's latest re-run: this claim is attempt ``token - attempts_base``
    # of the run, which is what the cap counts.
    attempts_base: int = 0
    task: str = "transcribe"
    temperature: float | None = None
    diarization: dict[str, Any] | None = None


async def create_job(session: AsyncSession, new: NewJob) -> Job:
    """Insert a queued job in the caller's transaction."""
    job = Job(
        id=new.id,
        owner=new.owner,
        status=JobStatus.queued,
        source=new.source,
        model=new.model,
        language=new.language,
        word_timestamps=new.word_timestamps,
        initial_prompt=new.initial_prompt,
        task=new.task,
        temperature=new.temperature,
        diarization=new.diarization,
        audio_url=new.audio_url,
        audio_path=new.audio_path,
        filename=new.filename,
        content_type=new.content_type,
        audio_bytes=new.audio_bytes,
        audio_seconds=new.audio_seconds,
        webhook_url=new.webhook_url,
        webhook_key_id=new.webhook_key_id,
        audio_sha256=new.audio_sha256,
        options_digest=new.options_digest,
        priority=new.priority,
        progress_stage="queued",
        progress_percent=0.0,
        attempts=0,
    )
    session.add(job)
    await session.flush()
    await session.refresh(job)
    metrics.count_submitted(session, new.source)
    return job


async def cancel_job(session: AsyncSession, job_id: uuid.UUID, *, owner: str) -> tuple[Job, bool]:
    """Cancel a queued or running job; returns the job and whether this call cancelled it.

    Cancelling a cancelled job changes nothing (False); a completed or failed one raises
    ``JobAlreadyFinished``. A running worker finds out when its fenced write matches no row.
    """
    result = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.owner == owner, Job.status.in_(ACTIVE))
        .values(
            status=JobStatus.cancelled,
            finished_at=func.now(),
            updated_at=func.now(),
            progress_stage="cancelled",
            lease_expires_at=None,
        )
    )
    job = await session.get(Job, job_id, populate_existing=True)
    if job is None or job.owner != owner:
        raise JobNotFound(f"no job with id {job_id}")
    if result.rowcount == 0 and job.status in (JobStatus.completed, JobStatus.failed):  # type: ignore[attr-defined]
        raise JobAlreadyFinished(f"job {job_id} already {job.status}")
    if result.rowcount:  # type: ignore[attr-defined]
        metrics.count_finished(session, JobStatus.cancelled, [job])
    return job, bool(result.rowcount)  # type: ignore[attr-defined]


async def delete_job(session: AsyncSession, job_id: uuid.UUID, *, owner: str) -> str | None:
    """Delete the owner's job with its transcript and outbox rows; returns its audio path."""
    result = await session.execute(
        delete(Job).where(Job.id == job_id, Job.owner == owner).returning(Job.id, Job.audio_path)
    )
    row = result.first()
    if row is None:
        raise JobNotFound(f"no job with id {job_id}")
    path: str | None = row.audio_path
    return path


# Claims since the job's latest re-run: what the attempt cap counts (see ``rerun``).
ATTEMPTS_SPENT = Job.attempts - Job.attempts_base


async def claim_job(
    session: AsyncSession,
    job_id: uuid.UUID,
    *,
    worker: str,
    lease_seconds: float,
    max_attempts: int,
) -> Claim | None:
    """Move a queued job (or a running one whose lease ran out) to running, bumping attempts.

    Returns None when the job is gone, finished, cancelled, or held by a live worker: a
    duplicate or late message then does nothing (see ``lease_remaining`` to tell "held"
    apart). A job whose attempts reached ``max_attempts`` is failed instead of claimed.
    """
    claimable = or_(
        Job.status == JobStatus.queued,
        and_(Job.status == JobStatus.running, Job.lease_expires_at < func.now()),
    )
    row = (
        await session.execute(
            update(Job)
            .where(Job.id == job_id, claimable, ATTEMPTS_SPENT < max_attempts)
            .values(
                status=JobStatus.running,
                attempts=Job.attempts + 1,
                worker=worker,
                lease_expires_at=func.now() + timedelta(seconds=lease_seconds),
                started_at=func.coalesce(Job.started_at, func.now()),
                progress_stage="starting",
                updated_at=func.now(),
                # Taking over an expired lease says why; a requeued job keeps the reaper's
                # reason. Either stays visible until the job completes.
                error_code=case(
                    (Job.status == JobStatus.running, literal(WORKER_LOST)), else_=Job.error_code
                ),
                error_detail=case(
                    (Job.status == JobStatus.running, lease_lapsed("claimed again")),
                    else_=Job.error_detail,
                ),
            )
            .returning(
                Job.attempts,
                Job.audio_path,
                Job.audio_seconds,
                Job.model,
                Job.language,
                Job.word_timestamps,
                Job.initial_prompt,
                Job.filename,
                Job.attempts_base,
                Job.task,
                Job.temperature,
                Job.created_at,
                Job.started_at,
                Job.diarization,
            )
        )
    ).first()
    if row is None:
        capped = await session.execute(
            update(Job)
            .where(Job.id == job_id, claimable, ATTEMPTS_SPENT >= max_attempts)
            .values(
                status=JobStatus.failed,
                error_code="too_many_attempts",
                error_detail=f"gave up after {max_attempts} attempts (the worker kept dying)",
                finished_at=func.now(),
                updated_at=func.now(),
                lease_expires_at=None,
            )
            .returning(Job.created_at, Job.finished_at)
        )
        metrics.count_finished(session, JobStatus.failed, capped.all())
        return None
    metrics.count_claim(session, row.attempts, row.created_at, row.started_at)
    return Claim(
        job_id=job_id,
        token=row.attempts,
        audio_path=row.audio_path,
        audio_seconds=row.audio_seconds,
        model=row.model,
        language=row.language,
        word_timestamps=row.word_timestamps,
        initial_prompt=row.initial_prompt,
        filename=row.filename,
        attempts_base=row.attempts_base,
        task=row.task,
        temperature=row.temperature,
        diarization=row.diarization,
    )


def lease_lapsed(outcome: str) -> Any:
    """SQL text: which worker stopped renewing which attempt's lease, and what followed."""
    return func.concat(
        "worker ",
        func.coalesce(Job.worker, "?"),
        " stopped renewing its lease during attempt ",
        Job.attempts,
        f"; {outcome}",
    )


async def renew_lease(session: AsyncSession, claim: Claim, *, lease_seconds: float) -> bool:
    """Extend the claim's lease; False when the claim was lost (cancelled, fenced out)."""
    result = await session.execute(
        update(Job)
        .where(_held(claim.job_id, claim.token))
        .values(lease_expires_at=func.now() + timedelta(seconds=lease_seconds))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def lease_remaining(session: AsyncSession, job_id: uuid.UUID) -> float | None:
    """Seconds until a running job's lease runs out (None when the job is not running)."""
    remaining = await session.scalar(
        select(func.extract("epoch", Job.lease_expires_at - func.now())).where(
            Job.id == job_id, Job.status == JobStatus.running
        )
    )
    return None if remaining is None else max(0.0, float(remaining))


def _held(job_id: uuid.UUID, token: int) -> Any:
    return and_(Job.id == job_id, Job.status == JobStatus.running, Job.attempts == token)


async def report_progress(
    session: AsyncSession, claim: Claim, *, stage: str, percent: float
) -> bool:
    """Record progress of a held job; False when the claim was lost (cancelled, fenced out)."""
    result = await session.execute(
        update(Job)
        .where(_held(claim.job_id, claim.token))
        .values(progress_stage=stage, progress_percent=percent, updated_at=func.now())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def complete_job(session: AsyncSession, claim: Claim, transcript: TranscriptData) -> bool:
    """Store the transcript and mark the job completed, in the caller's transaction.

    Returns False (and writes nothing) when the claim was lost.
    """
    result = await session.execute(
        update(Job)
        .where(_held(claim.job_id, claim.token))
        .values(
            status=JobStatus.completed,
            progress_stage="completed",
            progress_percent=100.0,
            language=transcript.language,
            audio_seconds=transcript.duration,
            finished_at=func.now(),
            updated_at=func.now(),
            lease_expires_at=None,
            # An earlier attempt's reason (worker_lost) no longer describes a finished job.
            error_code=None,
            error_detail=None,
        )
        .returning(Job.created_at, Job.finished_at)
    )
    if not (done := result.all()):
        return False
    metrics.count_finished(session, JobStatus.completed, done)
    session.add(
        Transcript(
            job_id=claim.job_id,
            text=transcript.text,
            language=transcript.language,
            duration=transcript.duration,
            segments=msgspec.to_builtins(transcript.segments),
        )
    )
    await session.flush()
    return True


async def fail_job(
    session: AsyncSession, job_id: uuid.UUID, *, code: str, detail: str, token: int
) -> bool:
    """Mark the job failed with a reason, only if claim ``token`` still holds it."""
    return bool(await mark_failed(session, _held(job_id, token), code=code, detail=detail))


async def fail_fetch(session: AsyncSession, job_id: uuid.UUID, *, code: str, detail: str) -> bool:
    """Fail a URL job whose audio was not fetched yet; False when it has audio or moved on.

    A fetcher's failure must not touch a job another fetcher already completed the fetch of
    (a duplicate message), let alone one that is being transcribed.
    """
    unfetched = and_(Job.id == job_id, Job.status == JobStatus.queued, Job.audio_path.is_(None))
    return bool(await mark_failed(session, unfetched, code=code, detail=detail))


async def mark_failed(
    session: AsyncSession, condition: Any, *, code: str, detail: Any
) -> list[uuid.UUID]:
    """Fail the jobs matching ``condition``; returns their ids."""
    result = await session.execute(
        update(Job)
        .where(condition)
        .values(
            status=JobStatus.failed,
            progress_stage="failed",
            error_code=code,
            error_detail=detail,
            finished_at=func.now(),
            updated_at=func.now(),
            lease_expires_at=None,
        )
        .returning(Job.id, Job.created_at, Job.finished_at)
    )
    rows = result.all()
    metrics.count_finished(session, JobStatus.failed, rows)
    return [row.id for row in rows]


async def release_claim(session: AsyncSession, claim: Claim) -> bool:
    """Put a held job back to queued (the worker, not the job, is at fault); keeps attempts."""
    result = await session.execute(
        update(Job)
        .where(_held(claim.job_id, claim.token))
        .values(
            status=JobStatus.queued,
            progress_stage="queued",
            lease_expires_at=None,
            worker=None,
            updated_at=func.now(),
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def attach_audio(
    session: AsyncSession,
    job_id: uuid.UUID,
    *,
    audio_path: str,
    audio_bytes: int,
    audio_seconds: float,
    content_type: str | None,
    audio_sha256: str | None = None,
) -> bool:
    """Record fetched audio on a queued job that has none yet; False when that no longer fits."""
    result = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued, Job.audio_path.is_(None))
        .values(
            audio_path=audio_path,
            audio_bytes=audio_bytes,
            audio_seconds=audio_seconds,
            content_type=content_type,
            audio_sha256=audio_sha256,
            progress_stage="queued",
            updated_at=func.now(),
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def start_fetch(session: AsyncSession, job_id: uuid.UUID) -> str | None:
    """Mark a queued URL job without audio as ``fetching``; its ``audio_url``, else None.

    None means there is nothing to fetch: the job is gone, no longer queued, or already has
    its audio (a duplicate message).
    """
    url: str | None = await session.scalar(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status == JobStatus.queued,
            Job.audio_path.is_(None),
            Job.audio_url.is_not(None),
        )
        .values(progress_stage="fetching", updated_at=func.now())
        .returning(Job.audio_url)
    )
    return url
