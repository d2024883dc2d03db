"""Who may run beside whom in a batched GPU worker: a job on a second or later attempt runs alone.

In a batched worker every job of the process shares one fate: a crash (an out-of-memory
kill, a poison file that takes the process down) loses the whole batch, and each job in it
spends an attempt. So a job that already lost an attempt is admitted alone: it waits until
the jobs running now are done, and no other job starts until it is. If it is the poison, it
takes nobody with it on its next deliveries and fails by itself at ``STENO_MAX_ATTEMPTS``;
if it was a bystander of someone else's crash, it completes on its own. First attempts run
together (a reader-writer gate: they share it, a repeat attempt takes it exclusively, and a
waiting repeat attempt goes before first attempts that arrive after it).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

__all__ = ["SoloGate"]


class SoloGate:
    """Shared admission for first attempts, exclusive admission for repeat attempts."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._sharing = 0
        self._solo = False
        self._solo_waiting = 0

    @contextlib.contextmanager
    def admitted(self, *, alone: bool) -> Iterator[None]:
        """Hold the gate for one job: alone (waits for the others to finish) or shared."""
        with self._cond:
            if alone:
                self._solo_waiting += 1
                try:
                    self._cond.wait_for(lambda: not self._solo and self._sharing == 0)
                finally:
                    self._solo_waiting -= 1
                self._solo = True
            else:
                self._cond.wait_for(lambda: not self._solo and self._solo_waiting == 0)
                self._sharing += 1
        try:
            yield
        finally:
            with self._cond:
                if alone:
                    self._solo = False
                else:
                    self._sharing -= 1
                self._cond.notify_all()
