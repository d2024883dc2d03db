"""Jobs as a client sees them: status, definition, result (arq's ``arq.jobs``), JSON only.

arq pickles job definitions and results by default; Steno is JSON-only (no pickle anywhere
on the wire). A failed job's exception is stored as ``{"type": "module.QualName", "args":
[...], "message": str(exc)}`` and re-raised by ``Job.result()`` as that same class built from
its args when the class is already imported in the client process (and is an exception);
otherwise as ``JobExecutionFailed("module.QualName: message")``. Nothing is imported on the
strength of a stored name.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import sys
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from workers.arq.constants import (
    abort_jobs_ss,
    default_queue_name,
    deferred_jobs_prefix,
    in_progress_key_prefix,
    job_key_prefix,
    queue_index_prefix,
    result_key_prefix,
)
from workers.arq.utils import ms_to_datetime, timestamp_ms

if TYPE_CHECKING:
    from redis.asyncio import Redis


class ResultNotFound(RuntimeError):
    """The job has no kept result and is not queued: there is nothing to wait for."""


class SerializationError(RuntimeError):
    """A job's arguments or result could not be written as JSON."""


class DeserializationError(SerializationError):
    """A stored job or result could not be read back."""


class JobExecutionFailed(RuntimeError):
    """A job failed for a reason of the queue's own (expired, too many tries, unknown error)."""

    def __eq__(self, other: object) -> bool:
        if isinstance(other, JobExecutionFailed):
            return self.args == other.args
        return False

    __hash__ = RuntimeError.__hash__


class JobStatus(StrEnum):
    """A job's status, arq's five values."""

    #: queued, but its time to run has not come yet
    deferred = "deferred"
    #: queued and due
    queued = "queued"
    #: running on a worker
    in_progress = "in_progress"
    #: finished, its result is kept
    complete = "complete"
    #: unknown (never enqueued, or its result expired or was not kept)
    not_found = "not_found"


@dataclass
class JobDef:
    """What was enqueued."""

    function: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    job_try: int | None
    enqueue_time: datetime
    score: int | None
    job_id: str | None

    def __post_init__(self) -> None:
        if isinstance(self.score, float):
            self.score = int(self.score)


@dataclass
class JobResult(JobDef):
    """What a finished job left: its definition plus the outcome."""

    success: bool
    result: Any
    start_time: datetime
    finish_time: datetime
    queue_name: str


def deferred_set(queue_name: str) -> str:
    """The sorted set of a queue's jobs waiting for their time, scored by it (epoch ms)."""
    return deferred_jobs_prefix + queue_name


def as_text(value: Any) -> str:
    """A Redis reply (bytes) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def queue_index(queue_name: str) -> str:
    """The sorted set of a queue's tracked jobs, scored by when each is due (epoch ms)."""
    return queue_index_prefix + queue_name


def encode_exception(exc: BaseException) -> dict[str, Any]:
    """An exception as JSON: its class's import path, its args (as JSON allows), its text."""
    cls = type(exc)
    try:
        args = json.loads(json.dumps(list(exc.args)))
    except (TypeError, ValueError):
        args = [str(exc)]
    return {"type": f"{cls.__module__}.{cls.__qualname__}", "args": args, "message": str(exc)}


def decode_exception(data: dict[str, Any]) -> BaseException:
    """The exception ``encode_exception`` stored, rebuilt as described in the module doc."""
    path = str(data.get("type", ""))
    module_name, _, qualname = path.rpartition(".")
    cls: Any = None
    if module_name == "builtins":
        cls = getattr(builtins, qualname, None)
    elif path == "asyncio.exceptions.CancelledError":
        cls = asyncio.CancelledError
    elif module_name in sys.modules:
        cls = sys.modules[module_name]
        for part in qualname.split("."):
            cls = getattr(cls, part, None)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        try:
            return cls(*data.get("args", []))
        except Exception:
            pass
    return JobExecutionFailed(f"{path}: {data.get('message', '')}")


def _dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def serialize_job(
    function_name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    job_try: int | None,
    enqueue_time_ms: int,
    queue_name: str,
    expires_ms: int,
) -> bytes:
    """A job definition as stored under ``arq:job:<id>`` (arq's field names, plus queue/expiry)."""
    data = {
        "t": job_try,
        "f": function_name,
        "a": list(args),
        "k": kwargs,
        "et": enqueue_time_ms,
        "q": queue_name,
        "x": expires_ms,
    }
    try:
        return _dumps(data)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f'unable to serialize job "{function_name}" as JSON') from exc


def deserialize_job_raw(raw: bytes | str) -> dict[str, Any]:
    """The stored job definition as a dict (keys as written by ``serialize_job``)."""
    try:
        data: dict[str, Any] = json.loads(raw)
    except ValueError as exc:
        raise DeserializationError("unable to deserialize job") from exc
    return data


def deserialize_job(raw: bytes | str) -> JobDef:
    """The stored job definition as a ``JobDef``."""
    d = deserialize_job_raw(raw)
    return JobDef(
        function=d["f"],
        args=tuple(d["a"]),
        kwargs=d["k"],
        job_try=d["t"],
        enqueue_time=ms_to_datetime(d["et"]),
        score=None,
        job_id=None,
    )


