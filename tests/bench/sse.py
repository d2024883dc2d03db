"""SSE fan-out: publish-to-receive latency with 1,000 clients on one API process.

Starts one granian API process on a private database and Redis database, makes JOBS jobs,
connects CLIENTS SSE clients (aiohttp, in CLIENT_PROCESSES processes of their own, spread
evenly over the jobs), then publishes RATE progress events per second per job for SECONDS
with the workers' own ``emit``, and finally each job's terminal event. Each event carries
its publish time (``at``); clients record receive time minus that. Reports p50/p99/max
latency, the share delivered, and the API process's memory (RSS, main + worker) before
and while the clients are connected.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
import uuid
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import redis

from service.cli.processes import migrate
from service.core import transitions
from service.core.db.engine import make_engine, make_sessionmaker
from service.core.events import schemas as events
from service.core.events.publish import emit
from service.core.settings import Settings, load_settings
from tests.conftest import descendants, free_port, make_key, recreate_database, start_api

CLIENTS = 1000
CLIENT_PROCESSES = 2
JOBS = 10
RATE = 10  # events per second per job
SECONDS = 20
BENCH_DB = "steno_bench_sse"
BENCH_REDIS_DB = 7


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * CLIENTS + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _cpu_seconds(pid: int) -> float:
    ticks = 0
    for each in (pid, *descendants(pid)):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _rss_bytes(pid: int) -> int:
    total = 0
    for each in (pid, *descendants(pid)):
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


async def _client_main(
    base: str,
    job_ids: list[str],
    count: int,
    ready: MpEvent,
    out: Any,
    deadline: float,
    key: str,
) -> None:
    import aiohttp

    latencies: list[float] = []
    received = 0
    connected = 0
    failures = 0
    all_connected = asyncio.Event()

    async def one(session: aiohttp.ClientSession, job_id: str) -> None:
        nonlocal received, connected, failures
        try:
            async with session.get(f"{base}/v1/jobs/{job_id}/events") as response:
                if response.status != 200:
                    failures += 1
                    return
                connected += 1
                if connected == count:
                    all_connected.set()
                kind = ""
                async for raw in response.content:
                    line = raw.rstrip(b"\r\n")
                    if line.startswith(b"event: "):
                        kind = line[7:].decode()
                    elif line.startswith(b"data: ") and kind == "progress":
                        latencies.append(time.time() - json.loads(line[6:])["at"])
                        received += 1
        except Exception:
            failures += 1

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers
    ) as session:
        tasks = [asyncio.create_task(one(session, job_ids[i % len(job_ids)])) for i in range(count)]
        try:
            await asyncio.wait_for(all_connected.wait(), 120)
        except TimeoutError:
            pass
        ready.set()
        await asyncio.wait(tasks, timeout=max(1.0, deadline - time.time()))
        for task in tasks:
            task.cancel()
    out.put({"latencies": latencies, "received": received, "failures": failures})


def _client_process(
    base: str,
    job_ids: list[str],
    count: int,
    ready: MpEvent,
    out: Any,
    deadline: float,
    key: str,
) -> None:
    _raise_fd_limit()
    asyncio.run(_client_main(base, job_ids, count, ready, out, deadline, key))


async def _make_jobs(settings: Settings) -> list[str]:
    engine = make_engine(settings, pool_size=2)
    sessions = make_sessionmaker(engine)
    ids = [uuid.uuid4() for _ in range(JOBS)]
    async with sessions() as session, session.begin():
        for job_id in ids:
            await transitions.create_job(
                session,
                transitions.NewJob(id=job_id, owner="tests", source="upload", model="tiny.en"),
            )
    await engine.dispose()
    return [str(i) for i in ids]


async def _publish(settings: Settings, job_ids: list[str]) -> int:
    from redis.asyncio import Redis

    client = Redis.from_url(settings.redis_url)
    published = 0
    started = time.monotonic()
    try:
        for tick in range(SECONDS * RATE):
            # Evenly spaced ticks; every job publishes once per tick.
            await asyncio.sleep(max(0.0, started + tick / RATE - time.monotonic()))
            for job_id in job_ids:
                percent = 100.0 * tick / (SECONDS * RATE)
                event = events.Progress(job_id=job_id, stage="transcribing", percent=percent)
                await emit(client, None, settings, event)
                published += 1
        for job_id in job_ids:
            await emit(client, None, settings, events.Completed(job_id=job_id))
    finally:
        await client.aclose()
    return published


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}
    return {
        "p50": round(1000 * statistics.median(ordered), 1),
        "p99": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
        "max": round(1000 * ordered[-1], 1),
    }


def run() -> dict[str, Any]:
    """Run the SSE benchmark on a private API process; figures as a dict."""
    _raise_fd_limit()
    base_settings = load_settings()
    host_db = base_settings.database_url.rsplit("/", 1)[0]
    redis_url = base_settings.redis_url.rsplit("/", 1)[0] + f"/{BENCH_REDIS_DB}"
    asyncio.run(recreate_database(f"{host_db}/{BENCH_DB}"))
    redis.Redis.from_url(redis_url).flushdb()
    with tempfile.TemporaryDirectory(prefix="steno-bench-sse-") as tmp:
        settings = load_settings(
            {},
            database_url=f"{host_db}/{BENCH_DB}",
            redis_url=redis_url,
            data_dir=Path(tmp),
            port=free_port(),
            log_level="WARNING",
            sse_max_streams_per_key=CLIENTS + 100,
            sse_heartbeat_seconds=15.0,
        )
        migrate(settings)
        key = make_key(settings, "bench", owner="tests")
        job_ids = asyncio.run(_make_jobs(settings))
        api, base = start_api(settings, Path(tmp))
        try:
            rss_idle = _rss_bytes(api.pid)
            context = multiprocessing.get_context("spawn")
            out = context.Queue()
            deadline = time.time() + 120 + SECONDS + 30
            readies = []
            clients = []
            per_process = CLIENTS // CLIENT_PROCESSES
            for _ in range(CLIENT_PROCESSES):
                ready = context.Event()
                process = context.Process(
                    target=_client_process,
                    args=(base, job_ids, per_process, ready, out, deadline, key),
                )
                process.start()
                readies.append(ready)
                clients.append(process)
            for ready in readies:
                ready.wait(150)
            time.sleep(1.0)
            rss_connected = _rss_bytes(api.pid)
            cpu_before = _cpu_seconds(api.pid)
            published = asyncio.run(_publish(settings, job_ids))
            api_cpu = _cpu_seconds(api.pid) - cpu_before
            rss_after = _rss_bytes(api.pid)
            results = [out.get(timeout=deadline - time.time() + 30) for _ in clients]
            for process in clients:
                process.join(30)
        finally:
            api.stop()
    latencies = [value for result in results for value in result["latencies"]]
    expected = published * (CLIENTS // JOBS)
    return {
        "clients": CLIENTS,
        "client_processes": CLIENT_PROCESSES,
        "jobs": JOBS,
        "events_per_second_per_job": RATE,
        "events_published": published,
        "events_delivered": len(latencies),
        "delivered_share": round(len(latencies) / expected, 4) if expected else 0.0,
        "client_failures": sum(result["failures"] for result in results),
        "publish_to_receive_ms": _quantiles(latencies),
        # CPU the API process used per second of publishing (1.0 = one core saturated).
        "api_cpu_share": round(api_cpu / SECONDS, 2),
        "api_rss_mib": {
            "idle": round(rss_idle / 2**20, 1),
            "clients_connected": round(rss_connected / 2**20, 1),
            "after_publishing": round(rss_after / 2**20, 1),
        },
        "stack": "granian API (1 worker), Redis, aiohttp clients in their own processes",
    }
