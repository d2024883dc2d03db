"""Running one job: claim it, call its function with its timeout, record its result or retry.

A Celery task's greenlet calls ``execute``, which runs ``run_job`` on the worker's asyncio
loop (arq's ``Worker.run_job``); ``JobRecord`` writes the outcome to arq's Redis keys (arq's
``finish_job`` / ``finish_failed_job``), or parks the job to run again.

Retry policy: ``Retry(defer=)`` runs the job again after ``defer`` with ``job_try`` + 1, until
``max_tries``, then the job fails with ``JobExecutionFailed('max N retries exceeded')``. Any
other exception fails the job and is kept as its result, unless ``retry_jobs`` is on and the
settings' ``retry_policy(exc, job_try)`` (a Steno extension; none by default) returns a delay.
A job cancelled by a worker shutdown is sent again (``retry_jobs``), as arq re-runs it.
Retries and deferred jobs wait in Redis (``arq:deferred:<queue>``), never in a worker's
memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery import Task
from redis.exceptions import NoScriptError

from service.core.logs import bind
from workers.arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    keep_cronjob_progress,
    result_key_prefix,
    retry_counter_ttl_s,
    retry_key_prefix,
)
from workers.arq.cron import CronJob
from workers.arq.functions import Retry, RetryJob
from workers.arq.jobs import (
    JobExecutionFailed,
    deferred_set,
    deserialize_job_raw,
    queue_index,
    serialize_job,
    serialize_result,
)
from workers.arq.publish import ENQUEUED_AT_HEADER, JOB_TRY_HEADER, TRACKED_HEADER
from workers.arq.utils import ms_to_datetime, timestamp_ms, to_ms

if TYPE_CHECKING:
    from workers.arq.worker import Worker

# arq's logger, for the whole worker: logging configurations written for arq name it.
log = logging.getLogger("arq.worker")


@dataclass
class Outcome:
    """How a job that ran (or was refused) ended: its result, or the exception it failed with."""

    success: bool
    result: Any


_NOT_RUN = object()

# Claims a job and reads what ``run_job`` needs in one round trip, atomically: the
# in-progress key (SET NX), then, only if it was taken, the definition, the score in the
# queue's index, the try counter (incremented) and the abort mark. A Redis nil is a
# Lua ``false``, so the reply is nil (not claimed) or four values, ``false`` for a missing one.
CLAIM_JOB = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[2]) then return false end
local job_try = redis.call('INCR', KEYS[4])
redis.call('EXPIRE', KEYS[4], ARGV[3])
return {redis.call('GET', KEYS[2]), redis.call('ZSCORE', KEYS[3], ARGV[1]), job_try,
        redis.call('ZSCORE', KEYS[5], ARGV[1])}
"""
CLAIM_JOB_SHA = hashlib.sha1(CLAIM_JOB.encode()).hexdigest()
# KEYS: in-progress, result, retry, job, abort set, deferred set, queue index; ARGV: the job
# id, the in-progress key's new TTL in ms ('' deletes it), the result ('' keeps none) and its
# TTL in ms ('' keeps it forever). arq's finish_job transaction in one command and one reply.
FINISH_JOB = """
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if ARGV[3] ~= '' then
  if ARGV[4] == '' then redis.call('SET', KEYS[2], ARGV[3])
  else redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4]) end
end
redis.call('DEL', KEYS[3], KEYS[4])
for i = 5, 7 do redis.call('ZREM', KEYS[i], ARGV[1]) end
return 1
"""
FINISH_JOB_SHA = hashlib.sha1(FINISH_JOB.encode()).hexdigest()


