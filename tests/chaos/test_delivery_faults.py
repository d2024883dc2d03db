"""Scenarios 3, 9 and 11: redelivery past the visibility timeout, poison jobs, cancel races."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from tests.chaos.conftest import Chaos
from tests.webhooks import Receiver


async def test_job_outliving_the_visibility_timeout_has_one_transcript(chaos: Chaos) -> None:
    """3. A job running longer than the visibility timeout: no duplicate side effect"""
    # Given a broker that hands an unacknowledged message out again after 5 s (refused at
    # startup unless fault injection allows it) and a job that runs for 35 s
    await chaos.open(
        visibility_timeout_seconds=5.0,
        fault_allow_short_visibility=True,
        transcribe_delay_seconds=35.0,
    )
    workers = chaos.start_all()
    receiver = Receiver()

    # when the job's message is redelivered to the idle child while the first still runs
    try:
        [job_id] = await chaos.submit(1, webhook_url=receiver.url())
        views = await chaos.audit([job_id], timeout=150, receiver=receiver)
    finally:
        receiver.close()

    # then the second delivery found the job held and waited; the work was committed once:
    # one transcript row, one committed completion and one webhook event (the side effects)
    assert views[job_id]["status"] == "completed", views
    assert views[job_id]["attempts"] == 1, views
    gpu_log = workers["worker-gpu"].log()
    assert f"job {job_id}: held by a live worker" in gpu_log, chaos.log_tail()
    assert chaos.completions()[job_id] == 1
    secret = await chaos.secret()
    assert [r.verify(secret)["type"] for r in receiver.for_job(job_id)] == ["job.completed"]


async def test_poison_job_fails_after_the_cap_and_the_others_complete(chaos: Chaos) -> None:
    """9. A poison job that always crashes its worker: failed after the cap"""
    # Given a job whose every delivery kills its GPU child (like an out-of-memory kill)
    await chaos.open(fault_crash_marker="poison", transcribe_delay_seconds=0.5)
    chaos.start_all()
    [poison] = await chaos.submit(1, filename="poison.wav")
    others = await chaos.submit(5)

    # when it is delivered again and again
    views = await chaos.audit([poison, *others], timeout=240)

    # then it fails with a clear code after the cap, and every other job completes
    assert views[poison]["status"] == "failed", views[poison]
    assert views[poison]["error"]["code"] == "too_many_attempts", views[poison]
    assert views[poison]["attempts"] == chaos.settings.max_attempts
    assert all(views[job_id]["status"] == "completed" for job_id in others), views
    assert "fault injection: poison job" in chaos.log_tail(lines=10_000)


async def test_cancel_racing_completion_fifty_times(chaos: Chaos) -> None:
    """11. Cancel racing completion, 50 times: cancelled or completed, never both"""
    # Given 50 short jobs flowing through the GPU pool
    await chaos.open(transcribe_delay_seconds=0.3)
    chaos.start_all()
    ids = await chaos.submit(50)

    # when each is cancelled at a random moment while the batch is processed
    async def cancel_later(job_id: str) -> Any:
        await asyncio.sleep(random.uniform(0.0, 30.0))
        return await chaos.api.post(f"/v1/jobs/{job_id}/cancel")

    answers = await asyncio.gather(*(cancel_later(job_id) for job_id in ids))

    # then each job ends as its cancel answer said: cancelled (200), or completed (409)
    views = await chaos.audit(ids)
    for job_id, answer in zip(ids, answers, strict=True):
        if answer.status_code == 200:
            assert answer.json()["status"] == "cancelled"
            assert views[job_id]["status"] == "cancelled", (answer.json(), views[job_id])
        else:
            assert answer.status_code == 409, answer.text
            assert answer.json()["code"] == "job_already_finished"
            assert views[job_id]["status"] == "completed", views[job_id]
    outcomes = {view["status"] for view in views.values()}
    assert outcomes == {"cancelled", "completed"}, "the race should produce both outcomes"
