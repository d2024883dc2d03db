"""Batched Whisper inference across jobs (``STENO_GPU_BATCH_SIZE`` > 1).

The GPU worker then runs Celery's threads pool: one process, one model, two batches' worth of
task threads (``Settings.gpu_task_slots``), each running one job's ordinary flow (claim,
lease, events, fencing) and handing its windows to one ``WindowBatcher``, which decodes
windows prompted differently in one pass (``prompts``).
"""

from workers.gpu.batching.batcher import WindowBatcher
from workers.gpu.batching.model import BatchedModel, soft_time_limit
from workers.gpu.batching.runtime import BatchedRuntime

__all__ = ["BatchedModel", "BatchedRuntime", "WindowBatcher", "soft_time_limit"]
