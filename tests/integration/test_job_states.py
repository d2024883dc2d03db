"""The job state machine on the real database: claims, fencing, final writes, cancel, delete.

Each test calls ``service.jobs.services`` directly, committing each step in its own
transaction the way the API and the workers do, and reads back what PostgreSQL holds.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core import redrive, transitions
from service.core.db.models import Job, OutboxMessage, Transcript
from service.core.errors import JobAlreadyFinished, JobNotFound
from service.core.outbox import add_message
from service.core.routing import TRANSCRIBE
from service.core.transcript import Transcript as TranscriptData
from service.core.transcript import TranscriptSegment
from service.jobs import queries

Sessions = async_sessionmaker[AsyncSession]

LEASE = 600.0
MAX_ATTEMPTS = 3
TRANSCRIPT = TranscriptData(
    text="hello from the state machine",
    language="en",
    duration=2.5,
    segments=[TranscriptSegment(id=0, start=0.0, end=2.5, text="hello from the state machine")],
)

OWNER = "tests"


async def _new_job(sessions: Sessions, *, with_outbox: bool = False) -> uuid.UUID:
    job_id = uuid.uuid4()
    async with sessions() as session, session.begin():
        await transitions.create_job(
            session,
            transitions.NewJob(
                id=job_id,
                owner=OWNER,
                source="upload",
                model="tiny.en",
                audio_path=f"/nonexistent/{job_id}.wav",
                audio_seconds=2.5,
            ),
        )
        if with_outbox:
            await add_message(session, TRANSCRIBE, [str(job_id)], job_id=job_id, time_limit=60.0)
    return job_id


async def _claim(
    sessions: Sessions, job_id: uuid.UUID, *, worker: str = "w1", max_attempts: int = MAX_ATTEMPTS
) -> transitions.Claim | None:
    async with sessions() as session, session.begin():
        return await transitions.claim_job(
            session, job_id, worker=worker, lease_seconds=LEASE, max_attempts=max_attempts
        )


async def _expire_lease(sessions: Sessions, job_id: uuid.UUID, **values: Any) -> None:
    """Pretend the holder died: its lease ran out a minute ago."""
    async with sessions() as session, session.begin():
        await session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=func.now() - timedelta(minutes=1), **values)
        )


async def _job(sessions: Sessions, job_id: uuid.UUID) -> Job:
    async with sessions() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job


async def _transcript_rows(sessions: Sessions, job_id: uuid.UUID) -> int:
    async with sessions() as session:
        query = select(func.count()).select_from(Transcript).where(Transcript.job_id == job_id)
        return int(await session.scalar(query) or 0)


async def _complete(sessions: Sessions, claim: transitions.Claim) -> bool:
    async with sessions() as session, session.begin():
        done = await transitions.complete_job(session, claim, TRANSCRIPT)
        if not done:
            await session.rollback()
        return done


async def test_a_queued_job_is_claimed_exactly_once(sessions: Sessions) -> None:
    # given a queued job
    job_id = await _new_job(sessions)

    # when two workers claim it one after the other
    first = await _claim(sessions, job_id, worker="w1")
    second = await _claim(sessions, job_id, worker="w2")

    # then only the first holds it, with fencing token 1
    assert first is not None
    assert first.token == 1
    assert first.model == "tiny.en"
    assert second is None
    job = await _job(sessions, job_id)
    assert (job.status, job.attempts, job.worker) == ("running", 1, "w1")
    assert job.lease_expires_at is not None
    assert job.started_at is not None


async def test_a_stale_token_can_not_complete_fail_or_report_progress(sessions: Sessions) -> None:
    # given a running job held with token 1, and a claim presenting a token that never held it
    job_id = await _new_job(sessions)
    claim = await _claim(sessions, job_id)
    assert claim is not None
    stale = dataclasses.replace(claim, token=claim.token + 1)

    # when the stale holder reports progress, completes and fails
    async with sessions() as session, session.begin():
        progressed = await transitions.report_progress(
            session, stale, stage="transcribing", percent=50.0
        )
    completed = await _complete(sessions, stale)
    async with sessions() as session, session.begin():
        failed = await transitions.fail_job(
            session, job_id, code="transcription_failed", detail="boom", token=stale.token
        )

    # then every write is refused and nothing changed
    assert (progressed, completed, failed) == (False, False, False)
    job = await _job(sessions, job_id)
    assert (job.status, job.attempts, job.progress_stage) == ("running", 1, "starting")
    assert job.progress_percent == 0.0
    assert job.error_code is None
    assert job.finished_at is None
    assert await _transcript_rows(sessions, job_id) == 0


async def test_complete_writes_transcript_and_status_in_one_transaction(
    sessions: Sessions,
) -> None:
    # given a running job
    job_id = await _new_job(sessions)
    claim = await _claim(sessions, job_id)
    assert claim is not None

    # when a completion is rolled back instead of committed
    async with sessions() as session:
        async with session.begin():
            assert await transitions.complete_job(session, claim, TRANSCRIPT)
            await session.rollback()

    # then neither the status nor the transcript was written
    job = await _job(sessions, job_id)
    assert job.status == "running"
    assert await _transcript_rows(sessions, job_id) == 0

    # when the completion is committed
    assert await _complete(sessions, claim)

    # then both are there together
    job = await _job(sessions, job_id)
    assert (job.status, job.progress_percent, job.language) == ("completed", 100.0, "en")
    assert job.finished_at is not None
    assert job.lease_expires_at is None
    assert await _transcript_rows(sessions, job_id) == 1
    async with sessions() as session:
        transcript = await queries.get_transcript(session, job_id, owner=OWNER)
    assert transcript == TRANSCRIPT

    # and completing again with the same token writes nothing more
    assert not await _complete(sessions, claim)
    assert await _transcript_rows(sessions, job_id) == 1


async def test_an_expired_job_past_max_attempts_fails_instead_of_being_claimed(
    sessions: Sessions,
) -> None:
    # given a running job that already used every attempt and whose holder died
    job_id = await _new_job(sessions)
    await _expire_lease(sessions, job_id, status="running", attempts=MAX_ATTEMPTS)

    # when a redelivered message tries to claim it
    claim = await _claim(sessions, job_id)

    # then it is failed with a clear reason instead
    assert claim is None
    job = await _job(sessions, job_id)
    assert job.status == "failed"
    assert job.error_code == "too_many_attempts"
    assert job.attempts == MAX_ATTEMPTS
    assert job.finished_at is not None
    assert job.lease_expires_at is None


async def test_a_job_with_a_live_lease_is_not_failed_for_its_attempts(
    sessions: Sessions,
) -> None:
    # given a running job on its last attempt, held by a live worker
    job_id = await _new_job(sessions)
    for _ in range(MAX_ATTEMPTS):
        await _expire_lease(sessions, job_id)
        assert await _claim(sessions, job_id) is not None

    # when a duplicate message arrives
    claim = await _claim(sessions, job_id)

    # then it does nothing: the live holder keeps the job (the error is the earlier
    # takeover's reason, not a failure)
    assert claim is None
    job = await _job(sessions, job_id)
    assert (job.status, job.attempts, job.error_code) == ("running", MAX_ATTEMPTS, "worker_lost")


async def test_an_expired_lease_is_reclaimed_and_the_old_holder_fenced_out(
    sessions: Sessions,
) -> None:
    # given a running job whose first holder's lease ran out
    job_id = await _new_job(sessions)
    old = await _claim(sessions, job_id, worker="w1")
    assert old is not None
    await _expire_lease(sessions, job_id)

    # when another worker claims it
    new = await _claim(sessions, job_id, worker="w2")

    # then the new holder has token 2 and the old one can no longer write
    assert new is not None
    assert (old.token, new.token) == (1, 2)
    job = await _job(sessions, job_id)
    assert (job.status, job.attempts, job.worker) == ("running", 2, "w2")
    assert not await _complete(sessions, old)
    async with sessions() as session, session.begin():
        assert not await transitions.report_progress(session, old, stage="x", percent=1.0)
        assert not await transitions.fail_job(
            session, job_id, code="c", detail="d", token=old.token
        )
    assert (await _job(sessions, job_id)).status == "running"
    assert await _transcript_rows(sessions, job_id) == 0

    # and the new holder completes it
    assert await _complete(sessions, new)
    assert (await _job(sessions, job_id)).status == "completed"
    assert await _transcript_rows(sessions, job_id) == 1


async def test_cancelling_a_queued_job(sessions: Sessions) -> None:
    # given a queued job
    job_id = await _new_job(sessions)

    # when it is cancelled
    async with sessions() as session, session.begin():
        job, cancelled_now = await transitions.cancel_job(session, job_id, owner=OWNER)

    # then it is cancelled and no worker can claim it any more
    assert (job.status, cancelled_now) == ("cancelled", True)
    stored = await _job(sessions, job_id)
    assert stored.status == "cancelled"
    assert stored.finished_at is not None
    assert await _claim(sessions, job_id) is None
    assert (await _job(sessions, job_id)).attempts == 0

    # and cancelling again is a no-op that says so
    async with sessions() as session, session.begin():
        again, cancelled_now = await transitions.cancel_job(session, job_id, owner=OWNER)
    assert (again.status, cancelled_now) == ("cancelled", False)


async def test_cancelling_a_running_job_fences_out_its_worker(sessions: Sessions) -> None:
    # given a running job
    job_id = await _new_job(sessions)
    claim = await _claim(sessions, job_id)
    assert claim is not None

    # when it is cancelled while the worker transcribes
    async with sessions() as session, session.begin():
        job, _ = await transitions.cancel_job(session, job_id, owner=OWNER)
    assert job.status == "cancelled"

    # then the worker's progress and completion are refused
    async with sessions() as session, session.begin():
        assert not await transitions.report_progress(session, claim, stage="x", percent=5.0)
    assert not await _complete(sessions, claim)
    stored = await _job(sessions, job_id)
    assert stored.status == "cancelled"
    assert await _transcript_rows(sessions, job_id) == 0


async def test_cancelling_a_completed_job_is_refused(sessions: Sessions) -> None:
    # given a completed job
    job_id = await _new_job(sessions)
    claim = await _claim(sessions, job_id)
    assert claim is not None
    assert await _complete(sessions, claim)

    # when it is cancelled, then JobAlreadyFinished is raised and the job stays completed
    with pytest.raises(JobAlreadyFinished):
        async with sessions() as session, session.begin():
            await transitions.cancel_job(session, job_id, owner=OWNER)
    assert (await _job(sessions, job_id)).status == "completed"
    assert await _transcript_rows(sessions, job_id) == 1


async def test_deleting_a_job_removes_its_transcript_and_outbox_rows(sessions: Sessions) -> None:
    # given a completed job with an outbox row and a transcript
    job_id = await _new_job(sessions, with_outbox=True)
    claim = await _claim(sessions, job_id)
    assert claim is not None
    assert await _complete(sessions, claim)
    outbox = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.job_id == job_id)
    async with sessions() as session:
        assert await session.scalar(outbox) == 1
    assert await _transcript_rows(sessions, job_id) == 1

    # when it is deleted
    async with sessions() as session, session.begin():
        audio_path = await transitions.delete_job(session, job_id, owner=OWNER)

    # then the job, its transcript and its outbox rows are gone, and its audio path returned
    assert audio_path == f"/nonexistent/{job_id}.wav"
    async with sessions() as session:
        assert await session.get(Job, job_id) is None
        assert await session.scalar(outbox) == 0
    assert await _transcript_rows(sessions, job_id) == 0
    with pytest.raises(JobNotFound):
        async with sessions() as session, session.begin():
            await transitions.delete_job(session, job_id, owner=OWNER)


async def test_a_stranded_running_job_is_redriven_at_most_once_per_lease(
    sessions: Sessions,
) -> None:
    # Given (in one transaction, so the live relay can't see it) a running job whose
    # holder died: lease and last touch a minute old
    async with sessions() as session, session.begin():
        job_id = uuid.uuid4()
        await transitions.create_job(
            session,
            transitions.NewJob(
                id=job_id, owner=OWNER, source="upload", model="tiny.en", audio_path="/a"
            ),
        )
        await session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status="running",
                attempts=1,
                lease_expires_at=func.now() - timedelta(minutes=1),
                updated_at=func.now() - timedelta(minutes=1),
            )
        )

        # when the relay looks for stranded jobs twice in a row
        first = await redrive.stranded_jobs(
            session, everything=False, queued_for=3600, lease_seconds=30
        )
        second = await redrive.stranded_jobs(
            session, everything=False, queued_for=3600, lease_seconds=30
        )

        # then the job is found once (with its audio), and not again within the lease
        assert [j for j in first if j.job_id == job_id] == [
            redrive.Stranded(job_id=job_id, has_audio=True, audio_seconds=None, owner=OWNER)
        ]
        assert job_id not in {j.job_id for j in second}
        await session.rollback()


async def test_a_fresh_queued_job_is_not_stranded_unless_the_broker_was_lost(
    sessions: Sessions,
) -> None:
    async with sessions() as session, session.begin():
        # Given a queued job just created
        job_id = uuid.uuid4()
        await transitions.create_job(
            session,
            transitions.NewJob(
                id=job_id, owner=OWNER, source="url", model="tiny.en", audio_url="http://a"
            ),
        )

        # when the relay looks normally, and after the broker lost its queues
        normal = await redrive.stranded_jobs(
            session, everything=False, queued_for=3600, lease_seconds=30
        )
        lost = await redrive.stranded_jobs(
            session, everything=True, queued_for=3600, lease_seconds=30, after=None, limit=100000
        )

        # then only the second finds it, as a job still to fetch
        assert job_id not in {j.job_id for j in normal}
        assert (
            redrive.Stranded(job_id=job_id, has_audio=False, audio_seconds=None, owner=OWNER)
            in lost
        )
        await session.rollback()


async def test_releasing_a_claim_requeues_the_job_and_keeps_its_attempts(
    sessions: Sessions,
) -> None:
    # Given a claimed job
    job_id = await _new_job(sessions)
    claim = await _claim(sessions, job_id)
    assert claim is not None

    # when its worker hands it back (its model would not load)
    async with sessions() as session, session.begin():
        assert await transitions.release_claim(session, claim)

    # then it is queued again with its attempt counted, and the old claim is fenced out
    job = await _job(sessions, job_id)
    assert (job.status, job.attempts, job.lease_expires_at) == ("queued", 1, None)
    async with sessions() as session, session.begin():
        assert not await transitions.report_progress(session, claim, stage="x", percent=1.0)
    again = await _claim(sessions, job_id)
    assert again is not None and again.token == 2


async def test_the_reaper_requeues_a_job_whose_worker_stopped_renewing_with_a_reason(
    sessions: Sessions,
) -> None:
    # given a running job whose worker stopped renewing its lease, and one still renewed
    stuck = await _new_job(sessions)
    live = await _new_job(sessions)
    assert await _claim(sessions, stuck, worker="gpu-a") is not None
    assert await _claim(sessions, live, worker="gpu-b") is not None
    await _expire_lease(sessions, stuck)

    # when the reaper runs
    async with sessions() as session, session.begin():
        requeued, failed = await redrive.reap_expired_leases(session, max_attempts=MAX_ATTEMPTS)

    # then only the stuck job is queued again, saying which worker stopped and when
    assert [job.job_id for job in requeued] == [stuck] and failed == []
    job = await _job(sessions, stuck)
    assert (job.status, job.attempts, job.error_code) == ("queued", 1, "worker_lost")
    assert job.error_detail == "worker gpu-a stopped renewing its lease during attempt 1; requeued"
    assert (await _job(sessions, live)).status == "running"

    # and the next claim keeps the reason visible until the job completes
    claim = await _claim(sessions, stuck, worker="gpu-c")
    assert claim is not None and claim.token == 2
    assert (await _job(sessions, stuck)).error_code == "worker_lost"
    assert await _complete(sessions, claim)
    job = await _job(sessions, stuck)
    assert (job.status, job.error_code, job.error_detail) == ("completed", None, None)


async def test_the_reaper_fails_a_job_that_used_up_its_deliveries(sessions: Sessions) -> None:
    # given a job whose worker died on its last allowed attempt
    job_id = await _new_job(sessions)
    assert await _claim(sessions, job_id, worker="gpu-a", max_attempts=1) is not None
    await _expire_lease(sessions, job_id)

    # when the reaper runs
    async with sessions() as session, session.begin():
        requeued, failed = await redrive.reap_expired_leases(session, max_attempts=1)

    # then it fails with a clear code instead of going round again
    assert requeued == [] and failed == [job_id]
    job = await _job(sessions, job_id)
    assert (job.status, job.error_code) == ("failed", "too_many_attempts")
    assert "stopped renewing its lease during attempt 1; gave up after 1 attempts" in str(
        job.error_detail
    )


async def test_taking_over_an_expired_lease_records_why(sessions: Sessions) -> None:
    # given a running job whose lease ran out before the reaper saw it
    job_id = await _new_job(sessions)
    assert await _claim(sessions, job_id, worker="gpu-a") is not None
    await _expire_lease(sessions, job_id)

    # when a redelivered message claims it directly
    assert await _claim(sessions, job_id, worker="gpu-b") is not None

    # then the job says the previous attempt's worker was lost
    job = await _job(sessions, job_id)
    assert (job.status, job.attempts, job.error_code) == ("running", 2, "worker_lost")
    assert str(job.error_detail).startswith(
        "worker gpu-a stopped renewing its lease during attempt 1"
    )
