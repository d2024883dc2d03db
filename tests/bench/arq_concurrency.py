"""Jobs awaiting a 100 ms HTTP response: Steno's arq layer (Celery, gevent) against arq itself.

For each concurrency C, N jobs that each await one response from a local server answering
after 100 ms are enqueued first; then one worker process at concurrency C drains them in
burst mode. Throughput is N over the span from the first job's start to the last job's end
(from the jobs' own result records, so start-up and enqueueing are left out), compared with
the ideal C / 0.1 s and with the same jobs run by arq 0.26 (in ``.venv-arq``, made here on
first use, because arq pins redis < 6 and Steno uses redis 8), both with its default
``poll_delay`` (0.5 s) and tuned (0.01 s). A sleep-only variant of the job
(``asyncio.sleep(0.1)``, no HTTP) separates the layer's own cost from the HTTP client's.

The ``http`` job uses httpx as a user would, on httpx-aiohttp's transport (``arq_jobs.py``),
in both implementations; Steno's layer also runs it on httpx's own transport, for comparison.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from service.core.settings import load_settings
from workers.arq import RedisSettings, create_pool

ROOT = Path(__file__).resolve().parents[2]
ARQ_VENV = ROOT / ".venv-arq"
ARQ_REQUIREMENTS = ("arq==0.26.3", "httpx>=0.28", "httpx-aiohttp==0.2.0")
BENCH_REDIS_DB = 6
DELAY_SECONDS = 0.1
# (concurrency, jobs): a few seconds of ideal work each, so the whole bench stays in minutes.
RUNS = ((10, 300), (50, 1000))
RUN_TIMEOUT = float(os.environ.get("BENCH_RUN_TIMEOUT", "300"))
TUNED_POLL_DELAY = 0.01
# (name, implementation, HTTP transport, arq poll_delay): every variant of each (job, C).
VARIANTS = (
    ("steno", "steno", "aiohttp", None),
    ("steno_httpx_transport", "steno", "httpx", None),
    ("arq", "arq", "aiohttp", 0.5),
    ("arq_tuned", "arq", "aiohttp", TUNED_POLL_DELAY),
)


def _arq_python() -> Path:
    """The Python of a venv with arq installed (created from PyPI on first use)."""
    python = ARQ_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(ARQ_VENV)], check=True)
    missing = subprocess.run([str(python), "-c", "import arq, httpx_aiohttp"], check=False)
    if missing.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *ARQ_REQUIREMENTS], check=True)
    return python


@contextmanager
def _slow_server() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "bench" / "slow_http.py")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(10)


def _span(records: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in records if r["s"] and r["r"] in (200, None)]
    span = (max(r["ft"] for r in records) - min(r["st"] for r in records)) / 1000
    return {"jobs": len(records), "ok": len(ok), "seconds": round(span, 3)}


def _results(client: redis.Redis, load: Any) -> list[dict[str, Any]]:
    return [load(client.get(key)) for key in client.scan_iter("arq:result:*", count=1000)]


async def _enqueue_steno(redis_url: str, jobs: int, url: str) -> None:
    pool = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name="bench")
    try:
        for _ in range(jobs):
            if url == "sleep":
                await pool.enqueue_job("sleep_only")
            else:
                await pool.enqueue_job("call_api", url)
    finally:
        await pool.aclose()


def _run_worker(argv: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("wb") as out:
        process = subprocess.run(
            argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT
        )
    if process.returncode != 0:
        raise RuntimeError(f"{argv} exited {process.returncode}; see {log}")


def _measure(
    kind: str,
    concurrency: int,
    jobs: int,
    url: str,
    redis_url: str,
    *,
    transport: str,
    poll_delay: float | None,
) -> dict[str, Any]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    env = {
        **os.environ,
        "BENCH_REDIS": redis_url,
        "BENCH_CONCURRENCY": str(concurrency),
        "BENCH_HTTP_TRANSPORT": transport,
        "PYTHONPATH": str(ROOT),
    }
    if poll_delay is not None:
        env["BENCH_POLL_DELAY"] = str(poll_delay)
    job = "sleep" if url == "sleep" else "http"
    name = f"bench-arq-{kind}-{job}-{concurrency}-{transport}-{poll_delay}.log"
    log = Path(os.environ.get("TMPDIR", "/tmp")) / name
    if kind == "steno":
        asyncio.run(_enqueue_steno(redis_url, jobs, url))
        argv = [sys.executable, "-m", "workers.arq", "tests.bench.arq_jobs.WorkerSettings"]
        _run_worker([*argv, "--burst"], env, log)
        records = _results(client, json.loads)
    else:
        python = str(_arq_python())
        script = str(ROOT / "tests" / "bench" / "arq_native.py")
        subprocess.run([python, script, "enqueue", str(jobs), url], env=env, check=True)
        _run_worker([python, script, "worker"], env, log)
        # arq pickles plain dicts here (the result is an int): no arq import needed to read.
        records = _results(client, pickle.loads)
    client.flushdb()
    figures = _span(records)
    if figures["ok"] != jobs:
        raise RuntimeError(f"{kind}: {figures['ok']} of {jobs} jobs succeeded; see {log}")
    figures["jobs_per_second"] = round(jobs / figures["seconds"], 1)
    return figures


def run() -> dict[str, Any]:
    """Measure both implementations at each concurrency; return the figures."""
    base = load_settings().redis_url
    redis_url = base.rsplit("/", 1)[0] + f"/{BENCH_REDIS_DB}"
    _arq_python()
    results = []
    with _slow_server() as server_url:
        for concurrency, jobs in RUNS:
            ideal = concurrency / DELAY_SECONDS
            for job, url in (("http", server_url), ("sleep", "sleep")):
                started = time.perf_counter()
                row: dict[str, Any] = {
                    "job": job,
                    "concurrency": concurrency,
                    "jobs": jobs,
                    "ideal_jobs_per_second": ideal,
                }
                for name, kind, transport, poll_delay in VARIANTS:
                    if job == "sleep" and transport == "httpx":
                        continue  # no HTTP in the sleep job
                    row[name] = _measure(
                        kind,
                        concurrency,
                        jobs,
                        url,
                        redis_url,
                        transport=transport,
                        poll_delay=poll_delay,
                    )
                rate = {n: row[n]["jobs_per_second"] for n, *_ in VARIANTS if n in row}
                row["steno_vs_ideal"] = round(rate["steno"] / ideal, 3)
                row["steno_vs_arq"] = round(rate["steno"] / rate["arq"], 3)
                row["steno_vs_arq_tuned"] = round(rate["steno"] / rate["arq_tuned"], 3)
                row["seconds"] = round(time.perf_counter() - started, 1)
                results.append(row)
    return {
        "what": "N jobs, each awaiting one 100 ms HTTP response (job http) or a 100 ms "
        "asyncio.sleep (job sleep), drained by one worker process at concurrency C; "
        "HTTP through httpx on httpx-aiohttp's transport unless the variant says httpx",
        "arq_tuned_poll_delay": TUNED_POLL_DELAY,
        "delay_seconds": DELAY_SECONDS,
        "runs": results,
    }
