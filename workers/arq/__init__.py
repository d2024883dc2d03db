"""An arq-compatible job layer on Celery's gevent pool.

A program written for arq (0.26) runs with its imports changed from ``arq`` to
``workers.arq``: the same ``WorkerSettings``, ``create_pool(...).enqueue_job(...)``, ``Job``,
``Retry``, ``func`` and ``cron``; ``python -m workers.arq path.to.WorkerSettings`` starts the
worker. Underneath, Celery executes every job (routing through kombu, monitoring, scaling),
and the job's state lives in arq's Redis keys. See the README for what differs from arq.
"""

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
