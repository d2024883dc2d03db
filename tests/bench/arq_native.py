"""The same benchmark under arq itself; runs in ``.venv-arq`` (arq pins redis < 6).

``python arq_native.py worker`` serves; ``python arq_native.py enqueue N URL`` enqueues
(URL ``sleep``: the sleep-only job).
Settings come from BENCH_REDIS, BENCH_CONCURRENCY, BENCH_HTTP_TRANSPORT (``aiohttp``, the
default: httpx on httpx-aiohttp's transport, as ``arq_jobs.py``; ``httpx``: httpx's own) and
BENCH_POLL_DELAY (arq's ``poll_delay``, its default 0.5 s unless set). Kept free of Steno
imports.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import httpx
from arq import create_pool, run_worker
from arq.connections import RedisSettings
from httpx_aiohttp import AiohttpTransport

CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "10"))
TRANSPORT = os.environ.get("BENCH_HTTP_TRANSPORT", "aiohttp")
POLL_DELAY = float(os.environ.get("BENCH_POLL_DELAY", "0.5"))
REDIS = RedisSettings.from_dsn(os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/6"))


async def startup(ctx: dict[str, Any]) -> None:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    if TRANSPORT == "aiohttp":
        ctx["http"] = httpx.AsyncClient(transport=AiohttpTransport(limits=limits), timeout=30)
    else:
        ctx["http"] = httpx.AsyncClient(limits=limits, timeout=30)


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["http"].aclose()


async def call_api(ctx: dict[str, Any], url: str) -> int:
    response = await ctx["http"].get(url)
    return response.status_code


async def sleep_only(ctx: dict[str, Any]) -> None:
    await asyncio.sleep(0.1)


class WorkerSettings:
    functions = (call_api, sleep_only)
    on_startup = startup
    on_shutdown = shutdown
    queue_name = "bench"
    max_jobs = CONCURRENCY
    redis_settings = REDIS
    burst = True
    # arq polls its queue: its default poll_delay (0.5 s) is how an arq user runs it; the
    # bench also runs it tuned (0.01 s), where it picks freed slots up almost at once.
    poll_delay = POLL_DELAY


async def enqueue(count: int, url: str) -> None:
    pool = await create_pool(REDIS, default_queue_name="bench")
    for _ in range(count):
        if url == "sleep":
            await pool.enqueue_job("sleep_only")
        else:
            await pool.enqueue_job("call_api", url)
    await pool.aclose()


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        run_worker(WorkerSettings)
    else:
        asyncio.run(enqueue(int(sys.argv[2]), sys.argv[3]))