def execute(
    worker: Worker, task: Task, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run one job from its Celery task's greenlet; a failure is raised to Celery too."""
    worker.start()
    request = task.request
    outcome = worker.loop.run(
        run_job(
            worker,
            name,
            str(request.id),
            args,
            kwargs,
            tracked=bool(getattr(request, TRACKED_HEADER, None)),
            header_try=getattr(request, JOB_TRY_HEADER, None),
            enqueued_at=getattr(request, ENQUEUED_AT_HEADER, None),
        )
    )
    if outcome is not None and not outcome.success and isinstance(outcome.result, Exception):
        raise outcome.result
    return outcome.result if outcome is not None and outcome.success else None


async def run_job(
    worker: Worker,
    name: str,
    job_id: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    tracked: bool,
    header_try: Any = None,
    enqueued_at: Any = None,
) -> Outcome | None:
    """Claim the job, run it with its timeout, and record the outcome (arq's ``run_job``).

    Returns ``None`` when the message is a duplicate of a job that runs or ran elsewhere.
    """
    pool = worker.pool
    function = worker.functions[name]
    is_cron = isinstance(function, CronJob)
    in_progress_key = in_progress_key_prefix + job_id
    claimed = await _claim(worker, job_id)
    if claimed is None:
        log.info("job %s is already running elsewhere: duplicate message dropped", job_id)
        return None
    raw, score, job_try, abort_score = claimed
    start_ms = timestamp_ms()
    enqueue_time_ms = _epoch_ms(enqueued_at, start_ms)
    expires_at: int | None = None
    if tracked:
        if raw is None and score is not None:
            # Still in the queue's index but its definition expired (``_expires``).
            log.warning("job %s expired", job_id)
            record = JobRecord(
                worker, name, job_id, args, kwargs, job_try, enqueue_time_ms, start_ms
            )
            return await record.fail(JobExecutionFailed("job expired"))
        if raw is None or score is None:
            # Finished (or aborted) already: this message is a duplicate.
            await pool.delete(in_progress_key)
            log.info("job %s is finished already: duplicate message dropped", job_id)
            return None
        definition = deserialize_job_raw(raw)
        enqueue_time_ms, header_try = definition["et"], definition["t"]
        expires_at = definition.get("x")
    score = int(float(score)) if score is not None else enqueue_time_ms
    if header_try and int(header_try) > job_try:
        job_try = int(header_try)
        await pool.setex(retry_key_prefix + job_id, retry_counter_ttl_s, str(job_try))

    record = JobRecord(worker, name, job_id, args, kwargs, job_try, enqueue_time_ms, start_ms)
    if expires_at is not None and expires_at < start_ms:
        log.warning("job %s expired", job_id)
        return await record.fail(JobExecutionFailed("job expired"))
    if abort_score is not None and worker.allow_abort_jobs:
        log.info("%s:%s aborted before start", job_id, name)
        return await record.fail(asyncio.CancelledError())
    max_tries = worker.max_tries if function.max_tries is None else function.max_tries
    if job_try > max_tries:
        log.warning("%s:%s max retries %d exceeded", job_id, name, max_tries)
        return await record.fail(JobExecutionFailed(f"max {max_tries} retries exceeded"))

    timeout_s = worker.job_timeout_s if function.timeout_s is None else function.timeout_s
    ctx = {
        **worker.ctx,
        "job_id": job_id,
        "job_try": job_try,
        "enqueue_time": ms_to_datetime(enqueue_time_ms),
        "score": score,
    }
    # The job's try on its log lines (the Celery task's id and queue are bound already).
    bind(attempt=job_try)
    if worker.on_job_start:
        await worker.on_job_start(ctx)
    start_ms = record.start_ms = timestamp_ms()
    log.info(
        "%6.2fs → %s:%s()%s",
        (start_ms - enqueue_time_ms) / 1000,
        job_id,
        name,
        f" try={job_try}" if job_try > 1 else "",
    )
    job = asyncio.get_running_loop().create_task(function.coroutine(ctx, *args, **kwargs))
    worker.job_tasks[job_id] = job
    defer_ms: int | None = None
    result: Any = _NOT_RUN
    success = False
    try:
        result = await asyncio.wait_for(job, timeout_s)
        success = True
    except asyncio.CancelledError as exc:
        if job_id in worker.aborting_tasks:
            worker.aborting_tasks.discard(job_id)
            log.info("%s:%s aborted", job_id, name)
            result = exc
        elif worker.stopping:
            # The worker is stopping: run the job again (on another worker) at once.
            if worker.retry_jobs:
                await asyncio.shield(record.retry(0, score))
            else:
                await asyncio.shield(pool.delete(in_progress_key))
            raise
        else:
            # Celery's hard time limit (a message's ``time_limit``) cancelled it.
            await asyncio.shield(record.fail(TimeoutError("hard time limit exceeded")))
            raise
    except (Retry, RetryJob) as exc:
        if worker.retry_jobs:
            defer_ms = (exc.defer_score or 0) if isinstance(exc, Retry) else 0
        else:
            result = exc
    except Exception as exc:
        delay = worker.retry_policy(exc, job_try) if worker.retry_policy else None
        if worker.retry_jobs and delay is not None:
            log.warning("%s:%s failed (%r); retrying in %.1f s", job_id, name, exc, delay)
            defer_ms = to_ms(delay) or 0
        else:
            log.exception("%s:%s failed, %s: %s", job_id, name, type(exc).__name__, exc)
            result = exc
    finally:
        worker.job_tasks.pop(job_id, None)
    if worker.on_job_end:
        await worker.on_job_end(ctx)
    if defer_ms is not None:
        worker.jobs_retried += 1
        log.info("%s:%s retrying in %.2f s", job_id, name, defer_ms / 1000)
        await asyncio.shield(record.retry(defer_ms, score))
        outcome = Outcome(False, None)
    else:
        outcome = await asyncio.shield(record.finish(success, result, keep_in_progress=is_cron))
    if worker.after_job_end:
        await worker.after_job_end(ctx)
    return outcome


class JobRecord:
    """Writes one job's outcome to Redis (arq's ``finish_job`` / ``finish_failed_job``)."""

    def __init__(
        self,
        worker: Worker,
        name: str,
        job_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        job_try: int,
        enqueue_time_ms: int,
        start_ms: int,
    ) -> None:
        self.worker, self.name, self.job_id = worker, name, job_id
        self.args, self.kwargs, self.job_try = args, kwargs, job_try
        self.enqueue_time_ms, self.start_ms = enqueue_time_ms, start_ms

    async def fail(self, exc: BaseException) -> Outcome:
        """Record a failure before the function ran."""
        return await self.finish(False, exc, keep_in_progress=False)

    async def finish(self, success: bool, result: Any, *, keep_in_progress: bool) -> Outcome:
        """Keep the result (if the function keeps results) and forget the job's other keys."""
        worker, job_id = self.worker, self.job_id
        function = worker.functions.get(self.name)
        if success:
            worker.jobs_complete += 1
        else:
            worker.jobs_failed += 1
        forever = worker.keep_result_forever
        if function is not None and function.keep_result_forever is not None:
            forever = function.keep_result_forever
        keep_s = worker.keep_result_s
        if function is not None and function.keep_result_s is not None:
            keep_s = function.keep_result_s
        data: bytes | str = ""
        if forever or keep_s > 0:
            data = serialize_result(
                self.name,
                self.args,
                self.kwargs,
                self.job_try,
                self.enqueue_time_ms,
                success,
                result,
                self.start_ms,
                timestamp_ms(),
                worker.queue_name,
                job_id,
            )
        keys = (
            in_progress_key_prefix + job_id,
            result_key_prefix + job_id,
            retry_key_prefix + job_id,
            job_key_prefix + job_id,
            abort_jobs_ss,
            deferred_set(worker.queue_name),
            queue_index(worker.queue_name),
        )
        progress_ttl = keep_cronjob_progress * 1000 if keep_in_progress else ""
        result_ttl = "" if forever else to_ms(keep_s)
        await _script(
            worker, FINISH_JOB, FINISH_JOB_SHA, keys, job_id, progress_ttl, data, result_ttl
        )
        if success and worker.log_results:
            log.info("%s:%s ● %.80r", job_id, self.name, result)
        return Outcome(success, result)

    async def retry(self, defer_ms: int, score: int) -> None:
        """Park the job in its queue's deferred set to be sent again in ``defer_ms``."""
        worker, job_id = self.worker, self.job_id
        due = timestamp_ms() + defer_ms
        definition = serialize_job(
            self.name,
            self.args,
            self.kwargs,
            None,
            self.enqueue_time_ms,
            worker.queue_name,
            due + worker.expires_extra_ms,
        )
        async with worker.pool.pipeline(transaction=True) as tr:
            # A tracked job keeps its own definition (and expiry); an untracked one gets one.
            tr.set(
                job_key_prefix + job_id, definition, px=worker.expires_extra_ms + defer_ms, nx=True
            )
            tr.zadd(queue_index(worker.queue_name), {job_id: due})
            tr.zadd(deferred_set(worker.queue_name), {job_id: due})
            tr.delete(in_progress_key_prefix + job_id)
            await tr.execute()


async def _claim(worker: Worker, job_id: str) -> tuple[Any, Any, int, Any] | None:
    """Take the job's in-progress key; then its definition, index score, try and abort mark.

    ``None`` when another worker holds the key. One round trip (``CLAIM_JOB``, run by its
    SHA; sent whole once if this Redis does not know it yet).
    """
    keys = (
        in_progress_key_prefix + job_id,
        job_key_prefix + job_id,
        queue_index(worker.queue_name),
        retry_key_prefix + job_id,
        abort_jobs_ss,
    )
    args = (job_id, int(worker.in_progress_timeout_s * 1000), retry_counter_ttl_s)
    reply = await _script(worker, CLAIM_JOB, CLAIM_JOB_SHA, keys, *args)
    if not reply:
        return None
    raw, score, job_try, abort_score = reply
    return raw or None, score or None, int(job_try), abort_score or None


async def _script(worker: Worker, script: str, sha: str, keys: tuple[str, ...], *args: Any) -> Any:
    """Run ``script`` by its SHA; sent whole if this Redis does not know it (yet, or since a
    restart)."""
    try:
        return await worker.pool.evalsha(sha, len(keys), *keys, *args)
    except NoScriptError:
        return await worker.pool.eval(script, len(keys), *keys, *args)


def _epoch_ms(seconds: Any, default: int) -> int:
    try:
        return round(float(seconds) * 1000)
    except (TypeError, ValueError):
        return default
