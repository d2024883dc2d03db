"""An arq-compatible job layer on Celery's gevent pool.

A program written for arq (0.26) runs with its imports changed from ``arq`` to
``workers.arq``: the same ``WorkerSettings``, ``create_pool(...).enqueue_job(...)``, ``Job``,
``Retry``, ``func`` and ``cron``; ``python -m workers.arq path.to.WorkerSettings`` starts the
worker. Underneath, Celery executes every job (routing through kombu, monitoring, scaling),
and the job's state lives in arq's Redis keys. See the README for what differs from arq.

The names are imported on first use, so that ``python -m workers.arq`` can monkey-patch the
standard library for gevent before redis, ssl and Celery are imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.arq.connections import ArqRedis, RedisSettings, create_pool
    from workers.arq.cron import cron
    from workers.arq.jobs import Job, JobStatus
    from workers.arq.worker import Retry, Worker, func

__all__ = [
    "ArqRedis",
    "Job",
    "JobStatus",
    "RedisSettings",
    "Retry",
    "Worker",
    "create_pool",
    "cron",
    "func",
]

_HOMES = {
    "ArqRedis": "connections",
    "RedisSettings": "connections",
    "create_pool": "connections",
    "cron": "cron",
    "Job": "jobs",
    "JobStatus": "jobs",
    "Retry": "worker",
    "Worker": "worker",
    "func": "worker",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'workers.arq' has no attribute {name!r}")
    return getattr(importlib.import_module(f"workers.arq.{home}"), name)
