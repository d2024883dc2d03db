"""The worker side: ``func``, ``Retry`` and ``Worker``, running arq functions as Celery tasks.

Every function (and cron job) becomes a Celery task of the same name on the gevent pool, so
the pool's concurrency (``max_jobs``) sets how many jobs run at once. All handlers of the
process share one long-lived asyncio loop in an OS thread (``LoopThread``): a task greenlet
submits ``run_job`` to it and waits cooperatively. Next to the jobs, a heartbeat coroutine on
the loop (every ``poll_delay``) records the health-check key, enqueues cron runs, sends
deferred jobs that fell due, and cancels jobs being aborted; a watchdog greenlet in the hub
logs a warning whenever the loop stops answering (a handler burning CPU).

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
import dataclasses
import inspect
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import gevent
import gevent.event
import gevent.lock
from celery import Celery, Task
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down
from redis.asyncio import Redis

from service.core.delivery import celery_app
from workers.arq.connections import ArqRedis, RedisSettings, create_pool
from workers.arq.constants import (
    abort_job_max_age,
    abort_jobs_ss,
    default_queue_name,
    expires_extra_ms,
    health_check_key_suffix,
    in_progress_key_prefix,
    job_key_prefix,
    keep_cronjob_progress,
    promoter_lock_prefix,
    result_key_prefix,
    retry_counter_ttl_s,
    retry_key_prefix,
)
from workers.arq.cron import CronJob
from workers.arq.jobs import (
    JobExecutionFailed,
    as_text,
    deferred_set,
    deserialize_job_raw,
    queue_index,
    serialize_job,
    serialize_result,
)
from workers.arq.loop import LoopThread
from workers.arq.publish import ENQUEUED_AT_HEADER, JOB_TRY_HEADER, TRACKED_HEADER
from workers.arq.utils import SecondsTimedelta, ms_to_datetime, timestamp_ms, to_ms, to_seconds

log = logging.getLogger("arq.worker")

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


@dataclass
class _Outcome:
    success: bool
    result: Any


_NOT_RUN = object()


class Worker:
    """Runs a ``WorkerSettings``'s functions and cron jobs as Celery tasks on the gevent pool.

    Takes arq's ``Worker`` arguments; a few arq ones are accepted and ignored where Celery
    does the job (``handle_signals``, ``job_completion_wait``, ``queue_read_limit``,
    ``max_burst_jobs``, ``job_serializer``/``job_deserializer``: JSON only). Steno
    extensions: ``celery_app`` (serve from an existing app, e.g. Steno's), ``broker_url``
    (default: the Redis of ``redis_settings``), ``retry_policy``, ``loop_stall_warning``
    (seconds of loop silence the watchdog reports), ``log_level`` and ``hostname`` (the Celery
    node name, ``%h`` expanded; default ``<queue>@<host>``).
    """

    def __init__(
        self,
        functions: Sequence[Function | WorkerCoroutine] = (),
        *,
        queue_name: str | None = default_queue_name,
        cron_jobs: Sequence[CronJob] | None = None,
        redis_settings: RedisSettings | None = None,
        burst: bool = False,
        on_startup: StartupShutdown | None = None,
        on_shutdown: StartupShutdown | None = None,
        on_job_start: StartupShutdown | None = None,
        on_job_end: StartupShutdown | None = None,
        after_job_end: StartupShutdown | None = None,
        max_jobs: int = 10,
        job_timeout: SecondsTimedelta = 300,
        keep_result: SecondsTimedelta = 3600,
        keep_result_forever: bool = False,
        poll_delay: SecondsTimedelta = 0.5,
        max_tries: int = 5,
        health_check_interval: SecondsTimedelta = 3600,
        health_check_key: str | None = None,
        ctx: dict[Any, Any] | None = None,
        retry_jobs: bool = True,
        allow_abort_jobs: bool = False,
        expires_extra_ms: int = expires_extra_ms,
        log_results: bool = True,
        celery_app: Celery | None = None,
        broker_url: str | None = None,
        retry_policy: RetryPolicy | None = None,
        loop_stall_warning: float = 1.0,
        log_level: str = "INFO",
        hostname: str | None = None,
        handle_signals: bool = True,
        job_completion_wait: int = 0,
        queue_read_limit: int | None = None,
        max_burst_jobs: int = -1,
    ) -> None:
        self.functions: dict[str, Function | CronJob] = {f.name: f for f in map(func, functions)}
        self.queue_name = queue_name or default_queue_name
        self.cron_jobs: list[CronJob] = list(cron_jobs or [])
        if not all(isinstance(cj, CronJob) for cj in self.cron_jobs):
            raise RuntimeError("cron_jobs, must be instances of CronJob")
        self.functions.update({cj.name: cj for cj in self.cron_jobs})
        if not self.functions:
            raise RuntimeError("at least one function or cron_job must be registered")
        self.burst = burst
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown
        self.on_job_start = on_job_start
        self.on_job_end = on_job_end
        self.after_job_end = after_job_end
        self.max_jobs = max_jobs
        self.job_timeout_s = to_seconds(job_timeout) or 300.0
        self.keep_result_s = to_seconds(keep_result) or 0.0
        self.keep_result_forever = keep_result_forever
        self.poll_delay_s = to_seconds(poll_delay) or 0.5
        self.max_tries = max_tries
        self.health_check_interval = to_seconds(health_check_interval) or 3600.0
        self.health_check_key = health_check_key or self.queue_name + health_check_key_suffix
        self.redis_settings = redis_settings or RedisSettings()
        self.broker_url = broker_url or self.redis_settings.to_dsn()
        self.ctx: dict[Any, Any] = ctx or {}
        self.retry_jobs = retry_jobs
        self.allow_abort_jobs = allow_abort_jobs
        self.expires_extra_ms = expires_extra_ms
        self.log_results = log_results
        self.retry_policy = retry_policy
        self.loop_stall_warning = loop_stall_warning
        longest = max((f.timeout_s or self.job_timeout_s) for f in self.functions.values())
        self.in_progress_timeout_s = longest + 10
        self._celery_app = celery_app
        self._lock = gevent.lock.Semaphore()
        self._loop: LoopThread | None = None
        self._pool: ArqRedis | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._watchdog: gevent.Greenlet | None = None
        self._last_health_check = 0.0
        self._idle_beats = 0
        self.job_tasks: dict[str, asyncio.Task[Any]] = {}
        self.aborting_tasks: set[str] = set()
        self.jobs_complete = self.jobs_failed = self.jobs_retried = 0
        self.stopping = False
        self.log_level = log_level
        self.hostname = hostname

    # -- Celery wiring -----------------------------------------------------------------

    @property
    def celery_app(self) -> Celery:
        """The Celery app serving this worker's functions (made on first use if not given)."""
        if self._celery_app is None:
            self._celery_app = make_worker_app(self.broker_url, self.queue_name)
        return self._celery_app

    def register(self) -> Celery:
        """Add one Celery task per function, named after it, and the lifecycle signal hooks."""
        app = self.celery_app
        for name in self.functions:
            app.task(name=name, bind=True, shared=False, typing=False)(self._celery_task(name))
        worker_ready.connect(self._on_worker_ready, weak=False)
        worker_shutdown.connect(self._on_worker_shutdown, weak=False)
        worker_shutting_down.connect(self._on_worker_shutting_down, weak=False)
        return app

    def _celery_task(self, name: str) -> Callable[..., Any]:
        def run(task: Task, *args: Any, **kwargs: Any) -> Any:
            return self.execute(task, name, args, kwargs)

        run.__name__ = run.__qualname__ = name.replace(".", "_").replace(":", "_")
        return run

    def argv(self) -> list[str]:
        """The ``celery worker`` arguments: gevent pool, ``max_jobs`` greenlets, this queue."""
        node = "".join(c if c.isalnum() or c in "-_" else "-" for c in self.queue_name)
        return [
            "worker",
            "--pool",
            "gevent",
            "--concurrency",
            str(self.max_jobs),
            "--queues",
            self.queue_name,
            "--hostname",
            self.hostname or f"{node}@{socket.gethostname()}",
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            self.log_level,
        ]

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT (or, with ``burst``, until nothing is left to do)."""
        app = self.register()
        # No prefetch limit: the gevent pool's spawn blocks the consumer while every greenlet
        # is busy, so a worker holds at most max_jobs + 1 messages and takes the next one the
        # moment a greenlet frees. With a limit, Celery's gevent consumer stops polling when
        # the limit is reached and only looks again after its 2 s poll timeout.
        app.conf.worker_prefetch_multiplier = 0
        # Every greenlet acks its own message late: kombu's Redis pool (10 by default) must
        # hold one connection per greenlet, or acks fail with "Too many connections".
        app.conf.broker_transport_options = {
            **(app.conf.broker_transport_options or {}),
            "max_connections": self.max_jobs + 10,
        }
        app.worker_main(self.argv())

    def _on_worker_ready(self, sender: Any = None, **_: Any) -> None:
        consumer = getattr(sender, "task_consumer", None)
        queues = {q.name for q in getattr(consumer, "queues", [])}
        if not queues or self.queue_name in queues:
            self.start()

    def _on_worker_shutting_down(self, **_: Any) -> None:
        self.stopping = True

    def _on_worker_shutdown(self, **_: Any) -> None:
        self.close()

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def pool(self) -> ArqRedis:
        """The ``ArqRedis`` of this worker (``ctx['redis']``)."""
        if self._pool is None:
            raise RuntimeError("the worker is not started")
        return self._pool

    @property
    def loop(self) -> LoopThread:
        """The loop thread every handler runs on."""
        if self._loop is None:
            raise RuntimeError("the worker is not started")
        return self._loop

    def start(self) -> None:
        """Start the loop thread, run ``on_startup`` and the heartbeat (once per process)."""
        with self._lock:
            if self._loop is not None:
                return
            loop = LoopThread()
            loop.start()
            loop.run(self._startup(loop))
            self._loop = loop
            self._watchdog = gevent.spawn(self._watch_loop, loop)
        log.info(
            "arq worker ready: %d functions (%s) on queue %r, gevent pool of %d, one asyncio loop",
            len(self.functions),
            ", ".join(self.functions),
            self.queue_name,
            self.max_jobs,
        )

    async def _startup(self, loop: LoopThread) -> None:
        # One Redis connection per greenlet at most (redis-py's default cap is 100).
        redis_settings = dataclasses.replace(
            self.redis_settings,
            max_connections=self.redis_settings.max_connections or self.max_jobs + 10,
        )
        self._pool = await create_pool(
            redis_settings,
            default_queue_name=self.queue_name,
            expires_extra_ms=self.expires_extra_ms,
            celery_app=self.celery_app,
            # Celery's producer pool belongs to the main hub: publish from there.
            offload=loop.in_hub,
        )
        self.ctx["redis"] = self._pool
        self.ctx["in_hub"] = loop.in_hub
        if self.on_startup:
            await self.on_startup(self.ctx)
        self._heartbeat = asyncio.create_task(self._beat())

    def close(self) -> None:
        """Stop the heartbeat, run ``on_shutdown``, close Redis and stop the loop thread."""
        with self._lock:
            loop, self._loop = self._loop, None
            if loop is None:
                return
            if self._watchdog is not None:
                self._watchdog.kill(block=False)
            try:
                loop.run(self._shutdown(), timeout=30.0)
            finally:
                loop.stop()

    async def _shutdown(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        try:
            await self.pool.delete(self.health_check_key)
            if self.on_shutdown:
                await self.on_shutdown(self.ctx)
        finally:
            await self.pool.aclose()

    def _watch_loop(self, loop: LoopThread) -> None:
        """Warn when the asyncio loop stops answering: a handler is blocking it."""
        hub = gevent.get_hub()
        while True:
            gevent.sleep(self.loop_stall_warning / 2)
            answered = gevent.event.Event()
            sent = loop.loop.time()
            try:
                loop.loop.call_soon_threadsafe(hub.loop.run_callback_threadsafe, answered.set)
            except RuntimeError:  # the loop is closed
                return
            if answered.wait(self.loop_stall_warning):
                continue
            log.warning(
                "the asyncio loop has not answered for %.1f s: a handler is blocking it "
                "(CPU-bound work belongs in loop.run_in_executor); %d jobs on it are stalled",
                self.loop_stall_warning,
                len(self.job_tasks),
            )
            answered.wait()
            log.warning("the asyncio loop answered again after %.1f s", loop.loop.time() - sent)

    # -- one job -------------------------------------------------------------------------

    def execute(self, task: Task, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run one job from its Celery task's greenlet; a failure is raised to Celery too."""
        self.start()
        request = task.request
        outcome = self.loop.run(
            self.run_job(
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
        self,
        name: str,
        job_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        tracked: bool,
        header_try: Any = None,
        enqueued_at: Any = None,
    ) -> _Outcome | None:
        """Claim the job, run it with its timeout, and record the outcome (arq's ``run_job``).

        Returns ``None`` when the message is a duplicate of a job that runs or ran elsewhere.
        """
        pool = self.pool
        function = self.functions[name]
        is_cron = isinstance(function, CronJob)
        in_progress_key = in_progress_key_prefix + job_id
        claimed = await pool.set(
            in_progress_key, b"1", nx=True, px=int(self.in_progress_timeout_s * 1000)
        )
        if not claimed:
            log.info("job %s is already running elsewhere: duplicate message dropped", job_id)
            return None
        async with pool.pipeline(transaction=True) as pipe:
            pipe.get(job_key_prefix + job_id)
            pipe.zscore(queue_index(self.queue_name), job_id)
            pipe.incr(retry_key_prefix + job_id)
            pipe.expire(retry_key_prefix + job_id, retry_counter_ttl_s)
            pipe.zscore(abort_jobs_ss, job_id)
            raw, score, job_try, _, abort_score = await pipe.execute()
        start_ms = timestamp_ms()
        enqueue_time_ms = _epoch_ms(enqueued_at, start_ms)
        expires_at: int | None = None
        if tracked:
            if raw is None and score is not None:
                # Still in the queue's index but its definition expired (``_expires``).
                log.warning("job %s expired", job_id)
                record = _Record(
                    self, name, job_id, args, kwargs, job_try, enqueue_time_ms, start_ms
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
        score = int(score) if score is not None else enqueue_time_ms
        if header_try and int(header_try) > job_try:
            job_try = int(header_try)
            await pool.setex(retry_key_prefix + job_id, retry_counter_ttl_s, str(job_try))

        record = _Record(self, name, job_id, args, kwargs, job_try, enqueue_time_ms, start_ms)
        if expires_at is not None and expires_at < start_ms:
            log.warning("job %s expired", job_id)
            return await record.fail(JobExecutionFailed("job expired"))
        if abort_score is not None and self.allow_abort_jobs:
            log.info("%s:%s aborted before start", job_id, name)
            return await record.fail(asyncio.CancelledError())
        max_tries = self.max_tries if function.max_tries is None else function.max_tries
        if job_try > max_tries:
            log.warning("%s:%s max retries %d exceeded", job_id, name, max_tries)
            return await record.fail(JobExecutionFailed(f"max {max_tries} retries exceeded"))

        timeout_s = self.job_timeout_s if function.timeout_s is None else function.timeout_s
        ctx = {
            **self.ctx,
            "job_id": job_id,
            "job_try": job_try,
            "enqueue_time": ms_to_datetime(enqueue_time_ms),
            "score": score,
        }
        if self.on_job_start:
            await self.on_job_start(ctx)
        start_ms = record.start_ms = timestamp_ms()
        log.info(
            "%6.2fs → %s:%s()%s",
            (start_ms - enqueue_time_ms) / 1000,
            job_id,
            name,
            f" try={job_try}" if job_try > 1 else "",
        )
        job = asyncio.get_running_loop().create_task(function.coroutine(ctx, *args, **kwargs))
        self.job_tasks[job_id] = job
        defer_ms: int | None = None
        result: Any = _NOT_RUN
        success = False
        try:
            result = await asyncio.wait_for(job, timeout_s)
            success = True
        except asyncio.CancelledError as exc:
            if job_id in self.aborting_tasks:
                self.aborting_tasks.discard(job_id)
                log.info("%s:%s aborted", job_id, name)
                result = exc
            elif self.stopping:
                # The worker is stopping: run the job again (on another worker) at once.
                if self.retry_jobs:
                    await asyncio.shield(record.retry(0, score))
                else:
                    await asyncio.shield(pool.delete(in_progress_key))
                raise
            else:
                # Celery's hard time limit (a message's ``time_limit``) cancelled it.
                await asyncio.shield(record.fail(TimeoutError("hard time limit exceeded")))
                raise
        except (Retry, RetryJob) as exc:
            if self.retry_jobs:
                defer_ms = (exc.defer_score or 0) if isinstance(exc, Retry) else 0
            else:
                result = exc
        except Exception as exc:
            delay = self.retry_policy(exc, job_try) if self.retry_policy else None
            if self.retry_jobs and delay is not None:
                log.warning("%s:%s failed (%r); retrying in %.1f s", job_id, name, exc, delay)
                defer_ms = to_ms(delay) or 0
            else:
                log.exception("%s:%s failed, %s: %s", job_id, name, type(exc).__name__, exc)
                result = exc
        finally:
            self.job_tasks.pop(job_id, None)
        if self.on_job_end:
            await self.on_job_end(ctx)
        if defer_ms is not None:
            self.jobs_retried += 1
            log.info("%s:%s retrying in %.2f s", job_id, name, defer_ms / 1000)
            await asyncio.shield(record.retry(defer_ms, score))
            outcome = _Outcome(False, None)
        else:
            outcome = await asyncio.shield(record.finish(success, result, keep_in_progress=is_cron))
        if self.after_job_end:
            await self.after_job_end(ctx)
        return outcome

    # -- the heartbeat -------------------------------------------------------------------

    async def _beat(self) -> None:
        while True:
            try:
                await self._record_health()
                await self._run_cron(datetime.now(tz=UTC))
                await self._promote_deferred()
                if self.allow_abort_jobs:
                    await self._cancel_aborted_jobs()
                if self.burst:
                    await self._stop_when_idle()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the arq heartbeat failed; trying again")
            await asyncio.sleep(self.poll_delay_s)

    async def _record_health(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._last_health_check and now - self._last_health_check < self.health_check_interval:
            return
        self._last_health_check = now
        queued = await self.pool.zcard(queue_index(self.queue_name))
        info = (
            f"{datetime.now():%b-%d %H:%M:%S} j_complete={self.jobs_complete} "
            f"j_failed={self.jobs_failed} j_retried={self.jobs_retried} "
            f"j_ongoing={len(self.job_tasks)} queued={queued}"
        )
        await self.pool.psetex(
            self.health_check_key, int((self.health_check_interval + 1) * 1000), info.encode()
        )

    async def _run_cron(self, now: datetime, window_s: float | None = None) -> None:
        cutoff = now.timestamp() + 2 * max(self.poll_delay_s, 0.5 if window_s is None else window_s)
        for cron_job in self.cron_jobs:
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
                await self.pool.enqueue_job(
                    cron_job.name, _job_id=job_id, _queue_name=self.queue_name, _defer_until=due
                )
                cron_job.calculate_next(due)

    async def _promote_deferred(self) -> None:
        """Send the Celery messages of deferred jobs that fell due (one worker at a time)."""
        pool = self.pool
        now = timestamp_ms()
        due = await pool.zrangebyscore(deferred_set(self.queue_name), "-inf", now, start=0, num=100)
        if not due or not await pool.set(
            promoter_lock_prefix + self.queue_name, b"1", nx=True, px=10_000
        ):
            return
        try:
            for raw_id in due:
                job_id = as_text(raw_id)
                raw = await pool.get(job_key_prefix + job_id)
                if raw is None:
                    # Its definition expired before it fell due (``_expires``), as arq says.
                    record = _Record(self, "<unknown>", job_id, (), {}, 1, now, now)
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
                await pool.zrem(deferred_set(self.queue_name), job_id)
        finally:
            await pool.delete(promoter_lock_prefix + self.queue_name)

    async def _cancel_aborted_jobs(self) -> None:
        async with self.pool.pipeline(transaction=True) as pipe:
            pipe.zrange(abort_jobs_ss, 0, -1)
            pipe.zremrangebyscore(abort_jobs_ss, "-inf", timestamp_ms() - abort_job_max_age * 1000)
            ids, _ = await pipe.execute()
        aborted = set()
        for raw_id in ids:
            job_id = raw_id.decode()
            job = self.job_tasks.get(job_id)
            if job is not None:
                aborted.add(job_id)
                job.cancel()
        if aborted:
            self.aborting_tasks.update(aborted)
            await self.pool.zrem(abort_jobs_ss, *aborted)

    async def _stop_when_idle(self) -> None:
        """Burst mode: stop the worker once its queue and its deferred jobs are empty."""
        async with self.pool.pipeline(transaction=False) as pipe:
            pipe.zcard(queue_index(self.queue_name))
            pipe.llen(self.queue_name)
            tracked, waiting = await pipe.execute()
        idle = not tracked and not waiting and not self.job_tasks
        self._idle_beats = self._idle_beats + 1 if idle else 0
        # Twice in a row: a message Celery has reserved but not started is in neither place.
        if self._idle_beats == 2:
            log.info("burst mode: nothing left on %r, stopping", self.queue_name)
            os.kill(os.getpid(), signal.SIGTERM)


class _Record:
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

    async def fail(self, exc: BaseException) -> _Outcome:
        """Record a failure before the function ran."""
        return await self.finish(False, exc, keep_in_progress=False)

    async def finish(self, success: bool, result: Any, *, keep_in_progress: bool) -> _Outcome:
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
        async with worker.pool.pipeline(transaction=True) as tr:
            if keep_in_progress:
                tr.pexpire(in_progress_key_prefix + job_id, keep_cronjob_progress * 1000)
            else:
                tr.delete(in_progress_key_prefix + job_id)
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
                tr.set(result_key_prefix + job_id, data, px=None if forever else to_ms(keep_s))
            tr.delete(retry_key_prefix + job_id, job_key_prefix + job_id)
            tr.zrem(abort_jobs_ss, job_id)
            tr.zrem(deferred_set(worker.queue_name), job_id)
            tr.zrem(queue_index(worker.queue_name), job_id)
            await tr.execute()
        if success and worker.log_results:
            log.info("%s:%s ● %.80r", job_id, self.name, result)
        return _Outcome(success, result)

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


def _epoch_ms(seconds: Any, default: int) -> int:
    try:
        return round(float(seconds) * 1000)
    except (TypeError, ValueError):
        return default


def make_worker_app(broker_url: str, queue_name: str) -> Celery:
    """A Celery app for a standalone arq worker, with Steno's delivery guarantees.

    Late acks with requeue on a lost worker, prefetch 1, JSON only; Redis's visibility
    timeout is longer than any job may run. No result backend: results live in arq's keys.
    """
    return celery_app("arq", broker_url, visibility_timeout=3600, queues=[queue_name])


def get_kwargs(settings_cls: Any) -> dict[str, Any]:
    """The ``Worker`` arguments a ``WorkerSettings`` class (or dict) sets."""
    names = set(inspect.signature(Worker).parameters)
    items = settings_cls if isinstance(settings_cls, dict) else vars(settings_cls)
    return {k: v for k, v in items.items() if k in names}


def create_worker(settings_cls: Any, **kwargs: Any) -> Worker:
    """A ``Worker`` from a ``WorkerSettings`` class, ``kwargs`` overriding it."""
    return Worker(**{**get_kwargs(settings_cls), **kwargs})


def run_worker(settings_cls: Any, **kwargs: Any) -> Worker:
    """Create the worker and serve until stopped."""
    worker = create_worker(settings_cls, **kwargs)
    worker.run()
    return worker


async def async_check_health(
    redis_settings: RedisSettings | None,
    health_check_key: str | None = None,
    queue_name: str | None = None,
) -> int:
    """0 if a worker of the queue recorded its health within its interval, else 1."""
    settings = redis_settings or RedisSettings()
    key = health_check_key or (queue_name or default_queue_name) + health_check_key_suffix
    redis = Redis.from_url(settings.to_dsn())
    try:
        data = await redis.get(key)
    finally:
        await redis.aclose()
    if not data:
        log.warning("Health check failed: no health check sentinel value found")
        return 1
    log.info("Health check successful: %s", as_text(data))
    return 0


def check_health(settings_cls: Any) -> int:
    """Run ``async_check_health`` for a ``WorkerSettings``."""
    kwargs = get_kwargs(settings_cls)
    return asyncio.run(
        async_check_health(
            kwargs.get("redis_settings"), kwargs.get("health_check_key"), kwargs.get("queue_name")
        )
    )
