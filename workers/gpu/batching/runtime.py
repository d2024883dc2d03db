"""The GPU worker's runtime when several task threads share one model and a window batcher."""

from __future__ import annotations

import threading
from typing import Any

from service.core.settings import Settings
from workers.gpu.batching.batcher import WindowBatcher
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
        install_alignment_lock()

    def model(self, name: str) -> Any:
        """The named model, shared by every thread, wrapped for batched decoding."""
        with self._models_lock:
            shared = super().model(name)
        return BatchedModel(shared, self.batcher)

    def close(self) -> None:
        """Stop the batcher, then the base runtime."""
        self.batcher.close()
        super().close()
