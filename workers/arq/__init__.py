"""An arq-compatible job layer on Celery's gevent pool.

A program written for arq (0.26) runs with its imports changed from ``arq`` to
``workers.arq``: the same ``WorkerSettings``, ``create_pool(...).enqueue_job(...)``, ``Job``,
``Retry``, ``func`` and ``cron``; ``python -m workers.arq path.to.WorkerSettings`` starts the
worker. Underneath, Celery executes every job (routing through kombu, monitoring, scaling),
and the job's state lives in arq's Redis keys. See the README for what differs from arq.
"""

import sys

# ``python -m workers.arq`` runs a gevent worker: the standard library must be patched before
# redis, ssl and Celery are imported, and Python imports this package before ``__main__``.
_argv = list(getattr(sys, "orig_argv", []))
if "-m" in _argv and _argv[_argv.index("-m") + 1 : _argv.index("-m") + 2] == ["workers.arq"]:
    from gevent import monkey

    monkey.patch_all()

from workers.arq.connections import ArqRedis, RedisSettings, create_pool  # noqa: E402
from workers.arq.cron import cron  # noqa: E402
from workers.arq.jobs import Job, JobStatus  # noqa: E402
from workers.arq.worker import Retry, Worker, func  # noqa: E402

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
