"""Job functions and ``WorkerSettings`` for the arq-layer tests (ports of arq's doc examples).

The worker process imports this module through ``python -m workers.arq``; it finds its
Redis in ``ARQ_TEST_REDIS`` and the local HTTP server in ``ARQ_TEST_HTTP``.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx

from workers.arq import RedisSettings, Retry, cron, func
from workers.arq.connections import ArqRedis

REDIS = RedisSettings.from_dsn(os.environ.get("ARQ_TEST_REDIS", "redis://127.0.0.1:6379/15"))


class TeaError(Exception):
    """A job's own exception, re-raised by ``Job.result()`` in the client."""


async def startup(ctx: dict[str, Any]) -> None:
    """arq's demo: one HTTP client for the worker's whole life."""
    ctx["session"] = httpx.AsyncClient()


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["session"].aclose()


async def download_content(ctx: dict[str, Any], url: str) -> int:
    """arq's demo job: fetch a URL with the shared client, return the body's length."""
    response = await ctx["session"].get(url)
    return len(response.text)


async def describe_ctx(ctx: dict[str, Any]) -> dict[str, Any]:
    """What a job sees in ``ctx``."""
    return {
        "job_id": ctx["job_id"],
        "job_try": ctx["job_try"],
        "enqueue_time": ctx["enqueue_time"].isoformat(),
        "score": ctx["score"],
        "redis_is_arq": isinstance(ctx["redis"], ArqRedis),
        "has_session": isinstance(ctx["session"], httpx.AsyncClient),
    }


async def add(ctx: dict[str, Any], a: int, b: int, *, times: int = 1) -> int:
    return (a + b) * times


async def fail_tea(ctx: dict[str, Any], kind: str) -> None:
    raise TeaError(kind)


async def flaky(ctx: dict[str, Any], succeed_on: int) -> int:
    """arq's retry example: retry with a growing delay until ``succeed_on``."""
    if ctx["job_try"] < succeed_on:
        raise Retry(defer=ctx["job_try"] * 0.2)
    return int(ctx["job_try"])


async def sleep_for(ctx: dict[str, Any], seconds: float, label: str = "") -> dict[str, float]:
    """Sleep and report when it ran (for the concurrency and abort tests)."""
    started = time.time()
    await asyncio.sleep(seconds)
    return {"started": started, "ended": time.time()}


async def burn_cpu(ctx: dict[str, Any], seconds: float) -> int:
    """A handler that wrongly burns CPU on the loop (the documented limit)."""
    deadline, spins = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        spins += 1
    return spins


async def count_run(ctx: dict[str, Any], seconds: float) -> str:
    """Sleep, then count the run in Redis: the side effect a crash must neither lose nor
    repeat."""
    await asyncio.sleep(seconds)
    await ctx["redis"].hincrby(f"{CRASH_QUEUE}:runs", ctx["job_id"], 1)
    return str(ctx["job_id"])


async def tick(ctx: dict[str, Any]) -> None:
    """A cron job: count its runs in Redis."""
    await ctx["redis"].incr("arq-test:ticks")


class WorkerSettings:
    """The main test worker: five at a time, aborts allowed, a cron job every second."""

    functions = (
        download_content,
        describe_ctx,
        add,
        fail_tea,
        func(flaky, max_tries=3),
        sleep_for,
        func(sleep_for, name="sleep_short_timeout", timeout=0.5),
        func(add, name="add_forgotten", keep_result=0),
        burn_cpu,
    )
    cron_jobs = (cron(tick, second=set(range(60))),)
    on_startup = startup
    on_shutdown = shutdown
    queue_name = "arq-test"
    redis_settings = REDIS
    max_jobs = 5
    allow_abort_jobs = True
    keep_result = 60
    health_check_interval = 1


class BurstSettings:
    """A second worker on its own queue, for ``--burst``."""

    functions = (add,)
    queue_name = "arq-test-burst"
    redis_settings = REDIS


CRASH_QUEUE = "arq-test-crash"


class CrashSettings:
    """A worker to SIGKILL: four at a time, jobs of at most 2 s, so its unacked messages are
    back after the default visibility timeout of twice the in-progress one (2 x 12 s)."""

    functions = (count_run,)
    queue_name = CRASH_QUEUE
    redis_settings = REDIS
    max_jobs = 4
    job_timeout = 2
