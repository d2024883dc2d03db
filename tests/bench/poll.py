"""Polling a job: ``GET /v1/jobs/{id}`` on the real API (key checked) against a bare reference.

Starts, side by side in one run and on one private database, the real API (granian, 1
worker) and a bare Litestar app on the same server doing one asyncpg ``fetchrow`` by primary
key and returning msgspec JSON (``tests/bench/poll_bare.py``). A load generator in its own
process keeps CONCURRENCY keep-alive connections busy for SECONDS (raw asyncio HTTP/1.1, far
cheaper per request than aiohttp or httpx, so it leaves the server most of a core), and the
two targets take turns for ROUNDS rounds. Reports req/s and p50/p99 per round, min/median/max
over rounds, and the ratio real/bare of each round (each pair measured back to back).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from service.cli.processes import python_module
from service.core import transitions
from service.core.db.engine import make_engine, make_sessionmaker
from service.core.settings import Settings
from tests.bench.stack import private_settings
from tests.conftest import WorkerProcess, free_port, make_key, start_api

CONCURRENCY = 32
SECONDS = 10.0
ROUNDS = 3
BENCH_DB = "steno_bench_poll"
BENCH_REDIS_DB = 8


async def _one_connection(
    host: str, port: int, request: bytes, until: float, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


async def _load(base: str, path: str, headers: dict[str, str], seconds: float) -> dict[str, Any]:
    host, port = base.removeprefix("http://").split(":")
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    latencies: list[float] = []
    errors: list[int] = []
    # A short warm-up, not counted: connections made, caches and pools filled.
    await asyncio.gather(
        *(
            _one_connection(host, int(port), request, time.perf_counter() + 1.0, [], errors)
            for _ in range(CONCURRENCY)
        )
    )
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _one_connection(host, int(port), request, started + seconds, latencies, errors)
            for _ in range(CONCURRENCY)
        )
    )
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "req_per_s": round(len(ordered) / elapsed),
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p99_ms": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 2),
        "non_200": len(errors),
    }


def _load_process(base: str, path: str, headers: dict[str, str], seconds: float, out: Any) -> None:
    out.put(asyncio.run(_load(base, path, headers, seconds)))


def load(base: str, path: str, headers: dict[str, str], seconds: float = SECONDS) -> dict[str, Any]:
    """One bounded load run from a process of its own; its figures."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    process = context.Process(target=_load_process, args=(base, path, headers, seconds, out))
    process.start()
    try:
        return dict(out.get(timeout=seconds + 60))
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()


async def _make_job(settings: Settings, owner: str) -> str:
    engine = make_engine(settings, pool_size=1)
    job_id = uuid.uuid4()
    async with make_sessionmaker(engine)() as session, session.begin():
        await transitions.create_job(
            session, transitions.NewJob(id=job_id, owner=owner, source="upload", model="tiny.en")
        )
    await engine.dispose()
    return str(job_id)


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def run() -> dict[str, Any]:
    """Run the polling benchmark; figures as a dict."""
    with tempfile.TemporaryDirectory(prefix="steno-bench-poll-") as tmp:
        settings = private_settings(BENCH_DB, BENCH_REDIS_DB, Path(tmp))
        key = make_key(settings, "bench", owner="bench")
        job_id = asyncio.run(_make_job(settings, "bench"))
        api, api_base = start_api(settings, Path(tmp))
        bare_port = free_port()
        bare = WorkerProcess(
            "bare",
            settings,
            Path(tmp),
            argv=python_module(
                "granian",
                "--interface",
                "asgi",
                "--factory",
                "tests.bench.poll_bare:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(bare_port),
                "--log-level",
                "warning",
            ),
        )
        bare_base = f"http://127.0.0.1:{bare_port}"
        rounds: list[dict[str, Any]] = []
        try:
            time.sleep(3.0)
            path = f"/v1/jobs/{job_id}"
            for _ in range(ROUNDS):
                real = load(api_base, path, {"Authorization": f"Bearer {key}"})
                reference = load(bare_base, path, {})
                ratio = round(real["req_per_s"] / reference["req_per_s"], 3)
                rounds.append({"api": real, "bare": reference, "ratio": ratio})
                print(f"round: api {real} bare {reference} ratio {ratio}", flush=True)
        finally:
            api.stop()
            bare.stop()
    return {
        "concurrency": CONCURRENCY,
        "seconds_per_run": SECONDS,
        "rounds": rounds,
        "api_req_per_s": _spread([r["api"]["req_per_s"] for r in rounds]),
        "bare_req_per_s": _spread([r["bare"]["req_per_s"] for r in rounds]),
        "api_p99_ms": _spread([r["api"]["p99_ms"] for r in rounds]),
        "bare_p99_ms": _spread([r["bare"]["p99_ms"] for r in rounds]),
        "ratio_api_to_bare": _spread([r["ratio"] for r in rounds]),
        "stack": "granian (1 worker) each; raw asyncio HTTP/1.1 load generator, own process",
    }
