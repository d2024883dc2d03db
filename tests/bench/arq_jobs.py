"""The benchmark's job for the Steno arq layer (``python -m workers.arq``).

The same function as ``arq_native.py`` runs under arq itself: await one 100 ms response. The
client is httpx, as a user would make it in ``on_startup``, on httpx-aiohttp's transport by
default (``BENCH_HTTP_TRANSPORT=aiohttp``; ``httpx`` for httpx's own httpcore transport): httpx's
API, aiohttp's cheaper connection handling underneath.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport

from workers.arq import RedisSettings

CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "10"))
TRANSPORT = os.environ.get("BENCH_HTTP_TRANSPORT", "aiohttp")


def http_client(concurrency: int, transport: str) -> httpx.AsyncClient:
    """An httpx client for ``concurrency`` requests at once on ``transport``."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    if transport == "aiohttp":
        return httpx.AsyncClient(transport=AiohttpTransport(limits=limits), timeout=30)
    return httpx.AsyncClient(limits=limits, timeout=30)


async def startup(ctx: dict[str, Any]) -> None:
    ctx["http"] = http_client(CONCURRENCY, TRANSPORT)


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
