"""Scenario 12: the retention sweep, every second with a one-second audio window, under load."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update

from service.core import transitions
from service.core.db.models import Job, Transcript
from tests.chaos.conftest import Chaos, slow_server

OLD_JOBS = 30


async def _old_finished_jobs(chaos: Chaos, count: int) -> list[uuid.UUID]:
    """Jobs that completed an hour ago, with transcripts and audio files, for the sweep."""
    audio_dir = chaos.settings.audio_dir
    audio_dir.mkdir(parents=True, exist_ok=True)
    ids = [uuid.uuid4() for _ in range(count)]
    async with chaos.sessions() as session, session.begin():
        for job_id in ids:
            path = audio_dir / f"{job_id}.audio"
            path.write_bytes(chaos.clip.read_bytes())
            await transitions.create_job(
                session,
                transitions.NewJob(
                    id=job_id, owner="old", source="upload", model="tiny.en", audio_path=str(path)
                ),
            )
            session.add(
                Transcript(job_id=job_id, text="old", language="en", duration=1.0, segments=[])
            )
        await session.execute(
            update(Job)
            .where(Job.id.in_(ids))
            .values(status="completed", finished_at=func.now() - timedelta(hours=1))
        )
    return ids


async def test_retention_sweeping_under_load_loses_nothing(chaos: Chaos) -> None:
    """12. Retention every second (1 s audio window) while jobs complete, cancel and re-run"""
    # Given a retention sweep every second that deletes a job's audio one second after it
    # finishes, and jobs ten minutes after; and 30 jobs that finished an hour ago
    await chaos.open(
        retain_audio_seconds=1.0,
        retain_jobs_seconds=600.0,
        retention_sweep_seconds=1.0,
        transcribe_delay_seconds=0.5,
    )
    old = await _old_finished_jobs(chaos, OLD_JOBS)
    url, server = slow_server(chaos.clip, delay=1.0)
    try:
        chaos.start_all()

        # when 16 uploads and 4 URL jobs go through, and 6 uploads are cancelled at a random
        # moment and re-run, 3 at once and 3 after 4 s (racing the audio's deletion)
        uploads = await chaos.submit(16)
        fetched = []
        for index in range(4):
            response = await chaos.api.post("/v1/jobs", json={"audio_url": f"{url}u{index}.wav"})
            assert response.status_code == 202, response.text
            fetched.append(response.json()["id"])

        async def cancel_and_rerun(job_id: str, wait: float) -> tuple[Any, Any]:
            await asyncio.sleep(random.uniform(0.0, 15.0))
            cancel = await chaos.api.post(f"/v1/jobs/{job_id}/cancel")
            await asyncio.sleep(wait)
            return cancel, await chaos.api.post(f"/v1/jobs/{job_id}/retry")

        raced = random.sample(uploads, 6)
        waits = [0.0, 0.0, 0.0, 4.0, 4.0, 4.0]
        results = await asyncio.gather(*map(cancel_and_rerun, raced, waits))
        answers = dict(zip(raced, results, strict=True))
        ids = uploads + fetched
        views = await chaos.audit(ids)
    finally:
        server.shutdown()
        server.server_close()

    # then every job ends as its answers said: a re-run (202) or an untouched job completes
    # with its transcript; a cancel that came too late (409) means it completed; a re-run
    # refused as audio_gone leaves it cancelled. No job failed: no live job lost its audio.
    for job_id in ids:
        cancel, rerun = answers.get(job_id, (None, None))
        status = views[job_id]["status"]
        if rerun is not None and rerun.status_code == 409:
            expected = {"audio_gone": "cancelled", "job_not_retryable": "completed"}
            assert status == expected[rerun.json()["code"]], (rerun.json(), views[job_id])
            assert cancel.status_code == (200 if status == "cancelled" else 409), cancel.text
        else:
            assert rerun is None or rerun.status_code == 202, rerun.text
            assert status == "completed", views[job_id]
    assert not [v for v in views.values() if v["status"] == "failed"], chaos.log_tail()

    # and the sweep kept up: the old jobs are gone, every finished job's audio too
    async def swept() -> bool:
        async with chaos.sessions() as session:
            left = await session.scalar(select(func.count()).where(Job.id.in_(old)))
            holding = await session.scalar(select(func.count()).where(Job.audio_path.is_not(None)))
        files = list(chaos.settings.audio_dir.iterdir())
        return left == 0 and holding == 0 and not files

    await chaos.wait_until(swept, 30, "the retention sweep to delete old jobs and audio")
