"""A standalone arq worker's Redis visibility timeout: long enough that a live worker's
message is never handed out again, short enough that a dead worker's jobs come back soon."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from workers.arq import func
from workers.arq.worker import Worker, create_worker


async def job(ctx: dict[str, Any]) -> None:
    """Does nothing."""


def _visibility(worker: Worker) -> Any:
    return worker.celery_app.conf.broker_transport_options["visibility_timeout"]


def test_the_default_is_twice_the_in_progress_timeout_of_the_longest_function() -> None:
    # given functions of 30 s and (the worker's default) 5 s
    worker = Worker([func(job, name="slow", timeout=30), job], job_timeout=5)
    # then a message may wait up to one job in the worker and run up to another
    assert worker.in_progress_timeout_s == 40
    assert _visibility(worker) == 80


def test_arqs_default_job_timeout_gives_about_ten_minutes_not_an_hour() -> None:
    assert _visibility(Worker([job])) == 2 * (300 + 10)


def test_a_settings_class_may_set_it() -> None:
    class Settings:
        functions = (job,)
        visibility_timeout = timedelta(minutes=2)

    assert _visibility(create_worker(Settings)) == 120
