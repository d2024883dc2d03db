"""A GPU child killed mid-job: its message comes back and the job completes once."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from service.core.db.models import Transcript
from tests.audio import SENTENCES, speak
from tests.conftest import WorkerProcess, descendants, wait_for_job


async def test_a_killed_gpu_child_is_replaced_and_the_job_completes_once(
    api: Any, workers: dict[str, WorkerProcess], sessions: Any, tmp_path: Path
) -> None:
    # Given a job long enough to be caught mid-transcription
    clip = speak(" ".join(SENTENCES * 3), tmp_path / "long.ogg", rate=160)
    with clip.open("rb") as audio:
        response = await api.post("/v1/jobs", files={"file": ("long.ogg", audio, "audio/ogg")})
    assert response.status_code == 202
    job_id = response.json()["id"]

    # when its GPU child is SIGKILLed while it runs
    deadline = time.monotonic() + 120
    while True:
        job = (await api.get(f"/v1/jobs/{job_id}")).json()
        if job["status"] == "running":
            break
        assert job["status"] == "queued" and time.monotonic() < deadline, job
        await asyncio.sleep(0.05)
    children = descendants(workers["worker-gpu"].pid, depth=1)
    assert children, "the GPU worker has a prefork child"
    for child in children:
        os.kill(child, signal.SIGKILL)

    # then the job is claimed again once the dead child's lease runs out, and completes once
    job = await wait_for_job(api, job_id, timeout=180)
    assert job["status"] == "completed", job
    assert job["attempts"] == 2, job
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(Transcript).where(Transcript.job_id == job["id"])
        )
    assert count == 1
    # (the redelivered message either waited out the lease or found it already expired)
    assert f"job {job_id}: claimed (attempt 2)" in workers["worker-gpu"].log()
