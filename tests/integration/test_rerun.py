"""Re-running a failed or cancelled job: ``POST /v1/jobs/{id}/retry`` and its transition.

The API runs in process on the test database; the fencing and the attempt cap are checked
on the transitions themselves, the way a worker calls them.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core import rerun, transitions
from service.core.db.models import Job, JobEvent, OutboxMessage
from service.core.events import schemas as events
from service.core.events.publish import emit
from service.core.events.stream import stream_key
from service.core.settings import Settings
from service.core.transcript import Transcript as TranscriptData
from tests.conftest import TEST_OWNER

Sessions = async_sessionmaker[AsyncSession]
LEASE = 600.0
TRANSCRIPT = TranscriptData(text="again", language="en", duration=1.0, segments=[])


async def _job(
    sessions: Sessions,
    *,
    status: str,
    owner: str = TEST_OWNER,
    source: str = "upload",
    audio: bool = True,
    **values: Any,
) -> uuid.UUID:
    """A job of ``status`` as a finished run leaves it (error, timings, attempts)."""
    job_id = uuid.uuid4()
    async with sessions() as session, session.begin():
        await transitions.create_job(
            session,
            transitions.NewJob(
                id=job_id,
                owner=owner,
                source=source,
                model="tiny.en",
                audio_path=f"/nonexistent/{job_id}.audio" if audio else None,
                audio_url="https://example.com/a.ogg" if source == "url" else None,
                audio_seconds=2.0,
            ),
        )
        final = status in ("completed", "failed", "cancelled")
        await session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status=status,
                progress_stage=status,
                started_at=func.now() if status != "queued" else None,
                finished_at=func.now() if final else None,
                **values,
            )
        )
    return job_id


async def _row(sessions: Sessions, job_id: uuid.UUID) -> Job:
    async with sessions() as session:
        job = await session.get(Job, job_id)
    assert job is not None
    return job


async def _outbox(sessions: Sessions, job_id: uuid.UUID) -> list[str]:
    async with sessions() as session:
        return list(
            await session.scalars(
                select(OutboxMessage.task_name)
                .where(OutboxMessage.job_id == job_id)
                .order_by(OutboxMessage.id)
            )
        )


@pytest.fixture
async def redis(settings: Settings) -> Any:
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


async def test_a_failed_upload_is_queued_again_with_its_audio(
    api: Any, sessions: Sessions, settings: Settings, redis: Redis
) -> None:
    # Given a failed upload job with its audio, two attempts, and the events of that run
    job_id = await _job(
        sessions, status="failed", attempts=2, error_code="invalid_audio", error_detail="bad"
    )
    for event in (
        events.Started(job_id=str(job_id), attempt=2),
        events.Failed(job_id=str(job_id), code="invalid_audio", detail="bad"),
    ):
        await emit(redis, sessions, settings, event)

    # when its owner re-runs it
    response = await api.post(f"/v1/jobs/{job_id}/retry")

    # then it is queued again, the previous run's error and timings cleared, attempts kept
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/jobs/{job_id}"
    view = response.json()
    assert view["status"] == "queued"
    assert view["progress"]["stage"] == "queued"
    assert view["error"] is None
    assert view["started_at"] is None and view["finished_at"] is None
    assert view["attempts"] == 2
    job = await _row(sessions, job_id)
    assert job.attempts_base == 2
    assert job.audio_path == f"/nonexistent/{job_id}.audio"
    # and its transcription is staged in the outbox
    assert await _outbox(sessions, job_id) == ["gpu.transcribe"]
    # and the old run's events are gone: its stream starts again with "queued"
    async with sessions() as session:
        stored = await session.scalar(
            select(func.count())
            .select_from(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.kind == "failed")
        )
    assert stored == 0
    # (the session's GPU worker may already have claimed the new run: only what follows
    # "queued" may be there, never the old run's "failed")
    entries = await redis.xrange(stream_key(job_id))
    kinds = [fields[b"kind"] for _, fields in entries]
    assert kinds[:1] == [b"queued"] and b"failed" not in kinds, kinds


async def test_a_url_job_without_audio_is_fetched_again(api: Any, sessions: Sessions) -> None:
    # Given a cancelled URL job whose audio was never fetched
    job_id = await _job(sessions, status="cancelled", source="url", audio=False)

    # when it is re-run
    response = await api.post(f"/v1/jobs/{job_id}/retry")

    # then its next task is the fetch
    assert response.status_code == 202, response.text
    assert await _outbox(sessions, job_id) == ["io.fetch_audio"]


async def test_another_owners_job_is_not_found(api: Any, sessions: Sessions) -> None:
    # Given another owner's failed job
    job_id = await _job(sessions, status="failed", owner="someone-else")

    # when this key re-runs it, or an id that never existed, or one that is not an id
    theirs = await api.post(f"/v1/jobs/{job_id}/retry")
    unknown = await api.post(f"/v1/jobs/{uuid.uuid4()}/retry")
    malformed = await api.post("/v1/jobs/not-a-job/retry")

    # then all three answer 404 job_not_found, and the other owner's job is untouched
    for response in (theirs, unknown, malformed):
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "job_not_found"
    assert (await _row(sessions, job_id)).status == "failed"
    assert await _outbox(sessions, job_id) == []


@pytest.mark.parametrize("status", ["queued", "running", "completed"])
async def test_an_active_or_completed_job_is_not_retryable(
    api: Any, sessions: Sessions, status: str
) -> None:
    # Given a job that is active or completed
    job_id = await _job(sessions, status=status)

    # when it is re-run
    response = await api.post(f"/v1/jobs/{job_id}/retry")

    # then 409 job_not_retryable, and nothing changes
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "job_not_retryable"
    assert (await _row(sessions, job_id)).status == status
    assert await _outbox(sessions, job_id) == []


async def test_an_upload_whose_audio_retention_removed_is_gone(
    api: Any, sessions: Sessions
) -> None:
    # Given a failed upload job whose audio retention removed
    job_id = await _job(sessions, status="failed", audio=False, error_code="x")

    # when it is re-run
    response = await api.post(f"/v1/jobs/{job_id}/retry")

    # then 409 audio_gone, and the job stays failed
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "audio_gone"
    job = await _row(sessions, job_id)
    assert job.status == "failed" and job.error_code == "x"


async def _claim(sessions: Sessions, job_id: uuid.UUID, **kw: Any) -> transitions.Claim | None:
    async with sessions() as session, session.begin():
        return await transitions.claim_job(
            session, job_id, worker="w", lease_seconds=LEASE, max_attempts=kw.get("cap", 3)
        )


async def _rerun(sessions: Sessions, settings: Settings, job_id: uuid.UUID) -> None:
    async with sessions() as session, session.begin():
        await rerun.rerun_job(session, settings, job_id, owner=TEST_OWNER)


async def test_a_worker_of_the_previous_run_is_fenced_out(
    sessions: Sessions, settings: Settings
) -> None:
    # Given a job claimed by a worker, cancelled while it runs, and re-run at once
    job_id = await _job(sessions, status="queued")
    stale = await _claim(sessions, job_id)
    assert stale is not None and stale.token == 1
    async with sessions() as session, session.begin():
        await transitions.cancel_job(session, job_id, owner=TEST_OWNER)
    await _rerun(sessions, settings, job_id)

    # when a new worker claims it, and the old worker (still decoding) writes
    fresh = await _claim(sessions, job_id)
    assert fresh is not None and fresh.token == 2
    async with sessions() as session, session.begin():
        renewed = await transitions.renew_lease(session, stale, lease_seconds=LEASE)
        completed_by_stale = await transitions.complete_job(session, stale, TRANSCRIPT)

    # then the old worker's writes match nothing, and the new one completes the job
    assert not renewed and not completed_by_stale
    async with sessions() as session, session.begin():
        assert await transitions.complete_job(session, fresh, TRANSCRIPT)
    assert (await _row(sessions, job_id)).status == "completed"


async def test_the_attempt_cap_counts_claims_since_the_rerun(
    sessions: Sessions, settings: Settings
) -> None:
    # Given a job that failed at the cap of 3 attempts (its worker kept dying)
    job_id = await _job(sessions, status="failed", attempts=3, error_code="too_many_attempts")

    # when it is re-run, and each new claim's worker dies too
    await _rerun(sessions, settings, job_id)
    tokens = []
    for _ in range(3):
        claim = await _claim(sessions, job_id, cap=3)
        assert claim is not None
        tokens.append(claim.token)
        async with sessions() as session, session.begin():
            await session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(lease_expires_at=func.now() - timedelta(minutes=1))
            )

    # then it gets three more attempts, numbered on from the old ones, then fails at the cap
    assert tokens == [4, 5, 6]
    assert await _claim(sessions, job_id, cap=3) is None
    job = await _row(sessions, job_id)
    assert job.status == "failed" and job.error_code == "too_many_attempts"
    assert job.attempts == 6 and job.attempts_base == 3
