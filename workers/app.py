"""The Celery app: broker, routing and the delivery guarantees Steno relies on.

``python -m workers.arq workers.io.worker.WorkerSettings`` runs the IO pool (arq functions
registered on this app, gevent pool), ``celery -A workers.app worker -P prefork -Q gpu`` the
GPU pool; ``beat`` the timers.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import celeryd_init

from service.settings import Settings, load_settings
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
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # PostgreSQL holds every outcome; Celery's result backend is not used.
        task_ignore_result=True,
        task_time_limit=settings.max_time_limit,
        broker_transport_options={
            # Longer than any hard time limit, so a live task is never handed out twice.
            "visibility_timeout": settings.visibility_timeout,
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


settings = load_settings()
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
