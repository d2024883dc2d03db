"""Celery tasks of the GPU queue: thin; the work is in ``workers.gpu.transcription``.

The model is loaded in each prefork child after fork (``worker_process_init``), into that
child's ``workers.gpu.runtime.GpuRuntime``, never in the parent, so CUDA is initialised only
in the children. torch is imported only there, so the IO worker (which registers these tasks
too) never loads it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

import billiard.process
from celery import Task
from celery.signals import (
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from service.core import fairness
from service.core.broker import CeleryPublisher
from service.core.db.engine import database_unreachable
from service.core.routing import QueueName, TaskName
from workers.app import app, settings, worker_queues
from workers.retry import retry_later

if TYPE_CHECKING:
    from workers.gpu.runtime import GpuRuntime

log = logging.getLogger(__name__)

_runtime: GpuRuntime | None = None
# With batching on (STENO_GPU_BATCH_SIZE > 1) the task threads of one process share a runtime.
_runtime_lock = threading.Lock()


def runtime() -> GpuRuntime:
    """This child's runtime (models and database), made on first use."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            if settings.gpu_batch_size > 1:
                from workers.gpu.batching import BatchedRuntime

                _runtime = BatchedRuntime(settings)
                return _runtime
            from workers.gpu.runtime import GpuRuntime

            # billiard numbers prefork children 0..c-1; each pins its own GPU.
            slot = int(getattr(billiard.process.current_process(), "index", 0) or 0)
            _runtime = GpuRuntime(settings, slot=slot)
        return _runtime


@worker_process_init.connect
def _load_model_after_fork(**_: Any) -> None:
    if QueueName.GPU.value not in worker_queues:
        return
    _load_model()


@worker_ready.connect
def _load_model_in_threads_pool(**_: Any) -> None:
    # The threads pool forks no children: its one process loads the shared model.
    if QueueName.GPU.value in worker_queues and settings.gpu_batch_size > 1:
        _load_model()


def _load_model() -> None:
    log.info("GPU child %d: loading Whisper %r", os.getpid(), settings.whisper_model)
    try:
        runtime().model(settings.whisper_model)
    except Exception:
        # Each job then tries again after its claim, and fails with this reason if it
        # persists, rather than every message being swallowed while jobs wait.
        log.exception(
            "GPU child %d: could not load Whisper %r", os.getpid(), settings.whisper_model
        )


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close_runtime(**_: Any) -> None:
    if _runtime is not None:
        _runtime.close()


@app.task(name=TaskName.TRANSCRIBE.value, bind=True)
def transcribe(self: Task, job_id: str) -> str:
    """Transcribe one job; duplicates and late messages are no-ops."""
    from workers.gpu.transcription import JobHeld, WorkerUnfit, run_transcription

    try:
        try:
            child = runtime()
        except Exception as exc:
            raise WorkerUnfit(f"GPU child could not start: {exc}") from exc
        with child.admitted(job_id), _soft_time_limit(self):
            return run_transcription(
                child,
                job_id,
                worker=str(self.request.hostname),
                on_claimed=lambda: _release_held(child),
            )
    except WorkerUnfit as unfit:
        # Not the job's fault: hand the message back for this or another worker to retry.
        log.error("gpu.transcribe %s: %s; retrying", job_id, unfit)
        retry_later(self, unfit)
        raise
    except JobHeld as held:
        # If the holder died, its lease runs out and this retry claims the job again.
        raise self.retry(countdown=held.seconds + 1.0, max_retries=None, exc=held) from held
    except Exception as exc:
        # The job's state lives in PostgreSQL: when it can't be reached, try again later
        # rather than dropping the message (the claim fences any overlap).
        if database_unreachable(exc):
            log.warning("gpu.transcribe %s: database unreachable, retrying: %s", job_id, exc)
            retry_later(self, exc)
        raise


def _release_held(child: GpuRuntime) -> None:
    """Send the owners' next held jobs now, not at the relay's next sweep: the job just
    claimed left its lane's queue (``service.core.fairness`` counts queued jobs), so a
    batched worker's free slots fill at once. Best effort: the sweep releases them otherwise."""
    if settings.fair_share_per_owner <= 0:
        return
    try:
        child.run(fairness.release_and_publish(child.sessions, CeleryPublisher(app), settings))
    except Exception as exc:
        log.warning("held jobs not released now (the relay's sweep will): %s", exc)


def _soft_time_limit(task: Task) -> contextlib.AbstractContextManager[None]:
    """The threads pool enforces no time limit: batched jobs check their soft limit between
    windows (a stuck forward pass is not interrupted; its lease keeps being renewed)."""
    if settings.gpu_batch_size <= 1:
        return contextlib.nullcontext()
    from workers.gpu.batching import soft_time_limit

    limits = task.request.timelimit or (None, None)
    soft = limits[1] or limits[0]
    return soft_time_limit(float(soft) if soft else None)