def serialize_result(
    function: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    job_try: int,
    enqueue_time_ms: int,
    success: bool,
    result: Any,
    start_ms: int,
    finished_ms: int,
    queue_name: str,
    job_id: str,
) -> bytes:
    """A finished job's record; a value JSON can't hold is replaced by a failure saying so."""
    data = {
        "t": job_try,
        "f": function,
        "a": list(args),
        "k": kwargs,
        "et": enqueue_time_ms,
        "s": success,
        "r": result if success else encode_exception(result),
        "st": start_ms,
        "ft": finished_ms,
        "q": queue_name,
        "id": job_id,
    }
    try:
        return _dumps(data)
    except (TypeError, ValueError):
        data.update(
            s=False,
            r=encode_exception(SerializationError("unable to serialize result as JSON")),
        )
        return _dumps(data)


def deserialize_result(raw: bytes | str) -> JobResult:
    """A stored result record as a ``JobResult`` (a failure's ``result`` is the exception)."""
    try:
        d = json.loads(raw)
        return JobResult(
            job_try=d["t"],
            function=d["f"],
            args=tuple(d["a"]),
            kwargs=d["k"],
            enqueue_time=ms_to_datetime(d["et"]),
            score=None,
            success=d["s"],
            result=d["r"] if d["s"] else decode_exception(d["r"]),
            start_time=ms_to_datetime(d["st"]),
            finish_time=ms_to_datetime(d["ft"]),
            queue_name=d.get("q", "<unknown>"),
            job_id=d.get("id", "<unknown>"),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise DeserializationError("unable to deserialize job result") from exc


class Job:
    """A reference to a job by id: ask its status, wait for its result, abort it."""

    __slots__ = ("_queue_name", "_redis", "job_id")

    def __init__(
        self, job_id: str, redis: Redis, _queue_name: str = default_queue_name, **_: Any
    ) -> None:
        self.job_id = job_id
        self._redis = redis
        self._queue_name = _queue_name

    async def result(
        self, timeout: float | None = None, *, poll_delay: float = 0.5, **_: Any
    ) -> Any:
        """Wait for the job's result and return it, or raise the exception the job raised.

        Raises ``ResultNotFound`` when the job is neither queued nor finished with a kept
        result, and ``asyncio.TimeoutError`` after ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            async with self._redis.pipeline(transaction=True) as tr:
                tr.get(result_key_prefix + self.job_id)
                tr.zscore(queue_index(self._queue_name), self.job_id)
                tr.exists(in_progress_key_prefix + self.job_id)
                raw, score, running = await tr.execute()
            if raw:
                info = deserialize_result(raw)
                if info.success:
                    return info.result
                raise info.result
            if score is None and not running:
                raise ResultNotFound(
                    "Not waiting for job result because the job is not in queue. "
                    "Is the worker function configured to keep result?"
                )
            if timeout is not None and loop.time() - started > timeout:
                raise TimeoutError()
            await asyncio.sleep(poll_delay)

    async def info(self) -> JobDef | None:
        """Everything known about the job, its result included when there is one."""
        info: JobDef | None = await self.result_info()
        if not info:
            raw = await self._redis.get(job_key_prefix + self.job_id)
            if raw:
                info = deserialize_job(raw)
                info.job_id = self.job_id
        if info:
            score = await self._redis.zscore(queue_index(self._queue_name), self.job_id)
            info.score = None if score is None else int(score)
        return info

    async def result_info(self) -> JobResult | None:
        """The job's result record if kept; never raises the job's exception."""
        raw = await self._redis.get(result_key_prefix + self.job_id)
        return deserialize_result(raw) if raw else None

    async def status(self) -> JobStatus:
        """Where the job is now (``JobStatus``)."""
        async with self._redis.pipeline(transaction=True) as tr:
            tr.exists(result_key_prefix + self.job_id)
            tr.exists(in_progress_key_prefix + self.job_id)
            tr.zscore(queue_index(self._queue_name), self.job_id)
            is_complete, is_in_progress, score = await tr.execute()
        if is_complete:
            return JobStatus.complete
        if is_in_progress:
            return JobStatus.in_progress
        if score:
            return JobStatus.deferred if score > timestamp_ms() else JobStatus.queued
        return JobStatus.not_found

    async def abort(self, *, timeout: float | None = None, poll_delay: float = 0.5) -> bool:
        """Ask the worker to abort the job (needs ``allow_abort_jobs``); True if it was.

        A deferred job is made due at once, so the worker finds the abort when it picks the
        job up; a running coroutine is cancelled. Waits for the outcome up to ``timeout``.
        """
        now = timestamp_ms()
        info = await self.info()
        if info and info.score and info.score > now:
            async with self._redis.pipeline(transaction=True) as tr:
                tr.zadd(queue_index(self._queue_name), {self.job_id: now}, xx=True)
                tr.zadd(deferred_set(self._queue_name), {self.job_id: now}, xx=True)
                await tr.execute()
        await self._redis.zadd(abort_jobs_ss, {self.job_id: now})
        try:
            await self.result(timeout=timeout, poll_delay=poll_delay)
        except asyncio.CancelledError:
            return True
        except ResultNotFound:
            return False
        return False

    def __repr__(self) -> str:
        return f"<arq job {self.job_id}>"
