"""What Celery task events (``STENO_TASK_EVENTS``, what Flower shows) cost: no-op tasks with
events off, on, and on with Flower consuming them, side by side in one run.

For each pool (prefork -c 2 like the GPU pool, gevent -c 50 like the IO pool) and each round,
the three modes run one after another against a private redis-server. N no-op tasks are sent
first through Steno's publisher (the API's path: ``CeleryPublisher``, which binds the queue,
and sends ``task-sent`` when events are on): the sender's rate. Then a fresh worker drains
them; a task counts itself done with one Redis INCR: the worker's rate, from its first task
done to its last. Medians over the rounds (modes interleave, so machine noise falls on all
of them alike).
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from service.cli.infra import find_binary
from service.core.broker import CeleryPublisher
from service.core.delivery import celery_app
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
TASKS = int(os.environ.get("BENCH_EVENTS_TASKS", "2000"))
ROUNDS = int(os.environ.get("BENCH_EVENTS_ROUNDS", "3"))
POOLS = (("prefork", 2), ("gevent", 50))
MODES = ("off", "on", "on+flower")
TIMEOUT = 300.0
# The worker's queue and the key its tasks count themselves in (tests/bench/events_app.py).
QUEUE = "bench_events"
DONE_KEY = "bench:events:done"


@contextmanager
def _redis_server() -> Iterator[str]:
    binary = find_binary("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is needed (deploy/bootstrap.sh installs it)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tempfile.gettempdir(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait(lambda: redis.Redis.from_url(url).ping(), "redis-server to start")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _wait(check: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except redis.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.02)


def _celery(broker: str, events: bool, *argv: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BENCH_BROKER": broker, "BENCH_EVENTS": "1" if events else "0"}
    command = [sys.executable, "-m", "celery", "-A", "tests.bench.events_app", "--quiet", *argv]
    log = Path(tempfile.gettempdir(), f"bench-events-{argv[0]}.log").open("wb")
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _measure(broker: str, pool: str, concurrency: int, mode: str) -> dict[str, float]:
    client = redis.Redis.from_url(broker)
    client.flushdb()
    events = mode != "off"
    flower = None
    if mode == "on+flower":
        port = free_port()
        flower = _celery(broker, events, "flower", "--address=127.0.0.1", f"--port={port}")
        _wait(lambda: _listening(port), "Flower to listen")
    producer = celery_app(
        "bench-sender", broker, visibility_timeout=3600, connect_timeout=5, task_events=events
    )
    publisher = CeleryPublisher(producer)
    worker = None
    try:
        # The sender's side: every task sent before a worker runs.
        started = time.perf_counter()
        for _ in range(TASKS):
            publisher.publish("bench.noop", QUEUE, [], None)
        sent = time.perf_counter()
        # The worker's side: the rate from its first task done to its last.
        worker = _celery(
            broker,
            events,
            *("worker", "-P", pool, "-c", str(concurrency), "-Q", QUEUE),
            *("--without-mingle", "--without-gossip", "--loglevel", "WARNING"),
        )
        _wait(lambda: int(client.get(DONE_KEY) or 0) > 0, "the worker's first task")
        first, began = int(client.get(DONE_KEY) or 0), time.perf_counter()
        total = str(TASKS).encode()
        _wait(lambda: client.get(DONE_KEY) == total, f"{TASKS} tasks", timeout=TIMEOUT)
        done = time.perf_counter()
    finally:
        producer.close()
        for process in (worker, flower):
            if process is not None:
                _stop(process)
    return {
        "tasks_per_second": (TASKS - first) / (done - began),
        "sends_per_second": TASKS / (sent - started),
    }


def run() -> dict[str, Any]:
    """Every pool, mode and round; medians per pool and mode, and the cost relative to off."""
    measured: dict[tuple[str, str], list[dict[str, float]]] = {}
    with _redis_server() as broker:
        for pool, concurrency in POOLS:
            for _ in range(ROUNDS):
                for mode in MODES:
                    figures = _measure(broker, pool, concurrency, mode)
                    measured.setdefault((pool, mode), []).append(figures)
    results = []
    for pool, concurrency in POOLS:
        off = statistics.median(f["tasks_per_second"] for f in measured[(pool, "off")])
        off_sends = statistics.median(f["sends_per_second"] for f in measured[(pool, "off")])
        for mode in MODES:
            runs = measured[(pool, mode)]
            rate = statistics.median(f["tasks_per_second"] for f in runs)
            sends = statistics.median(f["sends_per_second"] for f in runs)
            results.append(
                {
                    "pool": f"{pool} -c {concurrency}",
                    "events": mode,
                    "tasks_per_second_median": round(rate, 1),
                    "tasks_per_second_runs": [round(f["tasks_per_second"], 1) for f in runs],
                    "worker_vs_off": round(rate / off, 3),
                    "sends_per_second_median": round(sends, 1),
                    "sends_per_second_runs": [round(f["sends_per_second"], 1) for f in runs],
                    "sender_vs_off": round(sends / off_sends, 3),
                }
            )
    return {
        "what": f"{TASKS} no-op tasks (one Redis INCR each) sent through Steno's publisher, "
        "then drained by one worker; task events off / on / on with Flower consuming them",
        "rounds": ROUNDS,
        "runs": results,
    }
