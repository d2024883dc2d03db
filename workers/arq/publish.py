"""Sending a job's Celery message: ``send_task`` by function name, routed through kombu.

Every job is a Celery task message named after its function, sent to the ``steno`` exchange
with its queue's name as routing key (the queue is declared on publish, so a message lands
even before a worker declared the queue). The Celery task id is the arq job id; headers
carry what Celery has no field for.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from workers.routing import EXCHANGE, kombu_queue

# Headers of a tracked job's message (one enqueued through ``enqueue_job``).
TRACKED_HEADER = "arq_tracked"
JOB_TRY_HEADER = "arq_job_try"
ENQUEUED_AT_HEADER = "enqueued_at"  # epoch seconds, as Steno's own publisher writes it


def make_producer(broker_url: str) -> Celery:
    """A send-only Celery app (JSON, no result backend) for clients outside a worker."""
    app = Celery("arq-client", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        broker_connection_retry_on_startup=False,
    )
    return app


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

    The queue is declared (bound to the exchange) on every send, not once per process as
    kombu would: a Redis that restarted with nothing on disk has lost the binding, and a
    message sent to an unbound routing key is silently dropped. A few Redis commands more.
    """
    queue = kombu_queue(queue_name)
    with app.producer_or_acquire() as producer:
        channel = producer.channel
        queue(channel).declare()
        # kombu's virtual transports (Redis) skip a binding they remember in process memory:
        # write it to the broker again directly, as queue_bind would (the same member, so no
        # second route), without growing the in-memory routing table on every send.
        bind = getattr(channel, "_queue_bind", None)
        if bind is not None:
            meta = channel.typeof(EXCHANGE.name).prepare_bind(
                queue_name, EXCHANGE.name, queue_name, None
            )
            bind(EXCHANGE.name, *meta)
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
