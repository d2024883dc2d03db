"""kombu routing: one Exchange, the queues, every task's stable name and explicit route.

The API addresses tasks by these names (``service/jobs/dispatch.py``); a unit test checks
that both sides agree.
"""

from __future__ import annotations

import enum
from typing import Any

from kombu.entity import Exchange, Queue

EXCHANGE = Exchange("steno", type="direct", durable=True)


class QueueName(enum.StrEnum):
    """The queues, one per worker pool; room for more (e.g. a priority lane)."""

    IO = "io"
    GPU = "gpu"


class TaskName(enum.StrEnum):
    """Every task's stable name: ``<queue>.<action>``."""

    FETCH_AUDIO = "io.fetch_audio"
    RELAY_OUTBOX = "io.relay_outbox"
    TRANSCRIBE = "gpu.transcribe"


def kombu_queue(name: str) -> Queue:
    """A durable queue bound to the one exchange under its own name (Steno's or an arq app's)."""
    return Queue(name, EXCHANGE, routing_key=name, durable=True)


QUEUES = tuple(kombu_queue(q.value) for q in QueueName)

ROUTES: dict[TaskName, QueueName] = {
    TaskName.FETCH_AUDIO: QueueName.IO,
    TaskName.RELAY_OUTBOX: QueueName.IO,
    TaskName.TRANSCRIBE: QueueName.GPU,
}


def task_routes() -> dict[str, dict[str, Any]]:
    """Celery's ``task_routes``: each task to its queue through the one exchange."""
    return {
        name.value: {"queue": queue.value, "exchange": EXCHANGE.name, "routing_key": queue.value}
        for name, queue in ROUTES.items()
    }
