"""Cancelling a running job stops Whisper between windows; the GPU child stays usable."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from service.core.db.models import Transcript
from tests.audio import SENTENCES, speak
from tests.conftest import WorkerProcess, wait_for_job


async def test_cancelling_a_running_job_stops_it_and_the_worker_goes_on(
    api: Any, workers: dict[str, WorkerProcess], sessions: Any, tmp_path: Path
) -> None:
    # Given a long job that is being transcribed
    clip = speak(" ".join(SENTENCES * 6), tmp_path / "long.ogg", rate=170)
    with clip.open("rb") as audio:
        response = await api.post("/v1/jobs", files={"file": ("long.ogg", audio, "audio/ogg")})
    job_id = response.json()["id"]
    deadline = time.monotonic() + 120
    while (job := (await api.get(f"/v1/jobs/{job_id}")).json())["progress"]["stage"] != (
        "transcribing"
    ):
        assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
        await asyncio.sleep(0.05)

    # when it is cancelled
    cancelled = await api.post(f"/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"

    # then the worker stops it between windows, and no transcript is ever stored
    gpu = workers["worker-gpu"]
    deadline = time.monotonic() + 60
    while f"job {job_id}: stopped early" not in gpu.log():
        assert time.monotonic() < deadline, gpu.log()[-3000:]
        await asyncio.sleep(0.2)
    job = (await api.get(f"/v1/jobs/{job_id}")).json()
    assert job["status"] == "cancelled"
    assert job["progress"]["percent"] < 100
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(Transcript).where(Transcript.job_id == job_id)
        )
    assert count == 0
    transcript = await api.get(f"/v1/jobs/{job_id}/transcript")
    assert transcript.status_code == 409

    # and the GPU worker goes on to complete the next job
    short = speak(SENTENCES[0], tmp_path / "short.wav")
    with short.open("rb") as audio:
        response = await api.post("/v1/jobs", files={"file": ("short.wav", audio, "audio/wav")})
    assert (await wait_for_job(api, response.json()["id"]))["status"] == "completed"
