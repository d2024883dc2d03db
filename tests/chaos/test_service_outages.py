"""Scenarios 6, 7 and 8: the private Redis or PostgreSQL dies while jobs come and go.

Only the suite's own private servers are killed (see ``conftest.py``), never the machine's.
"""

from __future__ import annotations

import asyncio

from tests.chaos.conftest import Chaos


async def test_redis_killed_during_a_burst_of_submissions(chaos: Chaos) -> None:
    """6. Redis killed (kill -9, nothing on disk) during a burst of submissions"""
    # Given running workers and a burst of uploads under way
    await chaos.open()
    chaos.start_all()

    async def submit_after(delay: float) -> str:
        await asyncio.sleep(delay)
        return await chaos.submit_one()

    burst = [asyncio.create_task(submit_after(0.15 * index)) for index in range(12)]

    # when Redis is SIGKILLed mid-burst (its queues are gone) and started again, empty
    await asyncio.sleep(0.6)
    chaos.redis.kill()
    await asyncio.sleep(3.0)
    chaos.redis.start()

    # then every upload was still accepted (202), and every job completes once via the outbox
    ids = await asyncio.gather(*burst)
    views = await chaos.audit(ids)
    assert all(view["status"] == "completed" for view in views.values()), views


async def test_redis_down_while_a_client_submits(chaos: Chaos) -> None:
    """7. Redis down while a client submits: still 202, completed after Redis returns"""
    # Given running workers and a Redis that is down
    await chaos.open()
    chaos.start_all()
    chaos.redis.kill()

    # when a client submits jobs
    ids = await chaos.submit(5)
    await asyncio.sleep(2.0)
    assert {(await chaos.api.get(f"/v1/jobs/{i}")).json()["status"] for i in ids} == {"queued"}

    # then each was accepted, and completes once Redis is back
    chaos.redis.start()
    views = await chaos.audit(ids)
    assert all(view["status"] == "completed" for view in views.values()), views


async def test_postgres_restarted_mid_processing(chaos: Chaos) -> None:
    """8. PostgreSQL restarted (-m immediate) mid-processing: 503 while down, nothing lost"""
    # Given jobs being transcribed
    await chaos.open(transcribe_delay_seconds=3.0)
    chaos.start_all()
    ids = await chaos.submit(8)
    await chaos.wait_running(ids)

    # when PostgreSQL stops at once (connections cut, recovery from WAL on start)
    await asyncio.to_thread(chaos.postgres.stop_postgres, mode="immediate")
    try:
        # then while it is down the API answers 503 with a clear code and no traceback
        for response in (
            await chaos.api.get(f"/v1/jobs/{ids[0]}"),
            await chaos.api.get("/v1/jobs"),
            await chaos.api.post(f"/v1/jobs/{ids[-1]}/cancel"),
        ):
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "database_unavailable"
            assert "Traceback" not in response.text
        with chaos.clip.open("rb") as audio:
            upload = await chaos.api.post(
                "/v1/jobs", files={"file": ("down.wav", audio, "audio/wav")}
            )
        assert upload.status_code == 503, upload.text
        assert upload.json()["code"] == "database_unavailable"
        await asyncio.sleep(4.0)
    finally:
        await asyncio.to_thread(chaos.postgres.resume_postgres)

    # and the workers retry: every accepted job completes once
    views = await chaos.audit(ids)
    assert all(view["status"] == "completed" for view in views.values()), views
