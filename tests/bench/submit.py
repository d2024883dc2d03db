"""Submit latency under a burst: 20 uploads at once to the real API (no workers needed).

Starts one granian API process on a private database and Redis database and, for each of
ROUNDS rounds and each clip format (WAV, OGG Vorbis: one with a header Steno reads in
Python, one that needs ffprobe), posts BURST uploads of the same ~6 s espeak-ng clip at once
(httpx, in this process) and records each submit's latency. Reports p50/p99/max per round
and min/median/max of the p50s over rounds. Accepted jobs just wait in the queue.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import httpx

from tests.audio import SENTENCES, speak
from tests.bench.stack import private_settings
from tests.conftest import bearer, make_key, start_api

BURST = 20
ROUNDS = 5
FORMATS = ("wav", "ogg")
BENCH_DB = "steno_bench_submit"
BENCH_REDIS_DB = 9


async def _burst(base: str, key: str, clip: bytes, name: str) -> list[float]:
    limits = httpx.Limits(max_connections=BURST)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def submit(i: int) -> float:
            started = time.perf_counter()
            response = await client.post(
                "/v1/jobs", files={"file": (f"{i}-{name}", clip)}, headers=bearer(key)
            )
            response.raise_for_status()
            return time.perf_counter() - started

        # One request first so that connections, pools and imports are warm.
        await submit(-1)
        return list(await asyncio.gather(*(submit(i) for i in range(BURST))))


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 3),
        "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
        "max": round(ordered[-1], 3),
    }


def run() -> dict[str, Any]:
    """Run the submit benchmark on a private API process; figures as a dict."""
    figures: dict[str, Any] = {"burst": BURST, "rounds": ROUNDS}
    with tempfile.TemporaryDirectory(prefix="steno-bench-submit-") as tmp:
        settings = private_settings(BENCH_DB, BENCH_REDIS_DB, Path(tmp), submits_per_minute=10_000)
        key = make_key(settings, "bench", owner="bench")
        clips = {fmt: speak(" ".join(SENTENCES[:2]), Path(tmp) / f"clip.{fmt}") for fmt in FORMATS}
        with wave.open(str(clips["wav"])) as audio:
            figures["clip_seconds"] = round(audio.getnframes() / audio.getframerate(), 2)
        api, base = start_api(settings, Path(tmp))
        try:
            for fmt, path in clips.items():
                clip = path.read_bytes()
                rounds = [
                    _quantiles(asyncio.run(_burst(base, key, clip, path.name)))
                    for _ in range(ROUNDS)
                ]
                p50s = [r["p50"] for r in rounds]
                figures[fmt] = {
                    "rounds": rounds,
                    "p50_s": {
                        "min": min(p50s),
                        "median": statistics.median(p50s),
                        "max": max(p50s),
                    },
                    "p99_s_median": statistics.median(r["p99"] for r in rounds),
                }
        finally:
            api.stop()
    figures["stack"] = "granian API (1 worker), Redis, PostgreSQL; httpx client, no workers"
    return figures
