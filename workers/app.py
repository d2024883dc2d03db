"""The Celery app: broker, routing and the delivery guarantees Steno relies on.

``python -m workers.arq workers.io.worker.WorkerSettings`` runs the IO pool (arq functions
registered on this app, gevent pool), ``celery -A workers.app worker -P prefork -Q gpu`` the
GPU pool; ``beat`` the timers.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import beat_init, celeryd_init, worker_ready

from service.core.delivery import celery_app
from service.core.routing import QueueName, TaskName, task_routes
from service.core.settings import Settings, SettingsError, load_settings
from workers import telemetry


def create_celery_app(settings: Settings) -> Celery:
    """A Celery app configured for at-least-once delivery to idempotent workers."""
    app = celery_app(
        "steno",
        settings.broker,
        include=["workers.gpu.tasks"],
        current=True,
        visibility_timeout=settings.visibility_timeout,
        queues=[q.value for q in QueueName],
        time_limit=settings.max_time_limit,
        task_events=settings.task_events,
    )
    # Poll the queues in the order ``-Q`` lists them, not round-robin: a GPU worker consumes
    # its lanes highest first, so a free child takes a high job before any normal one.
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "queue_order_strategy": "priority",
    }
    app.conf.update(
        task_routes=task_routes(),
        beat_schedule={
            "relay-outbox": {
                "task": TaskName.RELAY_OUTBOX.value,
                "schedule": settings.outbox_sweep_seconds,
                # A sweep not run in time is superseded by the next one.
                "options": {"expires": settings.outbox_sweep_seconds * 2},
            },
            "retention-sweep": {
                "task": TaskName.RETENTION_SWEEP.value,
                "schedule": settings.retention_sweep_seconds,
                "options": {"expires": settings.retention_sweep_seconds * 2},
            },
        },
    )
    return app


try:
    settings = load_settings()
except SettingsError as error:
    # One clear line and a non-zero exit, not a traceback from inside Celery's app loader.
    raise SystemExit(f"steno: refusing to start: {error}") from None
app = create_celery_app(settings)
# Logs (text or JSON, with each task's context) and each pool's metrics exporter.
telemetry.install(settings)

# The queues this worker process consumes (from ``-Q``); the GPU pool loads its model after
# fork only when it serves ``gpu``. Set here because task modules are imported after the
# worker's ``celeryd_init`` signal fires.
worker_queues: set[str] = set()


@celeryd_init.connect
def _remember_queues(options: dict[str, Any] | None = None, **_: Any) -> None:
    queues = (options or {}).get("queues") or []
    names = queues.split(",") if isinstance(queues, str) else list(queues)
    worker_queues.update(name.strip() for name in names)


log = logging.getLogger(__name__)


@worker_ready.connect
@beat_init.connect
def reconcile_on_start(sender: Any = None, **_: Any) -> None:
    """Startup reconciliation: run the relay sweep now, not only on beat's next tick.

    After a crash this publishes unpublished outbox rows, requeues jobs held by workers that
    no longer renew their leases, and re-sends every active job's task if the broker came
    back empty. Best effort: when the broker is down, beat's timer does it later.
    """
    try:
        app.send_task(
            TaskName.RELAY_OUTBOX.value, expires=settings.outbox_sweep_seconds * 4, retry=False
        )
    except Exception as exc:
        log.warning("startup reconciliation not sent (beat retries on its timer): %s", exc)
