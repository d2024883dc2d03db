"""Sending a job's Celery message: ``send_task`` by function name, routed through kombu.

Every job is a Celery task message named after its function, sent to the ``steno`` exchange
with its queue's name as routing key (the queue is declared on publish, so a message lands
even before a worker declared the queue). The Celery task id is the arq job id; headers
carry what Celery has no field for.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from service.core.delivery import EXCHANGE, bind_queue, celery_app

# Headers of a tracked job's message (one enqueued through ``enqueue_job``).
TRACKED_HEADER = "arq_tracked"
JOB_TRY_HEADER = "arq_job_try"
ENQUEUED_AT_HEADER = "enqueued_at"  # epoch seconds, as Steno's own publisher writes it


def make_producer(broker_url: str) -> Celery:
    """A send-only Celery app (JSON, no result backend) for clients outside a worker."""
    return celery_app("arq-client", broker_url, visibility_timeout=3600)


def send_job(
    app: Celery,
    function: str,
    job_id: str,
    args: list[Any],
    kwargs: dict[str, Any],
    queue_name: str,
    *,
    enqueue_time_ms: int,
    job_try: int | None,
) -> None:
    """Publish one job's Celery message (blocking: call it off the asyncio loop).

    The queue is bound to the exchange anew on every send (``bind_queue``): a Redis that
    restarted with nothing on disk has lost the binding. A few Redis commands more.
    """
    with app.producer_or_acquire() as producer:
        queue = bind_queue(producer.channel, queue_name)
        app.send_task(
            function,
            args=args,
            kwargs=kwargs,
            task_id=job_id,
            queue=queue,
            exchange=EXCHANGE,
            routing_key=queue_name,
            headers={
                TRACKED_HEADER: True,
                JOB_TRY_HEADER: job_try,
                ENQUEUED_AT_HEADER: enqueue_time_ms / 1000,
            },
            retry=True,
            producer=producer,
        )
