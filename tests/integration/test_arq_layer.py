"""The arq-compatible layer, end to end: arq's documented examples against real Redis and a
real worker process started with ``python -m workers.arq`` (a Celery worker, gevent pool).

Ported from arq's docs/examples: the demo (an httpx client made in ``on_startup``), job
results, job ids (uniqueness), deferred jobs, retries, aborts, cron; plus what this layer
promises on top: ``job_timeout``, the gevent pool setting the concurrency, a slow handler
not stalling the others, a CPU-bound handler being reported, ``--burst``, ``--check`` and a
graceful SIGTERM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from service.core.settings import Settings
from tests.conftest import ROOT
from tests.integration.arq_jobs import TeaError
from workers.arq import ArqRedis, JobStatus, RedisSettings, create_pool
from workers.arq.jobs import JobExecutionFailed, ResultNotFound

QUEUE = "arq-test"
BURST_QUEUE = "arq-test-burst"
BODY = b"<html>" + b"steno " * 100 + b"</html>"


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class ArqWorker:
    """A ``python -m workers.arq`` process and its log."""

    def __init__(self, settings_path: str, redis_url: str, log_dir: Path, *extra: str) -> None:
        self.log_path = log_dir / f"arq-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "workers.arq", settings_path, *extra],
            env={**os.environ, "ARQ_TEST_REDIS": redis_url, "PYTHONUNBUFFERED": "1"},
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, redis_url: str, queue: str, timeout: float = 60.0) -> None:
        """Until the worker recorded its health-check key (its heartbeat runs)."""
        client = redis.Redis.from_url(redis_url)
        deadline = time.monotonic() + timeout
        while not client.exists(f"{queue}:health-check"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the arq worker did not start:\n{self.log()}")
            time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        return self.process.returncode


@pytest.fixture(scope="module")
def worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArqWorker]:
    redis.Redis.from_url(settings.redis_url).delete(f"{QUEUE}:health-check")
    process = ArqWorker(
        "tests.integration.arq_jobs.WorkerSettings",
        settings.redis_url,
        tmp_path_factory.mktemp("arq"),
    )
    try:
        process.wait_ready(settings.redis_url, QUEUE)
        yield process
    finally:
        process.stop()


@pytest.fixture
async def pool(settings: Settings, worker: ArqWorker) -> AsyncIterator[ArqRedis]:
    arq_redis = await create_pool(
        RedisSettings.from_dsn(settings.redis_url), default_queue_name=QUEUE
    )
    yield arq_redis
    await arq_redis.aclose()


async def test_the_demo_fetches_with_a_client_made_on_startup(
    pool: ArqRedis, page_url: str
) -> None:
    jobs = [await pool.enqueue_job("download_content", page_url) for _ in range(3)]
    assert all(job is not None for job in jobs)
    assert [await job.result(timeout=20) for job in jobs if job] == [len(BODY)] * 3


async def test_hundreds_of_results_awaited_at_once_wait_for_connections(
    settings: Settings, worker: ArqWorker
) -> None:
    # given a pool capped at 10 connections and 200 jobs
    capped = await create_pool(
        dataclasses.replace(RedisSettings.from_dsn(settings.redis_url), max_connections=10),
        default_queue_name=QUEUE,
    )
    try:
        jobs = [await capped.enqueue_job("add", i, 1) for i in range(200)]

        # when every result is awaited at once (as arq programs do with asyncio.gather)
        results = await asyncio.gather(*(job.result(timeout=120) for job in jobs if job))

        # then all arrive: callers wait for a free connection instead of raising
        assert results == [i + 1 for i in range(200)]
    finally:
        await capped.aclose()


async def test_a_job_sees_arqs_ctx(pool: ArqRedis) -> None:
    before = datetime.now(tz=UTC)
    job = await pool.enqueue_job("describe_ctx")
    assert job is not None
    ctx = await job.result(timeout=20)
    assert ctx["job_id"] == job.job_id
    assert ctx["job_try"] == 1
    assert ctx["redis_is_arq"] and ctx["has_session"]
    enqueued = datetime.fromisoformat(ctx["enqueue_time"])
    assert before - timedelta(seconds=1) <= enqueued <= datetime.now(tz=UTC)
    assert abs(ctx["score"] - enqueued.timestamp() * 1000) < 1000


async def test_results_status_and_info(pool: ArqRedis) -> None:
    job = await pool.enqueue_job("add", 1, 2, times=3)
    assert job is not None
    assert await job.status() in (JobStatus.queued, JobStatus.in_progress, JobStatus.complete)
    assert await job.result(timeout=20) == 9
    assert await job.status() == JobStatus.complete
    info = await job.result_info()
    assert info is not None
    assert (info.function, info.args, info.kwargs, info.success, info.result) == (
        "add",
        (1, 2),
        {"times": 3},
        True,
        9,
    )
    assert (info.job_try, info.queue_name, info.job_id) == (1, QUEUE, job.job_id)
    assert info.enqueue_time <= info.start_time <= info.finish_time
    assert await job.info() == info

    unknown = await pool.enqueue_job("add", 0, 0)
    assert unknown is not None
    await unknown.result(timeout=20)
    assert await type(unknown)("no-such-job", pool, _queue_name=QUEUE).status() == (
        JobStatus.not_found
    )


async def test_a_failed_job_reraises_its_exception(pool: ArqRedis) -> None:
    job = await pool.enqueue_job("fail_tea", "green")
    assert job is not None
    with pytest.raises(TeaError, match="green"):
        await job.result(timeout=20)
    info = await job.result_info()
    assert info is not None and info.success is False and isinstance(info.result, TeaError)


async def test_job_ids_are_unique_while_queued_running_or_kept(pool: ArqRedis) -> None:
    job = await pool.enqueue_job("add", 1, 1, _job_id="unique-1", _defer_by=1)
    assert job is not None
    assert await job.status() == JobStatus.deferred
    assert await pool.enqueue_job("add", 1, 1, _job_id="unique-1") is None
    assert await job.result(timeout=20) == 2
    # Its result is kept: the id stays taken.
    assert await pool.enqueue_job("add", 1, 1, _job_id="unique-1") is None

    forgotten = await pool.enqueue_job("add_forgotten", 2, 2, _job_id="unique-2")
    assert forgotten is not None
    deadline = time.monotonic() + 20
    while await forgotten.status() != JobStatus.not_found:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    with pytest.raises(ResultNotFound):
        await forgotten.result(timeout=1)
    # No result kept: the id is free again.
    assert await pool.enqueue_job("add_forgotten", 2, 2, _job_id="unique-2") is not None


async def test_deferred_jobs_wait_in_redis_until_due(pool: ArqRedis) -> None:
    by = await pool.enqueue_job("add", 1, 2, _defer_by=1.5)
    until = await pool.enqueue_job(
        "add", 3, 4, _defer_until=datetime.now(tz=UTC) + timedelta(seconds=1.5)
    )
    assert by is not None and until is not None
    assert await by.status() == JobStatus.deferred
    assert await until.status() == JobStatus.deferred
    assert (await by.result(timeout=20), await until.result(timeout=20)) == (3, 7)
    for job in (by, until):
        info = await job.result_info()
        assert info is not None
        assert info.start_time - info.enqueue_time >= timedelta(seconds=1.4)


async def test_a_job_not_started_before_it_expires_fails_as_expired(pool: ArqRedis) -> None:
    job = await pool.enqueue_job("add", 1, 1, _defer_by=1.5, _expires=0.5)
    assert job is not None
    with pytest.raises(JobExecutionFailed, match="job expired"):
        await job.result(timeout=20, poll_delay=0.1)


async def test_retry_runs_again_with_the_next_try_until_max_tries(pool: ArqRedis) -> None:
    job = await pool.enqueue_job("flaky", 3)
    assert job is not None
    assert await job.result(timeout=20) == 3

    doomed = await pool.enqueue_job("flaky", 5)
    assert doomed is not None
    with pytest.raises(JobExecutionFailed, match="max 3 retries exceeded"):
        await doomed.result(timeout=20)


async def test_abort_cancels_a_running_or_deferred_job(pool: ArqRedis) -> None:
    running = await pool.enqueue_job("sleep_for", 30)
    assert running is not None
    deadline = time.monotonic() + 20
    while await running.status() != JobStatus.in_progress:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    started = time.monotonic()
    assert await running.abort(timeout=10, poll_delay=0.1) is True
    assert time.monotonic() - started < 10
    assert await running.status() == JobStatus.complete
    with pytest.raises(asyncio.CancelledError):
        await running.result(timeout=1)

    deferred = await pool.enqueue_job("sleep_for", 30, _defer_by=60)
    assert deferred is not None
    assert await deferred.abort(timeout=10, poll_delay=0.1) is True


async def test_job_timeout_cancels_the_coroutine(pool: ArqRedis) -> None:
    job = await pool.enqueue_job("sleep_short_timeout", 10)
    assert job is not None
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await job.result(timeout=20, poll_delay=0.1)
    assert time.monotonic() - started < 5


async def test_cron_jobs_run_on_schedule(pool: ArqRedis) -> None:
    before = int(await pool.get("arq-test:ticks") or 0)
    await asyncio.sleep(3.2)
    # Every second, each run once (unique ids): about three runs, never a burst of them.
    assert 2 <= int(await pool.get("arq-test:ticks") or 0) - before <= 4


async def test_the_gevent_pool_sets_concurrency_and_a_slow_job_stalls_nobody(
    pool: ArqRedis,
) -> None:
    slow = await pool.enqueue_job("sleep_for", 3.0)
    fast = [await pool.enqueue_job("sleep_for", 0.5, label=str(i)) for i in range(12)]
    assert slow is not None and all(fast)
    spans = [await job.result(timeout=30) for job in fast if job]
    slow_span = await slow.result(timeout=30)
    events = sorted(
        [(s["started"], 1) for s in [*spans, slow_span]]
        + [(s["ended"], -1) for s in [*spans, slow_span]]
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    # max_jobs = 5 greenlets: never more at once, and the pool was used to the full.
    assert peak == 5
    # The 12 short jobs ran on the 4 other greenlets while the slow one slept.
    assert max(s["ended"] for s in spans) < slow_span["ended"]


async def test_a_cpu_bound_handler_is_reported_and_does_not_stop_celery(
    settings: Settings, pool: ArqRedis, worker: ArqWorker
) -> None:
    job = await pool.enqueue_job("burn_cpu", 3.0)
    assert job is not None
    deadline = time.monotonic() + 20
    while await job.status() != JobStatus.in_progress:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    app = Celery(broker=settings.redis_url, set_as_current=False)
    try:
        # Celery's own greenlets (broker, control, heartbeats) live in the hub, not the loop.
        replies = await asyncio.to_thread(
            app.control.ping, destination=[f"{QUEUE}@{socket.gethostname()}"], timeout=2.0
        )
    finally:
        app.close()
    assert replies, "the worker did not answer a ping while a handler burned CPU"
    assert await job.status() == JobStatus.in_progress
    assert await job.result(timeout=20) > 0
    assert "the asyncio loop has not answered" in worker.log()


def _check(settings_path: str, redis_url: str) -> int:
    return subprocess.run(
        [sys.executable, "-m", "workers.arq", settings_path, "--check"],
        env={**os.environ, "ARQ_TEST_REDIS": redis_url},
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    ).returncode


async def test_check_reports_whether_a_worker_is_alive(
    settings: Settings, worker: ArqWorker
) -> None:
    assert _check("tests.integration.arq_jobs.WorkerSettings", settings.redis_url) == 0
    redis.Redis.from_url(settings.redis_url).delete(f"{BURST_QUEUE}:health-check")
    assert _check("tests.integration.arq_jobs.BurstSettings", settings.redis_url) == 1


async def test_burst_serves_the_queue_then_exits_and_sigterm_stops_gracefully(
    settings: Settings, tmp_path: Path
) -> None:
    arq_redis = await create_pool(
        RedisSettings.from_dsn(settings.redis_url), default_queue_name=BURST_QUEUE
    )
    try:
        jobs = [await arq_redis.enqueue_job("add", i, i) for i in range(3)]
        burst = ArqWorker(
            "tests.integration.arq_jobs.BurstSettings", settings.redis_url, tmp_path, "--burst"
        )
        try:
            assert await asyncio.to_thread(burst.process.wait, 60) == 0, burst.log()
        finally:
            burst.stop()
        assert [await job.result(timeout=1) for job in jobs if job] == [0, 2, 4]

        serving = ArqWorker(
            "tests.integration.arq_jobs.BurstSettings", settings.redis_url, tmp_path
        )
        await asyncio.to_thread(serving.wait_ready, settings.redis_url, BURST_QUEUE)
        assert serving.stop() == 0, serving.log()
        # on_shutdown ran: the worker removed its health-check key as it left.
        assert not await arq_redis.exists(f"{BURST_QUEUE}:health-check")
    finally:
        await arq_redis.aclose()


async def test_a_sigkilled_worker_holding_a_popped_backlog_loses_and_repeats_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    # given a worker of four greenlets draining a backlog of 24 jobs, popped in batches
    from tests.integration.arq_jobs import CRASH_QUEUE

    client = redis.Redis.from_url(settings.redis_url)
    client.delete(CRASH_QUEUE, f"{CRASH_QUEUE}:runs", f"{CRASH_QUEUE}:health-check")
    pool = await create_pool(
        RedisSettings.from_dsn(settings.redis_url), default_queue_name=CRASH_QUEUE
    )
    settings_path = "tests.integration.arq_jobs.CrashSettings"
    first = ArqWorker(settings_path, settings.redis_url, tmp_path)
    second = None
    try:
        first.wait_ready(settings.redis_url, CRASH_QUEUE)
        jobs = [await pool.enqueue_job("count_run", 0.5) for _ in range(24)]
        assert all(jobs)
        deadline = time.monotonic() + 60
        while client.hlen(f"{CRASH_QUEUE}:runs") < 6:
            assert time.monotonic() < deadline, first.log()
            await asyncio.sleep(0.05)
        # when it is SIGKILLed with messages in its hands (popped, recorded unacked)
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait()
        held = client.hlen("unacked")
        assert held >= 1
        # and another worker starts
        second = ArqWorker(settings_path, settings.redis_url, tmp_path)
        second.wait_ready(settings.redis_url, CRASH_QUEUE)
        # then every job completes, each job's side effect ran exactly once
        results = [await job.result(timeout=90) for job in jobs if job is not None]
        assert results == [job.job_id for job in jobs if job is not None]
        runs = {k.decode(): int(v) for k, v in client.hgetall(f"{CRASH_QUEUE}:runs").items()}
        assert runs == {job.job_id: 1 for job in jobs if job is not None}, second.log()
    finally:
        first.stop()
        if second is not None:
            second.stop()
        await pool.aclose()
        client.close()
