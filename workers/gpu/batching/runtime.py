"""The GPU worker's runtime when several task threads share one model and a window batcher."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.db.models import Job
from service.core.settings import Settings
from service.core.states import JobStatus
from workers.gpu.batching.batcher import WindowBatcher
from workers.gpu.batching.gate import SoloGate
from workers.gpu.batching.model import BatchedModel, install_alignment_lock
from workers.gpu.runtime import GpuRuntime

__all__ = ["BatchedRuntime"]


class BatchedRuntime(GpuRuntime):
    """A ``GpuRuntime`` shared by the worker's task threads: models load once (under a lock),
    and each job gets the model as a ``BatchedModel`` whose windows the batcher decodes
    together with other jobs'. Database writes, events and leases are the base class's:
    its loop thread already serves callers from any thread."""

    def __init__(self, settings: Settings, *, slot: int = 0) -> None:
        super().__init__(settings, slot=slot)
        self._models_lock = threading.Lock()
        self.batcher = WindowBatcher(settings.gpu_batch_size, settings.gpu_batch_flush_ms / 1000)
        self.gate = SoloGate()
        install_alignment_lock()

    @contextlib.contextmanager
    def admitted(self, job_id: str) -> Iterator[None]:
        """Admit one job: a job that lost an earlier attempt runs alone (``batching.gate``);
        a duplicate message of a job a live worker holds passes straight on (to be told so)."""
        alone = self.write(_lost_an_attempt, uuid.UUID(job_id))
        with self.gate.admitted(alone=alone):
            yield

    def transcribing(self) -> contextlib.AbstractContextManager[None]:
        """The job in this thread is transcribing: partial batches wait for its windows."""
        return self.batcher.joined()

    def model(self, name: str) -> Any:
        """The named model, shared by every thread, wrapped for batched decoding."""
        with self._models_lock:
            shared = super().model(name)
        return BatchedModel(shared, self.batcher)

    def close(self) -> None:
        """Stop the batcher, then the base runtime."""
        self.batcher.close()
        super().close()


async def _lost_an_attempt(session: AsyncSession, job_id: uuid.UUID) -> bool:
    """Whether claiming ``job_id`` now would be a repeat attempt: it was claimed before and
    is queued again, or still running under a lease that ran out (its worker died)."""
    row = (
        await session.execute(
            select(
                Job.attempts, Job.status, (Job.lease_expires_at < func.now()).label("lapsed")
            ).where(Job.id == job_id)
        )
    ).first()
    if row is None or row.attempts == 0:
        return False
    return row.status == JobStatus.queued or (row.status == JobStatus.running and bool(row.lapsed))
