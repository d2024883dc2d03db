"""Where every task goes: one kombu Exchange, the queues, stable task names and their routes.

Declared once: the API and the outbox address tasks through ``TaskRef`` values built from
these names, the workers register and consume the same names, and nobody imports ``workers/``
to send a task.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service.core.delivery import EXCHANGE, kombu_queue

if TYPE_CHECKING:
    from service.core.settings import Settings


class QueueName(enum.StrEnum):
    """The queues: ``io`` for the IO pool, three priority lanes for the GPU pool."""

    IO = "io"
    GPU_HIGH = "gpu.high"
    GPU = "gpu"
    GPU_LOW = "gpu.low"


class Priority(enum.StrEnum):
    """A job's priority on the GPU pool (``normal`` unless the submit says otherwise)."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


# Each priority's lane. GPU workers consume the lanes in this order and the Redis transport
# polls them in that order (``queue_order_strategy="priority"``), so a free GPU child takes
# a high job before any normal one, and a normal one before any low one.
GPU_LANES: dict[Priority, QueueName] = {
    Priority.HIGH: QueueName.GPU_HIGH,
    Priority.NORMAL: QueueName.GPU,
    Priority.LOW: QueueName.GPU_LOW,
}
GPU_QUEUES: tuple[str, ...] = tuple(lane.value for lane in GPU_LANES.values())


class TaskName(enum.StrEnum):
    """Every task's stable name: ``<queue>.<action>``."""

    FETCH_AUDIO = "io.fetch_audio"
    RELAY_OUTBOX = "io.relay_outbox"
    RETENTION_SWEEP = "io.retention_sweep"
    DELIVER_WEBHOOK = "io.deliver_webhook"
    TRANSCRIBE = "gpu.transcribe"


ROUTES: dict[TaskName, QueueName] = {
    TaskName.FETCH_AUDIO: QueueName.IO,
    TaskName.RELAY_OUTBOX: QueueName.IO,
    TaskName.RETENTION_SWEEP: QueueName.IO,
    TaskName.DELIVER_WEBHOOK: QueueName.IO,
    TaskName.TRANSCRIBE: QueueName.GPU,
}


@dataclass(frozen=True, slots=True)
class TaskRef:
    """A Celery task addressed by name, routed to one queue."""

    name: str
    queue: str


def task_ref(name: TaskName) -> TaskRef:
    """The task ``name`` with the queue its route names."""
    return TaskRef(name.value, ROUTES[name].value)


TRANSCRIBE = task_ref(TaskName.TRANSCRIBE)
FETCH_AUDIO = task_ref(TaskName.FETCH_AUDIO)
DELIVER_WEBHOOK = task_ref(TaskName.DELIVER_WEBHOOK)


QUEUES = tuple(kombu_queue(q.value) for q in QueueName)


def task_routes() -> dict[str, dict[str, Any]]:
    """Celery's ``task_routes``: each task to its queue through the one exchange."""
    return {
        name.value: {"queue": queue.value, "exchange": EXCHANGE.name, "routing_key": queue.value}
        for name, queue in ROUTES.items()
    }


def next_task(
    settings: Settings,
    *,
    has_audio: bool,
    audio_seconds: float | None,
    priority: str = Priority.NORMAL,
) -> tuple[TaskRef, float]:
    """The task that moves an active job on, and its hard time limit.

    A job with stored audio is transcribed in its priority's GPU lane (the limit scales
    with its duration); one without is fetched first (the IO queue has one lane).
    """
    if has_audio:
        lane = GPU_LANES[Priority(priority)]
        return TaskRef(TRANSCRIBE.name, lane.value), settings.transcribe_time_limit(audio_seconds)
    return FETCH_AUDIO, settings.fetch_time_limit
