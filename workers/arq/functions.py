"""The types a ``WorkerSettings`` names: ``func``/``Function``, ``Retry``, the hook types.

arq keeps these in ``arq.worker`` and ``arq.typing``; ``workers.arq.worker`` re-exports them,
as arq programs import them from there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from workers.arq.utils import SecondsTimedelta, to_ms, to_seconds

WorkerCoroutine = Callable[..., Coroutine[Any, Any, Any]]
StartupShutdown = Callable[[dict[Any, Any]], Coroutine[Any, Any, Any]]
# Steno extension: given a job's exception and try number, seconds to wait before running it
# again, or None to fail it.
RetryPolicy = Callable[[BaseException, int], float | None]


@dataclass
class Function:
    """A registered job function and its own settings (``None``: the worker's)."""

    name: str
    coroutine: WorkerCoroutine
    timeout_s: float | None
    keep_result_s: float | None
    keep_result_forever: bool | None
    max_tries: int | None


def func(
    coroutine: Function | WorkerCoroutine,
    *,
    name: str | None = None,
    keep_result: SecondsTimedelta | None = None,
    timeout: SecondsTimedelta | None = None,
    keep_result_forever: bool | None = None,
    max_tries: int | None = None,
) -> Function:
    """Wrap a job coroutine with its own name, result TTL, timeout and try limit (arq's API)."""
    if isinstance(coroutine, Function):
        return coroutine
    if not asyncio.iscoroutinefunction(coroutine):
        raise RuntimeError(f"{coroutine} is not a coroutine function")
    return Function(
        name or coroutine.__qualname__,
        coroutine,
        to_seconds(timeout),
        to_seconds(keep_result),
        keep_result_forever,
        max_tries,
    )


class Retry(RuntimeError):
    """Raise in a job to run it again after ``defer`` (seconds or a timedelta)."""

    def __init__(self, defer: SecondsTimedelta | None = None) -> None:
        super().__init__()
        self.defer_score: int | None = to_ms(defer)

    @property
    def defer(self) -> float:
        """The delay in seconds."""
        return (self.defer_score or 0) / 1000

    def __repr__(self) -> str:
        return f"<Retry defer {self.defer:0.2f}s>"

    def __str__(self) -> str:
        return repr(self)


class RetryJob(RuntimeError):
    """Raise in a job to run it again at once (as arq's)."""


# A job that raises one of these with ``retry_jobs`` off keeps it as its result, stored under
# its class's import path: keep the path such results have always carried.
Retry.__module__ = RetryJob.__module__ = "workers.arq.worker"
