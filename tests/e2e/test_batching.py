"""Batched inference (``STENO_GPU_BATCH_SIZE`` > 1): jobs submitted together share forward
passes, each gets its own transcript, and cancelling one leaves the others alone.

Run with ``STENO_GPU_BATCH_SIZE=4``; with batching off the session's GPU worker is prefork
and these tests are skipped.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from service.core.events.stream import stream_key
from service.core.settings import Settings
from tests.audio import SENTENCES, speak, word_error_rate
from tests.conftest import WorkerProcess, wait_for_job


@pytest.fixture(autouse=True)
def _batching_on(settings: Settings) -> None:
    if settings.gpu_batch_size < 2:
        pytest.skip("batching is off: run with STENO_GPU_BATCH_SIZE=4")


def _batch_sizes(log: str) -> list[int]:
    return [int(n) for n in re.findall(r"decoded a batch of (\d+) windows", log)]


async def _submit(api: Any, clip: Path) -> str:
    with clip.open("rb") as audio:
        response = await api.post("/v1/jobs", files={"file": (clip.name, audio, "audio/wav")})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def test_jobs_submitted_together_share_batches_and_keep_their_own_transcripts(
    api: Any,
    workers: dict[str, WorkerProcess],
    settings: Settings,
    tmp_path: Path,
    wer_log: Any,
) -> None:
    # Given four different short clips
    texts = [f"{SENTENCES[i]} {SENTENCES[i + 4]}" for i in range(4)]
    clips = [speak(text, tmp_path / f"clip{i}.wav") for i, text in enumerate(texts)]
    gpu = workers["worker-gpu"]
    before = len(_batch_sizes(gpu.log()))

    # when they are submitted at once
    ids = await asyncio.gather(*(_submit(api, clip) for clip in clips))
    stream = redis.Redis.from_url(settings.redis_url)
    jobs = [await wait_for_job(api, job_id) for job_id in ids]

    # then windows of several jobs were decoded in one forward pass
    sizes = _batch_sizes(gpu.log())[before:]
    assert max(sizes, default=0) > 1, sizes
    # and each job completed with its own text and its own events
    for text, job, job_id in zip(texts, jobs, ids, strict=True):
        assert job["status"] == "completed", job
        verbose = {"format": "verbose_json"}
        transcript = (await api.get(f"/v1/jobs/{job_id}/transcript", params=verbose)).json()
        wer = word_error_rate(text, transcript["text"])
        wer_log(f"batched {job_id[:8]}", wer, transcript["text"])
        assert wer <= 0.25, (text, transcript["text"])
        assert transcript["segments"]
        kinds = [fields[b"kind"] for _, fields in stream.xrange(stream_key(job_id))]
        assert kinds.count(b"segment") == len(transcript["segments"]), kinds
        assert b"completed" in kinds, kinds


async def test_cancelling_one_job_mid_batch_leaves_the_others_alone(
    api: Any, workers: dict[str, WorkerProcess], tmp_path: Path
) -> None:
    # Given a long job and three short ones submitted together
    long_clip = speak(" ".join(SENTENCES * 6), tmp_path / "long.wav", rate=170)
    texts = [f"{SENTENCES[i + 1]} {SENTENCES[i + 5]}" for i in range(3)]
    shorts = [speak(text, tmp_path / f"short{i}.wav") for i, text in enumerate(texts)]
    long_id, *short_ids = await asyncio.gather(
        *(_submit(api, clip) for clip in [long_clip, *shorts])
    )
    deadline = time.monotonic() + 120
    while (await api.get(f"/v1/jobs/{long_id}")).json()["progress"]["stage"] != "transcribing":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)

    # when the long one is cancelled while it is being transcribed
    assert (await api.post(f"/v1/jobs/{long_id}/cancel")).status_code == 200

    # then it stops between windows, and the short ones complete with their own text
    gpu = workers["worker-gpu"]
    deadline = time.monotonic() + 60
    while f"job {long_id}: stopped early" not in gpu.log():
        assert time.monotonic() < deadline, gpu.log()[-3000:]
        await asyncio.sleep(0.2)
    assert (await api.get(f"/v1/jobs/{long_id}")).json()["status"] == "cancelled"
    for text, job_id in zip(texts, short_ids, strict=True):
        assert (await wait_for_job(api, job_id))["status"] == "completed"
        transcript = (await api.get(f"/v1/jobs/{job_id}/transcript")).json()
        assert word_error_rate(text, transcript["text"]) <= 0.25, (text, transcript["text"])
