"""Retention on the real database and a real audio folder: beat's sweep, called directly.

Jobs are made finished "long ago" by moving ``finished_at`` back; the windows are an hour
(audio) and a day (jobs), so jobs other tests finish a moment ago are never due.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core import retention, transitions
from service.core.db.models import IdempotencyKey, Job, JobEvent, OutboxMessage, Transcript
from service.core.events import schemas as events
from service.core.events.publish import emit
from service.core.events.stream import stream_key
from service.core.outbox import add_message
from service.core.routing import TRANSCRIBE
from service.core.settings import Settings
from workers.io import retention as sweep
from workers.io.retention import retention_sweep

Sessions = async_sessionmaker[AsyncSession]
HOUR = 3600.0
DAY = 86400.0


@pytest.fixture
async def ctx(
    settings: Settings, sessions: Sessions, tmp_path: Path
) -> AsyncIterator[dict[str, Any]]:
    """What the IO worker hands the sweep, with its own audio folder.

    The jobs a test made are deleted after it, so the next test's sweep finds only its own.
    """
    redis = Redis.from_url(settings.redis_url)
    swept = dataclasses.replace(
        settings, storage_dir=tmp_path / "audio", retain_audio_seconds=HOUR, retain_jobs_seconds=0
    )
    swept.audio_dir.mkdir()
    made: list[uuid.UUID] = []
    yield {"settings": swept, "sessions": sessions, "redis": redis, "made": made}
    async with sessions() as session, session.begin():
        await session.execute(delete(Job).where(Job.id.in_(made)))
    await redis.aclose()


def _done(**counts: int) -> dict[str, int]:
    """What a sweep returns when it deleted ``counts`` and nothing else."""
    return {"jobs": 0, "audio": 0, "files": 0, "outbox": 0, "idempotency_keys": 0, **counts}


def _retain(ctx: dict[str, Any], *, audio: float, jobs: float) -> None:
    ctx["settings"] = dataclasses.replace(
        ctx["settings"], retain_audio_seconds=audio, retain_jobs_seconds=jobs
    )


def _file(path: Path, *, age: float = 0.0) -> Path:
    path.write_bytes(b"RIFF audio")
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


async def _job(
    ctx: dict[str, Any],
    *,
    status: str,
    finished_ago: float | None = None,
    audio: bool = True,
    source: str = "upload",
) -> tuple[uuid.UUID, Path]:
    """A job of ``status`` with an audio file (written a while before it finished), a
    transcript when completed, a stored milestone and an outbox row."""
    job_id = uuid.uuid4()
    ctx["made"].append(job_id)
    path = ctx["settings"].audio_dir / f"{job_id}.audio"
    age = (finished_ago or 0.0) + 60
    if audio:
        _file(path, age=age)
    async with ctx["sessions"]() as session, session.begin():
        await transitions.create_job(
            session,
            transitions.NewJob(
                id=job_id,
                owner="tests",
                source=source,
                model="tiny.en",
                audio_path=str(path) if audio else None,
                audio_url="https://example.com/a.ogg" if source == "url" else None,
                audio_seconds=2.0,
            ),
        )
        await add_message(session, TRANSCRIBE, [str(job_id)], job_id=job_id, time_limit=60.0)
        values: dict[str, Any] = {"status": status}
        if finished_ago is not None:
            values["finished_at"] = func.now() - timedelta(seconds=finished_ago)
        await session.execute(update(Job).where(Job.id == job_id).values(**values))
        if status == "completed":
            session.add(
                Transcript(job_id=job_id, text="hi", language="en", duration=2.0, segments=[])
            )
    event: events.Event = (
        events.Completed(job_id=str(job_id))
        if status == "completed"
        else events.Started(job_id=str(job_id), attempt=1)
    )
    await emit(ctx["redis"], ctx["sessions"], ctx["settings"], event)
    return job_id, path


async def _row(ctx: dict[str, Any], job_id: uuid.UUID) -> Job | None:
    async with ctx["sessions"]() as session:
        return await session.get(Job, job_id)


async def _count(ctx: dict[str, Any], model: Any, job_id: uuid.UUID) -> int:
    async with ctx["sessions"]() as session:
        found = await session.scalar(
            select(func.count()).select_from(model).where(model.job_id == job_id)
        )
    return int(found or 0)


async def test_old_audio_goes_and_the_job_and_its_transcript_stay(ctx: dict[str, Any]) -> None:
    # Given a job that finished two hours ago, and one that finished ten minutes ago
    old, old_audio = await _job(ctx, status="completed", finished_ago=2 * HOUR)
    recent, recent_audio = await _job(ctx, status="failed", finished_ago=600)

    # when the sweep runs with audio kept for an hour
    done = await retention_sweep(ctx)

    # then the old job's audio is gone and nothing points at it; job and transcript stay
    assert done == _done(audio=1)
    assert not old_audio.exists()
    job = await _row(ctx, old)
    assert job is not None and job.status == "completed" and job.audio_path is None
    assert await _count(ctx, Transcript, old) == 1
    # and the recent job keeps its audio
    kept = await _row(ctx, recent)
    assert recent_audio.exists() and kept is not None and kept.audio_path == str(recent_audio)

    # and a second sweep finds nothing to do
    assert await retention_sweep(ctx) == _done()
    assert recent_audio.exists()


async def test_old_jobs_go_with_transcript_events_outbox_and_files(ctx: dict[str, Any]) -> None:
    # Given a job that finished two days ago, with a partial download left beside its audio,
    # and one that finished an hour ago
    _retain(ctx, audio=0, jobs=DAY)
    old, old_audio = await _job(ctx, status="completed", finished_ago=2 * DAY)
    partial = _file(old_audio.with_suffix(".1234.part"), age=2 * DAY)
    recent, recent_audio = await _job(ctx, status="cancelled", finished_ago=HOUR)
    assert await _count(ctx, JobEvent, old) == 1
    assert await _count(ctx, OutboxMessage, old) == 1
    assert await ctx["redis"].exists(stream_key(old))

    # when the sweep runs with jobs kept for a day (audio forever)
    done = await retention_sweep(ctx)

    # then the old job is gone with its transcript, events, outbox rows, stream and files
    assert done == _done(jobs=1)
    assert await _row(ctx, old) is None
    for model in (Transcript, JobEvent, OutboxMessage):
        assert await _count(ctx, model, old) == 0, model
    assert not await ctx["redis"].exists(stream_key(old))
    assert not old_audio.exists() and not partial.exists()
    # and the recent job is whole
    assert await _row(ctx, recent) is not None and recent_audio.exists()
    assert await _count(ctx, JobEvent, recent) == 1

    # and a second sweep finds nothing to do
    assert await retention_sweep(ctx) == _done()


async def test_active_jobs_are_never_touched(ctx: dict[str, Any]) -> None:
    # Given active jobs with old audio: a queued upload, a running job whose row even has an
    # old finished_at (it must not matter), and a URL job mid-fetch with an old partial file
    _retain(ctx, audio=HOUR, jobs=HOUR)
    queued, queued_audio = await _job(ctx, status="queued")
    running, running_audio = await _job(ctx, status="running", finished_ago=2 * DAY)
    fetching, _ = await _job(ctx, status="queued", audio=False, source="url")
    part = _file(ctx["settings"].audio_dir / f"{fetching}.abc.part", age=2 * DAY)
    for path in (queued_audio, running_audio):
        os.utime(path, (time.time() - 2 * DAY, time.time() - 2 * DAY))

    # when the sweep runs with every window at an hour
    done = await retention_sweep(ctx)

    # then every job, and every file they need, is still there
    assert done == _done()
    for job_id, path in ((queued, queued_audio), (running, running_audio), (fetching, part)):
        job = await _row(ctx, job_id)
        assert job is not None and path.exists(), job_id
    for job_id, path in ((queued, queued_audio), (running, running_audio)):
        job = await _row(ctx, job_id)
        assert job is not None and job.audio_path == str(path)


async def test_a_row_another_transaction_holds_is_skipped_until_it_is_free(
    ctx: dict[str, Any],
) -> None:
    # Given a due job whose row another transaction holds (a re-run deciding, say)
    job_id, audio = await _job(ctx, status="failed", finished_ago=2 * HOUR)
    async with ctx["sessions"]() as holder, holder.begin():
        await holder.execute(text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": job_id})

        # when the sweep runs meanwhile
        done = await retention_sweep(ctx)

        # then it does not wait and leaves the job alone
        assert done["audio"] == 0
        assert audio.exists()

    # and the next sweep, with the row free, takes it
    assert (await retention_sweep(ctx))["audio"] == 1
    assert not audio.exists()


async def test_work_is_done_in_bounded_batches_within_a_time_budget(
    ctx: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given five due jobs and batches of two
    jobs = [await _job(ctx, status="completed", finished_ago=2 * HOUR) for _ in range(5)]
    monkeypatch.setattr(retention, "BATCH", 2)

    # when one statement runs, it takes one batch
    async with ctx["sessions"]() as session, session.begin():
        first = await retention.expire_audio(session, older_than=HOUR, limit=2)
    assert len(first) == 2
    retention.delete_files(job.audio_path for job in first)

    # and a sweep with no time left takes one more batch and stops
    monkeypatch.setattr(sweep, "BUDGET_SECONDS", 0.0)
    assert (await retention_sweep(ctx))["audio"] == 2

    # then the next sweep finishes the rest, and every audio file is gone
    monkeypatch.setattr(sweep, "BUDGET_SECONDS", 30.0)
    assert (await retention_sweep(ctx))["audio"] == 1
    assert not any(path.exists() for _, path in jobs)
    for job_id, _ in jobs:
        job = await _row(ctx, job_id)
        assert job is not None and job.audio_path is None


async def test_leftover_files_go_and_files_a_job_may_need_stay(ctx: dict[str, Any]) -> None:
    # Given files of no job (one from a crash two hours ago, one being uploaded now),
    audio_dir: Path = ctx["settings"].audio_dir
    orphan = _file(audio_dir / f"{uuid.uuid4()}.audio", age=2 * HOUR)
    uploading = _file(audio_dir / f"{uuid.uuid4()}.audio", age=10)
    # a partial download of a URL job that failed two hours ago, and of one failed just now,
    failed_old, _ = await _job(
        ctx, status="failed", finished_ago=2 * HOUR, audio=False, source="url"
    )
    old_part = _file(audio_dir / f"{failed_old}.x1.part", age=3 * HOUR)
    failed_now, _ = await _job(ctx, status="failed", finished_ago=60, audio=False, source="url")
    new_part = _file(audio_dir / f"{failed_now}.x2.part", age=3 * HOUR)
    # and a file that is not a job's
    other = _file(audio_dir / "README.txt", age=2 * DAY)

    # when the sweep runs with audio kept for an hour
    done = await retention_sweep(ctx)

    # then the crash's file and the old partial download are gone, the rest stays
    assert done["files"] == 2
    assert not orphan.exists() and not old_part.exists()
    assert uploading.exists() and new_part.exists() and other.exists()


async def test_old_bookkeeping_goes_whatever_the_retention_settings(
    ctx: dict[str, Any],
) -> None:
    # Given retention off, four jobs whose outbox rows were published two days ago, an hour
    # ago, and not at all (one made two days ago), and Idempotency-Keys made two days ago
    # (past the TTL of a day) and an hour ago
    _retain(ctx, audio=0, jobs=0)
    ctx["settings"] = dataclasses.replace(ctx["settings"], idempotency_ttl_seconds=DAY)
    old, recent, unsent, old_unsent = [
        (await _job(ctx, status="completed", finished_ago=HOUR))[0] for _ in range(4)
    ]
    ages = {old: 2 * DAY, recent: HOUR}
    async with ctx["sessions"]() as session, session.begin():
        for job_id, age in ages.items():
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.job_id == job_id)
                .values(published_at=func.now() - timedelta(seconds=age))
            )
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.job_id == old_unsent)
            .values(created_at=func.now() - timedelta(days=2))
        )
        for key, job_id, age in (("old", old, 2 * DAY), ("new", recent, HOUR)):
            session.add(
                IdempotencyKey(
                    owner="tests",
                    key=f"{key}-{job_id}",
                    fingerprint="f",
                    job_id=job_id,
                    created_at=func.now() - timedelta(seconds=age),
                )
            )

    # when the sweep runs
    done = await retention_sweep(ctx)

    # then only the row published two days ago and the key past its TTL went
    assert (done["outbox"], done["idempotency_keys"]) == (1, 1), done
    assert await _count(ctx, OutboxMessage, old) == 0
    for job_id in (recent, unsent, old_unsent):
        assert await _count(ctx, OutboxMessage, job_id) == 1, job_id
    assert await _count(ctx, IdempotencyKey, old) == 0
    assert await _count(ctx, IdempotencyKey, recent) == 1
    # and every job is still there
    for job_id in (old, recent, unsent, old_unsent):
        assert await _row(ctx, job_id) is not None

    # and the next sweep finds nothing of it
    again = await retention_sweep(ctx)
    assert (again["outbox"], again["idempotency_keys"]) == (0, 0)
