"""Publishing task messages to Celery by name, without importing ``workers/``."""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

from celery import Celery

from service.core.delivery import EXCHANGE, bind_queue, celery_app
from service.core.settings import Settings


@runtime_checkable
class Publisher(Protocol):
    """Sends one task message; raises when the broker can't take it."""

    def publish(
        self,
        task_name: str,
        queue: str,
        args: list[Any],
        time_limit: float | None,
        enqueued_at: float | None = None,
    ) -> None: ...


def make_producer_app(settings: Settings) -> Celery:
    """A send-only Celery app for the API: JSON, short broker timeouts, no result backend."""
    return celery_app(
        "steno-api",
        settings.broker,
        visibility_timeout=settings.visibility_timeout,
        connect_timeout=settings.publish_timeout_seconds,
        socket_timeout=settings.publish_timeout_seconds,
        task_events=settings.task_events,
    )


class CeleryPublisher:
    """Publishes through a Celery app to the ``steno`` exchange, binding the target queue.

    Binding the queue on every publish (``bind_queue``) makes the message land even when no
    worker has declared the queue yet, or Redis restarted empty and lost the binding.
    """

    def __init__(self, app: Celery, *, retries: int = 1) -> None:
        self._app = app
        self._retry_policy = {
            "max_retries": retries,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 1.0,
        }

    def publish(
        self,
        task_name: str,
        queue: str,
        args: list[Any],
        time_limit: float | None,
        enqueued_at: float | None = None,
    ) -> None:
        """Send ``task_name(*args)`` to ``queue``; time limits travel with the message.

        ``enqueued_at`` (epoch seconds, default now) rides in the ``enqueued_at`` header,
        which handlers see as ``ctx["enqueue_time"]``.
        """
        options: dict[str, Any] = {
            "headers": {"enqueued_at": time.time() if enqueued_at is None else enqueued_at}
        }
        if time_limit is not None:
            options["time_limit"] = time_limit
            # The soft limit leaves a moment to record the failure before the hard kill.
            options["soft_time_limit"] = max(time_limit - 10.0, time_limit * 0.95)
        with self._app.producer_or_acquire() as producer:
            self._app.send_task(
                task_name,
                args=args,
                queue=bind_queue(producer.channel, queue),
                exchange=EXCHANGE,
                routing_key=queue,
                retry=True,
                retry_policy=self._retry_policy,
                producer=producer,
                **options,
            )


class BrokerUnavailable(ConnectionError):
    """The broker failed moments ago; the message was not sent (the outbox keeps it)."""


class GuardedPublisher:
    """A publisher that, after a failure, refuses at once for ``cooldown`` seconds.

    While Redis is down each publish would wait for its connect timeout, holding a thread
    and a database connection; failing fast leaves those messages to the relay's sweep.
    """

    def __init__(self, inner: Publisher, *, cooldown: float = 5.0) -> None:
        self._inner = inner
        self._cooldown = cooldown
        self._closed_until = 0.0

    def publish(
        self,
        task_name: str,
        queue: str,
        args: list[Any],
        time_limit: float | None,
        enqueued_at: float | None = None,
    ) -> None:
        """Publish through the inner publisher unless it failed within the cooldown."""
        if time.monotonic() < self._closed_until:
            raise BrokerUnavailable("the broker failed moments ago; left to the relay")
        try:
            self._inner.publish(task_name, queue, args, time_limit, enqueued_at)
        except Exception:
            self._closed_until = time.monotonic() + self._cooldown
            raise
