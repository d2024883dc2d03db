"""The task-events benchmark's worker app: one no-op task on Steno's delivery settings.

``BENCH_BROKER`` names the Redis, ``BENCH_EVENTS=1`` turns Celery task events on exactly as
``STENO_TASK_EVENTS`` does for Steno's apps (``service.core.delivery.celery_conf``).
"""

from __future__ import annotations

import os

import redis

from service.core.delivery import celery_app
from tests.bench.task_events import DONE_KEY, QUEUE

app = celery_app(
    "bench-events",
    os.environ["BENCH_BROKER"],
    queues=[QUEUE],
    visibility_timeout=3600,
    task_events=os.environ.get("BENCH_EVENTS") == "1",
)
_done = redis.Redis.from_url(os.environ["BENCH_BROKER"])


@app.task(name="bench.noop")
def noop() -> None:
    """Count itself done; nothing else."""
    _done.incr(DONE_KEY)
