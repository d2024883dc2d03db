"""Celery tasks of the IO queue: thin wrappers that run async handlers on the loop thread."""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import Task
from celery.signals import worker_shutdown

from service.broker import CeleryPublisher
from service.db.engine import database_unreachable
from workers.app import app, settings
from workers.io.fetch import fetch_audio as fetch_audio_handler
from workers.io.relay import relay_outbox as relay_outbox_handler
from workers.io.runtime import Handler, Retry, close_runtime, enqueue_time, get_runtime
from workers.retry import retry_later
from workers.routing import TaskName

log = logging.getLogger(__name__)


def run_handler(task: Task, handler: Handler, *args: Any) -> Any:
    """Run an ARQ-style handler for this Celery task; ``Retry`` becomes a Celery retry."""
    runtime = get_runtime(settings, CeleryPublisher(app))
    request = task.request
    try:
        return runtime.call(
            handler,
            *args,
            job_id=str(request.id),
            job_try=int(request.retries or 0) + 1,
            enqueue_time=enqueue_time(getattr(request, "enqueued_at", None)),
        )
    except Retry as retry:
        # Jitter spreads retries of many jobs that failed together.
        countdown = retry.defer * random.uniform(0.8, 1.2)
        raise task.retry(countdown=countdown, max_retries=None, exc=retry) from retry
    except Exception as exc:
        if database_unreachable(exc):
            log.warning("%s: database unreachable, retrying: %s", task.name, exc)
            retry_later(task, exc)
        raise


@app.task(name=TaskName.FETCH_AUDIO.value, bind=True)
def fetch_audio(self: Task, job_id: str) -> Any:
    """Fetch a URL job's audio; see ``workers.io.fetch.fetch_audio``."""
    return run_handler(self, fetch_audio_handler, job_id)


@app.task(name=TaskName.RELAY_OUTBOX.value, bind=True, acks_late=False)
def relay_outbox(self: Task) -> Any:
    """Publish outbox messages the fast path missed; see ``workers.io.relay``."""
    return run_handler(self, relay_outbox_handler)


@worker_shutdown.connect
def _close_runtime(**_: Any) -> None:
    close_runtime()
