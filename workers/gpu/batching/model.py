"""A Whisper model as one job's ``transcribe`` sees it when windows are batched across jobs.

``BatchedModel`` stands in for the shared model inside openai-whisper's ``transcribe``: its
``decode`` goes through the ``WindowBatcher``, and its other forward passes (language
detection, word alignment) take the batcher's forward lock, so that no two passes share
the modules' hooks at once. Everything else is the real model's.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from workers.gpu.batching.batcher import WindowBatcher

__all__ = ["BatchedModel", "soft_time_limit"]

# The monotonic time past which this job's next window is refused (the task's soft limit):
# the threads pool enforces no Celery time limit, so the job checks it between windows.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "steno_batched_deadline", default=None
)


@contextlib.contextmanager
def soft_time_limit(seconds: float | None) -> Iterator[None]:
    """Within the block, a window started more than ``seconds`` after entering raises
    ``SoftTimeLimitExceeded`` (None: no limit)."""
    token = _deadline.set(None if seconds is None else time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


class BatchedModel:
    """The shared ``model`` with ``decode`` batched and every other forward pass serialised."""

    def __init__(self, model: Any, batcher: WindowBatcher) -> None:
        self.steno_model = model
        self.steno_batcher = batcher

    def __getattr__(self, name: str) -> Any:
        return getattr(self.steno_model, name)

    def decode(self, mel: Any, options: Any) -> Any:
        """One window's ``DecodingResult``, decoded in a batch with other jobs' windows."""
        deadline = _deadline.get()
        if deadline is not None and time.monotonic() > deadline:
            from billiard.exceptions import SoftTimeLimitExceeded

            raise SoftTimeLimitExceeded("transcription took too long")
        return self.steno_batcher.decode(self.steno_model, mel, options)

    def detect_language(self, *args: Any, **kwargs: Any) -> Any:
        """The real model's language detection, alone on the device."""
        with self.steno_batcher.forward_lock:
            return self.steno_model.detect_language(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.steno_batcher.forward_lock:
            return self.steno_model(*args, **kwargs)


_patched = False
_patch_lock = threading.Lock()


def install_alignment_lock() -> None:
    """Make whisper's word alignment run on the real model, under the forward lock.

    ``add_word_timestamps`` hooks the shared decoder's cross-attention for the length of
    its pass; a batch decoded meanwhile would write into its hooks. Patched only inside
    ``whisper.transcribe`` (the name it calls), as ``workers.gpu.whisper`` does with tqdm.
    """
    global _patched
    with _patch_lock:
        if _patched:
            return
        module: Any = importlib.import_module("whisper.transcribe")
        original = module.add_word_timestamps

        def add_word_timestamps(*, model: Any, **kwargs: Any) -> Any:
            if isinstance(model, BatchedModel):
                with model.steno_batcher.forward_lock:
                    return original(model=model.steno_model, **kwargs)
            return original(model=model, **kwargs)

        module.add_word_timestamps = add_word_timestamps
        _patched = True
