"""End to end on this machine: uploads through the real API process to real workers.

Starts its own stack (granian API, one IO worker, one GPU worker with one child, beat) on a
private database and Redis database, submits JOBS uploads of the same ~10 s clip at once,
and reports submit latency, time to completion and throughput (audio seconds per second).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.audio import SENTENCES, speak
from tests.bench.stack import private_settings
from tests.conftest import WorkerProcess, bearer, make_key, wait_for_queues

JOBS = 20
BENCH_DB = "steno_bench"
BENCH_REDIS_DB = 7


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 3),
        "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
        "max": round(ordered[-1], 3),
    }


async def _drive(base: str, clip: bytes, key: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=120, headers=bearer(key)) as client:
        deadline = time.monotonic() + 180
        while (await client.get("/readyz")).status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError("the stack did not get ready")
            await asyncio.sleep(0.5)

        async def submit(i: int) -> tuple[str, float, float]:
            started = time.perf_counter()
            response = await client.post(
                "/v1/jobs", files={"file": (f"clip{i}.wav", clip, "audio/wav")}
            )
            response.raise_for_status()
            return response.json()["id"], started, time.perf_counter() - started

        began = time.perf_counter()
        submitted = await asyncio.gather(*(submit(i) for i in range(JOBS)))
        done: dict[str, float] = {}
        audio = 0.0
        while len(done) < JOBS:
            page = (await client.get("/v1/jobs", params={"limit": 200})).json()["items"]
            for job in page:
                if job["status"] in ("completed", "failed", "cancelled") and job["id"] not in done:
                    if job["status"] != "completed":
                        raise RuntimeError(f"job {job['id']} {job['status']}: {job['error']}")
                    done[job["id"]] = time.perf_counter()
                    audio += job["audio_seconds"] or 0.0
            if time.perf_counter() - began > 600:
                raise TimeoutError(f"only {len(done)} of {JOBS} jobs completed in 600 s")
            await asyncio.sleep(0.2)
        wall = max(done.values()) - began
        return {
            "jobs": JOBS,
            "audio_seconds_per_job": round(audio / JOBS, 1),
            "submit_latency_seconds": _quantiles([latency for _, _, latency in submitted]),
            "time_to_completed_seconds": _quantiles(
                [done[job_id] - started for job_id, started, _ in submitted]
            ),
            "wall_seconds": round(wall, 1),
            "jobs_per_minute": round(60 * JOBS / wall, 1),
            "audio_seconds_per_wall_second": round(audio / wall, 2),
        }


def run() -> dict[str, Any]:
    """Run the pipeline benchmark on a private stack; figures as a dict."""
    with tempfile.TemporaryDirectory(prefix="steno-bench-") as tmp:
        settings = private_settings(BENCH_DB, BENCH_REDIS_DB, Path(tmp), submits_per_minute=0)
        key = make_key(settings, "bench")
        clip = speak(" ".join(SENTENCES[:3]), Path(tmp) / "clip.wav").read_bytes()
        processes = [
            WorkerProcess(name, settings, Path(tmp))
            for name in ("api", "worker-io", "worker-gpu", "beat")
        ]
        try:
            wait_for_queues(settings, {"io", "gpu"})
            figures = asyncio.run(_drive(f"http://127.0.0.1:{settings.port}", clip, key))
        finally:
            for process in processes:
                process.stop()
    figures["stack"] = "granian API, 1 IO worker (gevent), 1 GPU worker (1 child, CPU)"
    return figures
