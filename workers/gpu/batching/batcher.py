"""Continuous batching of Whisper's 30 s windows across jobs, at window granularity.

Each job runs openai-whisper's own ``transcribe`` in its task thread (seek, timestamps,
temperature fallback, prompts: all per job); only the step that decodes one window is handed
to the ``WindowBatcher``. Its thread stacks the pending windows that share a model and decoding
options (each keeps its own prompt: ``prompts``) into one forward pass and hands each job its
own result, so a long job takes one slot per step and never holds up the short ones beside it.

A job's thread transcribes inside ``joined()``: the batcher then knows the job will queue
another window soon (its first one while it loads its audio, its next one while it handles
the last one's segments or aligns its words), and holds a partial batch for it, up to one
batch's decode time. Without that, batches came out partial in turns: the windows that were
ready went while the others were still on their way, and those made up a second, small batch.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from workers.gpu.batching.prompts import batch_key, decode_batch, initial_tokens
from workers.gpu.padding import encoded_frames

__all__ = ["WindowBatcher"]

log = logging.getLogger(__name__)

# How long the first batch may wait for joined jobs' windows, before any batch has been timed.
FIRST_HOLD_SECONDS = 1.0


@dataclass(eq=False)
class _Window:
    model: Any
    mel: torch.Tensor
    options: Any
    initial: tuple[int, ...]
    key: tuple[int, str, int, int]
    arrived: float
    joined: bool
    result: Future[Any] = field(default_factory=Future)


class WindowBatcher:
    """Decodes the windows jobs submit, several per forward pass.

    A window waits at most ``flush_seconds`` for others to join it (a lone job is barely
    delayed); windows that queued while a batch was decoding go out together at once. While
    a job transcribing in ``joined()`` has no window queued, a partial batch waits for it
    instead, up to as long as the last batch took to decode (``first_hold_seconds`` before
    the first): waiting longer would cost more than decoding its window in a batch of its
    own. Only windows of one model, with ``DecodingOptions`` equal but for their prompts,
    prompts of one length (``workers.gpu.batching.prompts``) and one encoded length (a
    window's padding is trimmed to its own length: ``workers.gpu.padding``) share a batch,
    and a batch holds at most ``max_batch`` windows.
    Every forward pass of the process runs under ``forward_lock``: whisper installs its
    kv-cache and alignment hooks on the shared modules for the length of a call.
    """

    def __init__(
        self,
        max_batch: int,
        flush_seconds: float,
        *,
        first_hold_seconds: float = FIRST_HOLD_SECONDS,
    ) -> None:
        self.max_batch = max(1, max_batch)
        self.flush_seconds = max(0.0, flush_seconds)
        self.forward_lock = threading.RLock()
        self.batch_sizes: Counter[int] = Counter()
        self._pending: list[_Window] = []
        self._wake = threading.Condition()
        self._closed = False
        # Threads inside joined(), and how many of their windows are queued or decoding.
        self._joined = 0
        self._joined_windows = 0
        self._hold_seconds = first_hold_seconds
        self._in_joined = threading.local()
        self._thread = threading.Thread(target=self._run, name="steno-gpu-batcher", daemon=True)
        self._thread.start()

    def decode(self, model: Any, mel: torch.Tensor, options: Any) -> Any:
        """Decode one window (``mel`` of shape [n_mels, 3000]) with ``options``; blocks until
        its batch is done and returns its ``DecodingResult`` (or raises the batch's error)."""
        if mel.ndim != 2:
            # A caller batching on its own: not ours to split.
            with self.forward_lock, torch.inference_mode():
                return model.decode(mel, options)
        # In the job's thread: the batcher's own thread is the one every job waits on.
        initial = initial_tokens(model, options)
        key = (id(model), *batch_key(options, initial), encoded_frames(model, mel))
        joined = getattr(self._in_joined, "value", False)
        window = _Window(model, mel, options, initial, key, time.monotonic(), joined)
        with self._wake:
            if self._closed:
                raise RuntimeError("the window batcher is closed")
            self._pending.append(window)
            self._joined_windows += joined
            self._wake.notify()
        return window.result.result()

    @contextlib.contextmanager
    def joined(self) -> Iterator[None]:
        """Within the block, this thread transcribes one job: while it has no window queued,
        partial batches wait for its next one (see the class)."""
        if getattr(self._in_joined, "value", False):
            yield
            return
        with self._wake:
            self._joined += 1
        self._in_joined.value = True
        try:
            yield
        finally:
            self._in_joined.value = False
            with self._wake:
                self._joined -= 1
                self._wake.notify()

    def close(self) -> None:
        """Stop the batcher thread once the windows already queued are decoded."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(30.0)

    def _next_batch(self) -> list[_Window] | None:
        with self._wake:
            while True:
                if not self._pending:
                    if self._closed:
                        return None
                    self._wake.wait()
                    continue
                oldest = self._pending[0]
                group = [w for w in self._pending if w.key == oldest.key][: self.max_batch]
                expected = self._joined - self._joined_windows
                hold = max(self.flush_seconds, self._hold_seconds if expected else 0.0)
                wait = oldest.arrived + hold - time.monotonic()
                if len(group) >= self.max_batch or wait <= 0 or self._closed:
                    taken = {id(w) for w in group}
                    self._pending = [w for w in self._pending if id(w) not in taken]
                    return group
                self._wake.wait(wait)

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            first = batch[0]
            began = time.monotonic()
            try:
                with self.forward_lock, torch.inference_mode():
                    mels = torch.stack([w.mel for w in batch])
                    rows = [w.initial for w in batch]
                    results = decode_batch(first.model, mels, first.options, rows)
            except BaseException as exc:
                self._returned(batch, None)
                for window in batch:
                    window.result.set_exception(exc)
                continue
            self._returned(batch, time.monotonic() - began)
            self.batch_sizes[len(batch)] += 1
            log.info("decoded a batch of %d windows", len(batch))
            for window, result in zip(batch, results, strict=True):
                window.result.set_result(result)

    def _returned(self, batch: list[_Window], seconds: float | None) -> None:
        # Before the results are handed back: from now on their jobs are expected again.
        with self._wake:
            self._joined_windows -= sum(w.joined for w in batch)
            if seconds is not None:
                self._hold_seconds = seconds
