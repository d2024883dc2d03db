"""Logs and metrics of every Celery process (both worker pools and beat), on Celery's signals.

A worker's main process learns its pool from ``-Q`` (``celeryd_init``, before the pool
forks): it names itself on log lines, makes itself and its future children write their
series into the pool's family folder, and once the pool runs (``worker_ready``) serves them
on the pool's port (``STENO_IO_METRICS_PORT`` / ``STENO_GPU_METRICS_PORT``; 0: no exporter,
nothing recorded in files). Beat records no series (it makes no transitions); it only logs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery.signals import beat_init, celeryd_init, worker_ready

from service.core import exporter, logs
from service.core.routing import QueueName
from service.core.settings import Settings

__all__ = ["install"]

_settings: Settings | None = None
_family: tuple[Path, int] | None = None


def install(settings: Settings) -> None:
    """Connect the hooks (once, from the Celery app's module)."""
    global _settings
    if _settings is not None:
        return
    _settings = settings
    logs.install_celery_logging(settings)
    celeryd_init.connect(_on_worker_init, weak=False)
    worker_ready.connect(_on_worker_ready, weak=False)
    beat_init.connect(_on_beat_init, weak=False)


def pool_of(queues: Any) -> tuple[str, str] | None:
    """(family, queue) of a worker consuming ``queues`` (from ``-Q``); None for another app's."""
    names = queues.split(",") if isinstance(queues, str) else list(queues or ())
    served = {name.strip() for name in names}
    for queue, family in ((QueueName.GPU, "worker-gpu"), (QueueName.IO, "worker-io")):
        if queue.value in served:
            return family, queue.value
    return None


def _on_worker_init(options: dict[str, Any] | None = None, **_: Any) -> None:
    global _family
    pool = pool_of((options or {}).get("queues"))
    if _settings is None or pool is None:
        return
    family, queue = pool
    logs.set_process(family)
    port = _settings.gpu_metrics_port if queue == QueueName.GPU else _settings.io_metrics_port
    if port > 0:
        _family = (exporter.record_family(_settings, family, port), port)


def _on_worker_ready(**_: Any) -> None:
    # After the pool started: prefork children forked later inherit the listening socket
    # but never serve it.
    if _settings is not None and _family is not None:
        exporter.serve_family(_settings, *_family)


def _on_beat_init(**_: Any) -> None:
    logs.set_process("beat")
