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

from service.settings import Settings, SettingsError, load_settings
from workers.routing import EXCHANGE, QUEUES, QueueName, TaskName, task_routes


def create_celery_app(settings: Settings) -> Celery:
    """A Celery app configured for at-least-once delivery to idempotent workers."""
    app = Celery("steno", broker=settings.broker, include=["workers.gpu.tasks"])
    app.conf.update(
        task_queues=QUEUES,
        task_default_queue=QueueName.IO.value,
        task_default_exchange=EXCHANGE.name,
        task_default_routing_key=QueueName.IO.value,
        task_routes=task_routes(),
        task_create_missing_queues=False,
        # A message is acknowledged only after its task ran; a dead child's is requeued.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A GPU child loads Whisper in worker_process_init; Celery's default 4 s for a new
        # child to report up is shorter than that on a busy host, and it would kill every
        # replacement child (after a crash) in a loop.
        worker_proc_alive_timeout=120.0,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # PostgreSQL holds every outcome; Celery's result backend is not used.
        task_ignore_result=True,
        task_time_limit=settings.max_time_limit,
        broker_transport_options={
            # Longer than any hard time limit, so a live task is never handed out twice.
            "visibility_timeout": settings.visibility_timeout,
            # Scan for messages past the visibility timeout every few seconds (kombu's default
            # is about 100 s), so a dead worker's reserved messages come back close to it.
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 4)),
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": 5,
            "socket_timeout": 30,
        },
        broker_connection_retry_on_startup=True,
        # Deploys: on SIGTERM let running tasks finish for a while, then requeue the rest.
        worker_soft_shutdown_timeout=60.0,
        worker_enable_soft_shutdown_on_idle=True,
        worker_send_task_events=False,
        beat_schedule={
            "relay-outbox": {
                "task": TaskName.RELAY_OUTBOX.value,
                "schedule": settings.outbox_sweep_seconds,
                # A sweep not run in time is superseded by the next one.
                "options": {"expires": settings.outbox_sweep_seconds * 2},
            },
        },
        timezone="UTC",
    )
    return app


try:
    settings = load_settings()
except SettingsError as error:
    # One clear line and a non-zero exit, not a traceback from inside Celery's app loader.
    raise SystemExit(f"steno: refusing to start: {error}") from None
app = create_celery_app(settings)

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
