"""A job whose task message was lost with Redis is sent again by the relay and completes."""

from __future__ import annotations

import dataclasses
from typing import Any

import redis
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.core.settings import Settings
from tests.audio import SENTENCES, speak
from tests.conftest import WorkerProcess, bearer, wait_for_job
from workers.io.relay import BROKER_MARKER


class _LostInTransit:
    """A broker that takes every message and then loses it (Redis restarted, nothing kept)."""

    def __init__(self) -> None:
        self.swallowed = 0

    def publish(self, *args: Any) -> None:
        self.swallowed += 1


async def test_jobs_whose_messages_the_broker_lost_are_sent_again_and_complete(
    settings: Settings, workers: dict[str, WorkerProcess], tmp_path: Any, api_key: str
) -> None:
    # Given two accepted jobs whose messages were published, then lost with the broker
    clip = speak(SENTENCES[4], tmp_path / "boat.wav")
    app = create_app(dataclasses.replace(settings, url_check_timeout_seconds=0))
    async with AsyncTestClient(app, timeout=60) as client:
        client.headers.update(bearer(api_key))
        lost = _LostInTransit()
        client.app.state.publisher = lost
        job_ids = []
        for name in ("one.wav", "two.wav"):
            with clip.open("rb") as audio:
                response = await client.post("/v1/jobs", files={"file": (name, audio, "audio/wav")})
            assert response.status_code == 202
            job_ids.append(response.json()["id"])
        assert (await client.get(f"/v1/jobs/{job_ids[0]}")).json()["status"] == "queued"

        # when the broker comes back empty (its marker key is gone with everything else)
        broker = redis.Redis.from_url(settings.broker)
        broker.delete(BROKER_MARKER)
        broker.close()

        # then the relay's sweep sends their tasks again, and each completes once
        for job_id in job_ids:
            job = await wait_for_job(client, job_id, timeout=120)
            assert job["status"] == "completed", job
            assert job["attempts"] == 1
    assert lost.swallowed >= 2
    assert "re-sending" in workers["worker-io"].log()
