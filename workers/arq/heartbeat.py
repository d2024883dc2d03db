"""The worker's periodic work on its asyncio loop: health record, cron, deferred jobs, aborts.

Every ``poll_delay``, next to the jobs, the heartbeat records the health-check key (every
``health_check_interval``), enqueues the cron runs that fall due, sends the Celery messages
of deferred jobs whose time came, cancels jobs being aborted (``allow_abort_jobs``) and, in
burst mode, stops the worker once nothing is left to do. One failed beat is logged and the
next one tries again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from workers.arq.constants import (
    abort_job_max_age,
    abort_jobs_ss,
    job_key_prefix,
    promoter_lock_prefix,
)
from workers.arq.execution import JobRecord
from workers.arq.jobs import (
    JobExecutionFailed,
    as_text,
    deferred_set,
    deserialize_job_raw,
    queue_index,
)
from workers.arq.utils import timestamp_ms

if TYPE_CHECKING:
    from workers.arq.worker import Worker

# arq's logger, for the whole worker: logging configurations written for arq name it.
log = logging.getLogger("arq.worker")


class Heartbeat:
    """One worker's periodic work; ``run`` it as a task on the worker's loop."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._last_health_check = 0.0
        self._idle_beats = 0

    async def run(self) -> None:
        """Beat every ``poll_delay`` until cancelled."""
        worker = self.worker
        while True:
            try:
                await self.record_health()
                await self.run_cron(datetime.now(tz=UTC))
                await self.promote_deferred()
                if worker.allow_abort_jobs:
                    await self.cancel_aborted_jobs()
                if worker.burst:
                    await self.stop_when_idle()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the arq heartbeat failed; trying again")
            await asyncio.sleep(worker.poll_delay_s)

    async def record_health(self) -> None:
        """Write the health-check key (arq's format) once per ``health_check_interval``."""
        worker = self.worker
        now = asyncio.get_running_loop().time()
        if self._last_health_check and now - self._last_health_check < worker.health_check_interval:
            return
        self._last_health_check = now
        queued = await worker.pool.zcard(queue_index(worker.queue_name))
        info = (
            f"{datetime.now():%b-%d %H:%M:%S} j_complete={worker.jobs_complete} "
            f"j_failed={worker.jobs_failed} j_retried={worker.jobs_retried} "
            f"j_ongoing={len(worker.job_tasks)} queued={queued}"
        )
        await worker.pool.psetex(
            worker.health_check_key, int((worker.health_check_interval + 1) * 1000), info.encode()
        )

    async def run_cron(self, now: datetime, window_s: float | None = None) -> None:
        """Enqueue, as deferred jobs, the cron runs due before the next beat or two."""
        worker = self.worker
        cutoff = now.timestamp() + 2 * max(
            worker.poll_delay_s, 0.5 if window_s is None else window_s
        )
        for cron_job in worker.cron_jobs:
            if cron_job.next_run is None:
                if cron_job.run_at_startup:
                    cron_job.next_run = now
                else:
                    cron_job.calculate_next(now)
                    continue
            if cron_job.next_run.timestamp() < cutoff:
                due = cron_job.next_run
                job_id = cron_job.job_id or (
                    f"{cron_job.name}:{round(due.timestamp() * 1000)}" if cron_job.unique else None
                )
                await worker.pool.enqueue_job(
                    cron_job.name, _job_id=job_id, _queue_name=worker.queue_name, _defer_until=due
                )
                cron_job.calculate_next(due)

    async def promote_deferred(self) -> None:
        """Send the Celery messages of deferred jobs that fell due (one worker at a time)."""
        worker = self.worker
        pool = worker.pool
        now = timestamp_ms()
        due = await pool.zrangebyscore(
            deferred_set(worker.queue_name), "-inf", now, start=0, num=100
        )
        if not due or not await pool.set(
            promoter_lock_prefix + worker.queue_name, b"1", nx=True, px=10_000
        ):
            return
        try:
            for raw_id in due:
                job_id = as_text(raw_id)
                raw = await pool.get(job_key_prefix + job_id)
                if raw is None:
                    # Its definition expired before it fell due (``_expires``), as arq says.
                    record = JobRecord(worker, "<unknown>", job_id, (), {}, 1, now, now)
                    await record.fail(JobExecutionFailed("job expired"))
                else:
                    d = deserialize_job_raw(raw)
                    # Sent before it leaves the set: a crash here sends it twice, and the
                    # second message finds the job running or finished and is dropped.
                    await pool.send_message(
                        d["f"],
                        job_id,
                        d["a"],
                        d["k"],
                        d["q"],
                        enqueue_time_ms=d["et"],
                        job_try=d["t"],
                    )
                await pool.zrem(deferred_set(worker.queue_name), job_id)
        finally:
            await pool.delete(promoter_lock_prefix + worker.queue_name)

    async def cancel_aborted_jobs(self) -> None:
        """Cancel this worker's running jobs that a client asked to abort."""
        worker = self.worker
        async with worker.pool.pipeline(transaction=True) as pipe:
            pipe.zrange(abort_jobs_ss, 0, -1)
            pipe.zremrangebyscore(abort_jobs_ss, "-inf", timestamp_ms() - abort_job_max_age * 1000)
            ids, _ = await pipe.execute()
        aborted = set()
        for raw_id in ids:
            job_id = raw_id.decode()
            job = worker.job_tasks.get(job_id)
            if job is not None:
                aborted.add(job_id)
                job.cancel()
        if aborted:
            worker.aborting_tasks.update(aborted)
            await worker.pool.zrem(abort_jobs_ss, *aborted)

    async def stop_when_idle(self) -> None:
        """Burst mode: stop the worker once its queue and its deferred jobs are empty."""
        worker = self.worker
        async with worker.pool.pipeline(transaction=False) as pipe:
            pipe.zcard(queue_index(worker.queue_name))
            pipe.llen(worker.queue_name)
            tracked, waiting = await pipe.execute()
        idle = not tracked and not waiting and not worker.job_tasks
        self._idle_beats = self._idle_beats + 1 if idle else 0
        # Twice in a row: a message Celery has reserved but not started is in neither place.
        if self._idle_beats == 2:
            log.info("burst mode: nothing left on %r, stopping", worker.queue_name)
            os.kill(os.getpid(), signal.SIGTERM)
