"""A duplicated ``gpu.transcribe`` message never transcribes a job twice (decision 2).

Extra copies of a job's message are sent straight to the broker, the way a redelivery or a
relay that published twice would; the GPU worker must claim nothing for them.
"""

from __future__ import annotations

import asyncio
import http.server
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.broker import CeleryPublisher, make_producer_app
from service.core.db.models import Job, Transcript
from service.core.routing import TRANSCRIBE
from service.core.settings import Settings
from tests.audio import speak
from tests.conftest import WorkerProcess, wait_for_job

Sessions = async_sessionmaker[AsyncSession]

SENTENCE = "Say it once and only once, no matter how often you are asked."


@pytest.fixture(scope="module")
def publisher(settings: Settings) -> Iterator[CeleryPublisher]:
    """A producer on the real broker, as the API and the relay use."""
    app = make_producer_app(settings)
    yield CeleryPublisher(app)
    app.close()


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return speak(SENTENCE, tmp_path_factory.mktemp("dup") / "dup.wav").read_bytes()


async def _submit(api: AsyncTestClient[Any], audio: bytes) -> str:
    response = await api.post("/v1/jobs", files={"file": ("dup.wav", audio, "audio/wav")})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def _lines(worker: WorkerProcess, job_id: str, what: str) -> int:
    return len(re.findall(rf"job {re.escape(job_id)}: {re.escape(what)}", worker.log()))


async def _wait_consumed(
    settings: Settings, worker: WorkerProcess, job_id: str, skipped: int, timeout: float = 120.0
) -> None:
    """Until the ``gpu`` queue is empty and the worker logged ``skipped`` no-ops for the job."""
    client = redis.Redis.from_url(settings.broker)
    deadline = time.monotonic() + timeout
    try:
        while True:
            queued = client.llen(TRANSCRIBE.queue)
            seen = _lines(worker, job_id, "nothing to do (duplicate")
            if queued == 0 and seen >= skipped:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"after {timeout} s: {queued} messages still queued, {seen}/{skipped} "
                    f"duplicates of {job_id} consumed\n{worker.log()[-4000:]}"
                )
            await asyncio.sleep(0.25)
    finally:
        client.close()


async def _stored(sessions: Sessions, job_id: str) -> tuple[Job, int]:
    async with sessions() as session:
        job = await session.get(Job, uuid.UUID(job_id))
        assert job is not None
        query = select(func.count()).select_from(Transcript)
        count = int(await session.scalar(query.where(Transcript.job_id == job.id)) or 0)
        return job, count


async def test_a_message_redelivered_after_completion_is_a_no_op(
    settings: Settings,
    workers: dict[str, WorkerProcess],
    api: AsyncTestClient[Any],
    sessions: Sessions,
    publisher: CeleryPublisher,
    spoken: bytes,
) -> None:
    # given a job transcribed to completion
    gpu = workers["worker-gpu"]
    job_id = await _submit(api, spoken)
    assert (await wait_for_job(api, job_id))["status"] == "completed"
    before, _ = await _stored(sessions, job_id)

    # when its transcription message arrives once more
    publisher.publish(TRANSCRIBE.name, TRANSCRIBE.queue, [job_id], None)
    await _wait_consumed(settings, gpu, job_id, skipped=1)

    # then the worker claimed nothing: one attempt, one transcript, completed once
    after, transcripts = await _stored(sessions, job_id)
    assert (after.status, after.attempts, transcripts) == ("completed", 1, 1)
    assert after.finished_at == before.finished_at
    assert _lines(gpu, job_id, "claimed") == 1
    assert _lines(gpu, job_id, "completed") == 1
    assert _lines(gpu, job_id, "nothing to do (duplicate") == 1


async def test_duplicates_sent_at_submit_transcribe_once(
    settings: Settings,
    workers: dict[str, WorkerProcess],
    api: AsyncTestClient[Any],
    sessions: Sessions,
    publisher: CeleryPublisher,
    spoken: bytes,
) -> None:
    # given a job just accepted (its own message is on its way)
    gpu = workers["worker-gpu"]
    job_id = await _submit(api, spoken)

    # when two more copies of its message are published right away
    for _ in range(2):
        publisher.publish(TRANSCRIBE.name, TRANSCRIBE.queue, [job_id], None)
    job = await wait_for_job(api, job_id)
    await _wait_consumed(settings, gpu, job_id, skipped=2)

    # then all three were consumed and the job was transcribed exactly once
    assert job["status"] == "completed", job
    stored, transcripts = await _stored(sessions, job_id)
    assert (stored.status, stored.attempts, transcripts) == ("completed", 1, 1)
    assert _lines(gpu, job_id, "claimed") == 1
    assert _lines(gpu, job_id, "completed") == 1
    assert _lines(gpu, job_id, "nothing to do (duplicate") == 2


class _SlowAudio(http.server.BaseHTTPRequestHandler):
    """Serves the spoken clip after a pause, counting the full downloads it serves."""

    audio = b""
    downloads = 0

    def do_GET(self) -> None:
        if "range" not in self.headers:  # the API's submit-time check asks for one byte
            type(self).downloads += 1
            time.sleep(1.0)
        self.send_response(200)
        self.send_header("content-type", "audio/wav")
        self.send_header("content-length", str(len(self.audio)))
        self.end_headers()
        self.wfile.write(self.audio)

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def test_two_fetches_of_one_url_job_at_once_leave_one_good_audio_file(
    api: AsyncTestClient[Any],
    publisher: CeleryPublisher,
    sessions: Sessions,
    spoken: bytes,
    workers: dict[str, WorkerProcess],
) -> None:
    # Given a URL job whose fetch message is duplicated while the slow download runs
    _SlowAudio.audio, _SlowAudio.downloads = spoken, 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowAudio)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/dup.wav"
        response = await api.post("/v1/jobs", json={"audio_url": url})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        publisher.publish("io.fetch_audio", "io", [job_id], None)

        # when both fetches have run
        job = await wait_for_job(api, job_id)
    finally:
        server.shutdown()
        server.server_close()

    # then both downloaded, the job completed once, and the file it points at exists
    assert _SlowAudio.downloads == 2
    assert job["status"] == "completed", job
    assert job["attempts"] == 1
    async with sessions() as session:
        row = await session.get(Job, uuid.UUID(job_id))
        assert row is not None and row.audio_path
    assert Path(row.audio_path).is_file()
