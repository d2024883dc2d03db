"""Steno's IO worker as an arq ``WorkerSettings`` (``steno worker io`` runs it).

``python -m workers.arq workers.io.worker.WorkerSettings`` serves it.

The handlers are plain ``async def f(ctx, ...)`` arq functions, served under their stable
Celery task names (the API and outbox rows send them by name) from the ``io`` queue of
Steno's own Celery app. Outcomes live in PostgreSQL, so no result is kept in Redis.
"""

from __future__ import annotations

import dataclasses

from service.core.db.engine import database_unreachable
from service.core.routing import QueueName, TaskName
from workers.app import app, settings
from workers.arq import RedisSettings, func
from workers.io.fetch import fetch_audio
from workers.io.relay import relay_outbox
from workers.io.retention import retention_sweep
from workers.io.runtime import shutdown, startup
from workers.io.webhooks import deliver_webhook
from workers.retry import TRANSIENT_RETRIES, transient_delay


def retry_transient(exc: BaseException, job_try: int) -> float | None:
    """Steno's retry policy: an unreachable database is retried with backoff, a few times."""
    return transient_delay(job_try - 1) if database_unreachable(exc) else None


class WorkerSettings:
    """The IO pool: fetches, webhook deliveries, the outbox relay and retention,
    ``io_concurrency`` at a time."""

    functions = (
        func(fetch_audio, name=TaskName.FETCH_AUDIO.value),
        func(relay_outbox, name=TaskName.RELAY_OUTBOX.value),
        func(retention_sweep, name=TaskName.RETENTION_SWEEP.value),
        func(deliver_webhook, name=TaskName.DELIVER_WEBHOOK.value),
    )
    on_startup = startup
    on_shutdown = shutdown
    queue_name = QueueName.IO.value
    max_jobs = settings.io_concurrency
    job_timeout = settings.max_time_limit
    keep_result = 0
    # The transient-error policy decides; this only bounds it.
    max_tries = TRANSIENT_RETRIES + 1
    redis_settings = dataclasses.replace(
        RedisSettings.from_dsn(settings.redis_url), max_connections=settings.io_concurrency
    )
    broker_url = settings.broker
    celery_app = app
    retry_policy = staticmethod(retry_transient)
    log_level = settings.log_level
    # JSON logs: no start-up banner, which Celery prints outside logging.
    quiet = settings.log_format == "json"
