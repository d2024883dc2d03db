"""SSE fan-out: publish-to-receive latency with 1,000 clients on one API process.

Starts one granian API process on a private database and Redis database, makes JOBS jobs,
connects CLIENTS SSE clients (raw asyncio protocols, ``tests/bench/sse_clients.py``, in
CLIENT_PROCESSES processes of their own, spread evenly over the jobs), then publishes RATE
progress events per second per job for SECONDS with the workers' own ``emit``, and finally
each job's terminal event. Each event carries its publish time (``at``); clients record
receive time minus that. Reports p50/p99/max
latency, the share delivered, the CPU of the server and of the clients while publishing,
and the server's memory (RSS, main + worker) before and while the clients are connected.

The same round then runs against the bare fan-out reference (``tests/bench/sse_bare.py``),
and, first, when ``BENCH_SSE_BEFORE`` names another checkout (e.g. ``git archive`` of an
older commit), against that checkout's API: figures to compare side by side in one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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

import httpx

from service.cli.processes import process_argv, python_module
from service.core import transitions
from service.core.db.engine import make_engine, make_sessionmaker
from service.core.events import schemas as events
from service.core.events.publish import emit
from service.core.settings import Settings
from tests.bench import sse_clients
from tests.bench.stack import private_settings
from tests.conftest import (
    WorkerProcess,
    descendants,
    free_port,
    make_key,
    start_api,
)

CLIENTS = 1000
# One process of raw asyncio clients (tests/bench/sse_clients.py) leaves the server most of a
# core; BENCH_SSE_CLIENT_PROCESSES spreads them over more.
CLIENT_PROCESSES = int(os.environ.get("BENCH_SSE_CLIENT_PROCESSES", "1"))
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
    tally = sse_clients.Tally(count)
    host, port = base.removeprefix("http://").split(":")
    paths = [f"/v1/jobs/{job_ids[i % len(job_ids)]}/events" for i in range(count)]
    headers = {"Authorization": f"Bearer {key}"}
    await sse_clients.follow(host, int(port), paths, headers, tally)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(tally.all_connected.wait(), 120)
    ready.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(tally.all_finished.wait(), max(1.0, deadline - time.time()))
    out.put(tally.figures())


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


def _wait_until_serving(process: WorkerProcess, base: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{base}/healthz", timeout=2)
            return
        except httpx.TransportError:
            pass
        if process.process.poll() is not None or time.monotonic() > deadline:
            process.stop()
            raise RuntimeError(f"{process.name} did not start: {process.log()[-3000:]}")
        time.sleep(0.2)


def _start(target: str, settings: Settings, tmp: Path) -> tuple[WorkerProcess, str]:
    """One server under test: ``api`` (this checkout), ``before`` (the API of the checkout
    named by ``BENCH_SSE_BEFORE``) or ``bare`` (tests/bench/sse_bare.py)."""
    if target == "api":
        return start_api(settings, tmp)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    if target == "bare":
        argv = python_module(
            "granian", "--interface", "asgi", "tests.bench.sse_bare:app",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        )  # fmt: skip
        process = WorkerProcess("bare", settings, tmp, argv=argv)
    else:
        before = dataclasses.replace(settings, port=port)
        checkout = Path(os.environ["BENCH_SSE_BEFORE"]).resolve()
        argv = process_argv("api", before)
        process = WorkerProcess("before", before, tmp, argv=argv, cwd=checkout)
    _wait_until_serving(process, base)
    return process, base


def _measure(target: str, settings: Settings, tmp: Path) -> dict[str, Any]:
    """One round: a fresh key and jobs, CLIENTS clients on ``target``, SECONDS of publishing."""
    # A key of its own: the stream slots of the round before may not all have lapsed.
    key = make_key(settings, f"bench-{uuid.uuid4().hex[:8]}", owner="tests")
    job_ids = asyncio.run(_make_jobs(settings))
    api, base = _start(target, settings, tmp)
    try:
        time.sleep(1.0)
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
        clients_cpu_before = sum(_cpu_seconds(process.pid) for process in clients)
        published = asyncio.run(_publish(settings, job_ids))
        api_cpu = _cpu_seconds(api.pid) - cpu_before
        clients_cpu = sum(_cpu_seconds(process.pid) for process in clients) - clients_cpu_before
        rss_after = _rss_bytes(api.pid)
        results = [out.get(timeout=deadline - time.time() + 30) for _ in clients]
        for process in clients:
            process.join(30)
    finally:
        api.stop()
    latencies = [value for result in results for value in result["latencies"]]
    expected = published * (CLIENTS // JOBS)
    figures = {
        "events_published": published,
        "events_delivered": len(latencies),
        "delivered_share": round(len(latencies) / expected, 4) if expected else 0.0,
        "client_failures": sum(result["failures"] for result in results),
        "client_errors": sorted({error for result in results for error in result["errors"]})[:5],
        "publish_to_receive_ms": _quantiles(latencies),
        # CPU the server used per second of publishing (1.0 = one core saturated).
        "server_cpu_share": round(api_cpu / SECONDS, 2),
        # The same for the load generator's processes together (the clients).
        "clients_cpu_share": round(clients_cpu / SECONDS, 2),
        "server_rss_mib": {
            "idle": round(rss_idle / 2**20, 1),
            "clients_connected": round(rss_connected / 2**20, 1),
            "after_publishing": round(rss_after / 2**20, 1),
        },
    }
    print(f"{target}: {json.dumps(figures)}", flush=True)
    return figures


def run() -> dict[str, Any]:
    """Run the SSE benchmark: the API, then the bare fan-out (and, with ``BENCH_SSE_BEFORE``
    naming another checkout, that checkout's API), each measured once; figures as a dict."""
    _raise_fd_limit()
    targets = ["api", "bare"]
    if os.environ.get("BENCH_SSE_BEFORE"):
        targets.insert(0, "before")
    targets = os.environ.get("BENCH_SSE_TARGETS", ",".join(targets)).split(",")
    rounds: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="steno-bench-sse-") as tmp:
        settings = private_settings(
            BENCH_DB,
            BENCH_REDIS_DB,
            Path(tmp),
            sse_max_streams_per_key=CLIENTS + 100,
            sse_heartbeat_seconds=15.0,
        )
        for target in targets:
            # A target named again (``BENCH_SSE_TARGETS=api,bare,api,bare``) is another round.
            name = target if target not in rounds else f"{target}-{len(rounds)}"
            rounds[name] = _measure(target, settings, Path(tmp))
    api = rounds.get("api", {}).get("publish_to_receive_ms", {})
    bare = rounds.get("bare", {}).get("publish_to_receive_ms", {})
    return {
        "clients": CLIENTS,
        "client_processes": CLIENT_PROCESSES,
        "jobs": JOBS,
        "events_per_second_per_job": RATE,
        **rounds,
        "p99_api_to_bare": round(api["p99"] / bare["p99"], 2) if "p99" in api and bare else None,
        "stack": "granian (1 worker) each, Redis, raw asyncio SSE clients in their own process(es)",
    }
