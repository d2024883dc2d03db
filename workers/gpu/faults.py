"""Fault injection for the chaos suite: the hooks a GPU child runs at named points of a job.

Every hook is off by default and armed only by a ``STENO_*`` setting that the chaos suite
(``tests/chaos``) sets; production code reaches them through ``checkpoint`` alone, so what a
test can make a worker do is all in this module. An armed hook still leaves the job on its
production path: it only kills the child or waits where a real fault or slow work would.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Literal

from service.core import transitions
from service.core.settings import Settings

__all__ = ["Point", "checkpoint"]

log = logging.getLogger(__name__)

# Where a job calls ``checkpoint``: ``claimed`` right after the claim, inside the kept lease and
# before the model is loaded; ``before_whisper`` once progress 0 is reported, just before
# Whisper runs; ``before_diarizing`` once the ``diarizing`` stage is reported at 0 %.
Point = Literal["claimed", "before_whisper", "before_diarizing"]


def _claim_untouched() -> None:
    pass


def checkpoint(
    settings: Settings,
    point: Point,
    claim: transitions.Claim,
    *,
    check_claim: Callable[[], None] = _claim_untouched,
) -> None:
    """Run the fault hooks that ``settings`` arms at ``point``; with none armed, return at once.

    ``check_claim`` confirms the job is still ours, raising when it is not (as between Whisper's
    windows); hooks that wait call it every second so cancellation behaves as in real work.
    """
    if point == "claimed":
        _crash_if_poisoned(settings, claim)
    elif point == "before_whisper":
        _slow_down(settings.transcribe_delay_seconds, check_claim)
    elif point == "before_diarizing":
        _slow_down(settings.diarize_delay_seconds, check_claim)


def _crash_if_poisoned(settings: Settings, claim: transitions.Claim) -> None:
    """``STENO_FAULT_CRASH_MARKER`` (off by default): a poison job.

    The child SIGKILLs itself like an out-of-memory kill would, after the claim, so the
    redelivery cap is exercised exactly as in production.
    """
    marker = settings.fault_crash_marker
    if marker and marker in (claim.filename or ""):
        log.error("job %s: fault injection: poison job, killing this child", claim.job_id)
        os.kill(os.getpid(), signal.SIGKILL)


def _slow_down(seconds: float, check_claim: Callable[[], None]) -> None:
    """``STENO_TRANSCRIBE_DELAY_SECONDS`` / ``STENO_DIARIZE_DELAY_SECONDS`` (0 by default):
    wait before Whisper, or before the diarization models run.

    Makes jobs last long enough for the chaos suite to kill workers mid-job. The wait checks
    the claim every second like Whisper's windows do, so cancellation behaves the same.
    """
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        check_claim()
