"""The benchmark's job for the Steno arq layer (``python -m workers.arq``).

The same function as ``arq_native.py`` runs under arq itself: await one 100 ms response.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx

from workers.arq import RedisSettings

CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "10"))


async def startup(ctx: dict[str, Any]) -> None:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    ctx["http"] = httpx.AsyncClient(limits=limits, timeout=30)


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["http"].aclose()


async def call_api(ctx: dict[str, Any], url: str) -> int:
    """One request to the slow local server."""
    response = await ctx["http"].get(url)
    return response.status_code


async def sleep_only(ctx: dict[str, Any]) -> None:
    """The same wait without HTTP (to tell the layer's cost from httpx's)."""
    await asyncio.sleep(0.1)


class WorkerSettings:
    functions = (call_api, sleep_only)
    on_startup = startup
    on_shutdown = shutdown
    queue_name = "bench"
    max_jobs = CONCURRENCY
    redis_settings = RedisSettings.from_dsn(
        os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/6")
    )
    health_check_interval = 1
    # Per-job lines cost CPU; arq run without a log config prints none either.
    log_level = os.environ.get("BENCH_LOG_LEVEL", "WARNING")
