"""Scenarios 1, 2, 4, 5 and 10: workers killed, stopped or frozen while jobs run."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

from service.core.db.models import Job
from tests.chaos.conftest import Chaos, slow_server
from tests.conftest import WorkerProcess


async def test_gpu_child_sigkilled_three_times_during_twenty_jobs(chaos: Chaos) -> None:
    """1. SIGKILL a GPU child mid-job, 3 times, during 20 jobs"""
    # Given a GPU worker with two children busy on a batch of 20 jobs
    await chaos.open()
    chaos.start_all()
    ids = await chaos.submit(20)

    # when the child running a job is SIGKILLed, three times
    killed = []
    deadline = time.monotonic() + 180
    while len(killed) < 3:
        assert time.monotonic() < deadline, chaos.log_tail()
        if (found := await chaos.running_child(ids)) is None:
            await asyncio.sleep(0.1)
            continue
        job_id, pid = found
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # that child already died (killed earlier, not yet reaped)
            await asyncio.sleep(0.1)
            continue
        killed.append(job_id)
        await asyncio.sleep(1.0)

    # then every job completes exactly once, and the killed ones were delivered again
    views = await chaos.audit(ids)
    assert all(view["status"] == "completed" for view in views.values()), views
    assert all(views[job_id]["attempts"] >= 2 for job_id in killed), views


async def test_whole_gpu_worker_sigkilled_and_started_again(chaos: Chaos) -> None:
    """2. SIGKILL the whole GPU worker with jobs running; start it again"""
    # Given jobs being transcribed by a GPU worker
    await chaos.open(transcribe_delay_seconds=4.0)
    workers = chaos.start_all()
    ids = await chaos.submit(6)
    await chaos.wait_running(ids, 2)

    # when the whole worker (main process and children) is SIGKILLed, then started again
    os.killpg(workers["worker-gpu"].pid, signal.SIGKILL)
    workers["worker-gpu"].process.wait()
    chaos.start("worker-gpu")

    # then the jobs it held are reaped once their leases lapse, and every job completes once
    views = await chaos.audit(ids)
    assert all(view["status"] == "completed" for view in views.values()), views
    assert max(view["attempts"] for view in views.values()) >= 2, views


async def test_sigterm_mid_batch_lets_running_jobs_finish_and_the_rest_resume(
    chaos: Chaos,
) -> None:
    """4. SIGTERM the workers mid-batch (deploy); all jobs finish after restart"""
    # Given a batch being worked on
    await chaos.open(transcribe_delay_seconds=3.0)
    workers = chaos.start_all()
    ids = await chaos.submit(8)
    await chaos.wait_running(ids, 2)
    running = [job_id for job_id in ids if await _status(chaos, job_id) == "running"]

    # when a deploy SIGTERMs the workers' main processes and waits for them to exit
    for name in ("worker-io", "worker-gpu"):
        os.kill(workers[name].pid, signal.SIGTERM)
    for name in ("worker-io", "worker-gpu"):
        assert workers[name].process.wait(90) == 0, chaos.log_tail()

    # then the jobs that were running finished within the grace period, not cut off
    for job_id in running:
        assert await _status(chaos, job_id) == "completed", chaos.log_tail()

    # and after the restart every other job finishes too, each once
    chaos.start("worker-io", wait=False)
    chaos.start("worker-gpu")
    views = await chaos.audit(ids)
    assert all(view["status"] == "completed" for view in views.values()), views


async def test_io_worker_sigkilled_with_url_fetches_in_flight(chaos: Chaos) -> None:
    """5. SIGKILL the gevent IO worker with URL fetches in flight"""
    # Given URL jobs whose remote server takes a while to answer
    await chaos.open(redrive_after_seconds=8.0)
    url, server = slow_server(chaos.clip, delay=3.0)
    try:
        workers = chaos.start_all()
        ids = []
        for index in range(6):
            response = await chaos.api.post("/v1/jobs", json={"audio_url": f"{url}a{index}.wav"})
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        await chaos.wait_until(lambda: _fetching(chaos, ids), 60, "fetches in flight")

        # when the IO worker is SIGKILLed mid-fetch, then started again
        os.killpg(workers["worker-io"].pid, signal.SIGKILL)
        workers["worker-io"].process.wait()
        await asyncio.sleep(1.0)
        chaos.start("worker-io")

        # then every job is fetched again and completes once
        views = await chaos.audit(ids)
    finally:
        server.shutdown()
        server.server_close()
    assert all(view["status"] == "completed" for view in views.values()), views


async def test_job_of_a_vanished_worker_is_reaped_and_completed_by_another(chaos: Chaos) -> None:
    """10. A job stuck because its worker vanished: reaped, completed by another worker"""
    # Given two GPU workers, one of which is running the job
    await chaos.open(transcribe_delay_seconds=4.0, gpu_concurrency=1)
    chaos.start("worker-io", wait=False)
    chaos.start("beat", wait=False)
    gpus = {node: chaos.start("worker-gpu", node=node) for node in ("gpu-a@chaos", "gpu-b@chaos")}
    [job_id] = await chaos.submit(1)
    await chaos.wait_running([job_id])
    async with chaos.sessions() as session:
        holder = str((await session.get(Job, uuid.UUID(job_id))).worker)  # type: ignore[union-attr]
    [other] = set(gpus) - {holder}

    # when the holder vanishes (frozen: no heartbeat, no exit, its message never comes back)
    os.killpg(gpus[holder].pid, signal.SIGSTOP)

    # then the reaper requeues the job with a clear reason, and the other worker completes it
    deadline = time.monotonic() + 60
    while (view := (await chaos.api.get(f"/v1/jobs/{job_id}")).json())["error"] is None:
        assert time.monotonic() < deadline and view["status"] != "completed", view
        await asyncio.sleep(0.1)
    assert view["error"]["code"] == "worker_lost", view
    assert f"{holder} stopped renewing its lease during attempt 1" in view["error"]["detail"]
    views = await chaos.audit([job_id])
    assert views[job_id]["status"] == "completed"
    assert views[job_id]["attempts"] == 2
    assert views[job_id]["error"] is None
    assert f"job {job_id}: completed" in gpus[other].log()

    # and when the frozen worker wakes up, its stale claim is fenced out: still one transcript
    os.killpg(gpus[holder].pid, signal.SIGCONT)
    await chaos.wait_until(lambda: _fenced_out(gpus[holder], job_id), 60, "stale claim fenced")
    await chaos.audit([job_id], timeout=5, record=False)


async def _status(chaos: Chaos, job_id: str) -> str:
    status: str = (await chaos.api.get(f"/v1/jobs/{job_id}")).json()["status"]
    return status


async def _fetching(chaos: Chaos, ids: list[str]) -> bool:
    views = [(await chaos.api.get(f"/v1/jobs/{job_id}")).json() for job_id in ids]
    return sum(view["progress"]["stage"] == "fetching" for view in views) >= 2


async def _fenced_out(process: WorkerProcess, job_id: str) -> bool:
    log = process.log()
    return f"job {job_id}: stopped early" in log or f"job {job_id}: finished but no" in log
