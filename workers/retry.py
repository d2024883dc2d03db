"""How workers retry transient failures: exponential backoff with full jitter, bounded."""

from __future__ import annotations

import random

from celery import Task

# Retries for a task whose database was unreachable before it gives up: the backoffs add up
# to 1.5-3 minutes (1, 2, 4 ... 32, 60, 60 s, each jittered to 50-100 %).
TRANSIENT_RETRIES = 8


def backoff(retries: int) -> float:
    """Seconds before retry number ``retries + 1``: up to 1, 2, 4 ... 60 s, jittered."""
    return random.uniform(0.5, 1.0) * min(60.0, 2.0**retries)


def transient_delay(retries: int) -> float | None:
    """Seconds before retry number ``retries + 1``, or None once the retries are spent."""
    return backoff(retries) if retries < TRANSIENT_RETRIES else None


def retry_later(task: Task, exc: Exception) -> None:
    """Raise Celery's retry of ``task`` after ``backoff``; return when the retries are spent.

    The caller re-raises ``exc`` after it: the task then fails for good.
    """
    delay = transient_delay(int(task.request.retries or 0))
    if delay is not None:
        raise task.retry(countdown=delay, max_retries=None, exc=exc) from exc
