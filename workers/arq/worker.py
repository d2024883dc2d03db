"""The ``Worker``: arq's ``WorkerSettings`` served as Celery tasks on the gevent pool.

Every function (and cron job) becomes a Celery task of the same name on the gevent pool, so
the pool's concurrency (``max_jobs``) sets how many jobs run at once. All handlers of the
process share one long-lived asyncio loop in an OS thread (``LoopThread``): a task greenlet
submits its job to it (``workers.arq.execution``) and waits cooperatively. Next to the jobs,
a heartbeat coroutine on the loop does the periodic work (``workers.arq.heartbeat``); a
watchdog greenlet in the hub logs a warning whenever the loop stops answering (a handler
burning CPU).

This module keeps arq's ``arq.worker`` names: programs import ``func``, ``Retry``, ``Worker``,
``create_worker``, ``run_worker`` and ``check_health`` from here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any

import gevent
import gevent.event
import gevent.lock
from celery import Celery, Task
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down
from redis.asyncio import Redis

from service.core.delivery import celery_app
from workers.arq import execution
from workers.arq.broker import configure_worker_app
from workers.arq.connections import ArqRedis, RedisSettings, create_pool
from workers.arq.constants import default_queue_name, expires_extra_ms, health_check_key_suffix
from workers.arq.cron import CronJob
from workers.arq.execution import Outcome
from workers.arq.functions import (
    Function,
    Retry,
    RetryJob,
    RetryPolicy,
    StartupShutdown,
    WorkerCoroutine,
    func,
)
from workers.arq.heartbeat import Heartbeat
from workers.arq.jobs import as_text
from workers.arq.loop import LoopThread
from workers.arq.utils import SecondsTimedelta, to_seconds

__all__ = [
    "Function",
    "Retry",
    "RetryJob",
    "RetryPolicy",
    "StartupShutdown",
    "Worker",
    "WorkerCoroutine",
    "async_check_health",
    "check_health",
    "create_worker",
    "func",
    "get_kwargs",
    "make_worker_app",
    "run_worker",
]

log = logging.getLogger("arq.worker")


class Worker:
    """Runs a ``WorkerSettings``'s functions and cron jobs as Celery tasks on the gevent pool.

    Takes arq's ``Worker`` arguments; a few arq ones are accepted and ignored where Celery
    does the job (``handle_signals``, ``job_completion_wait``, ``queue_read_limit``,
    ``max_burst_jobs``, ``job_serializer``/``job_deserializer``: JSON only). Steno
    extensions: ``celery_app`` (serve from an existing app, e.g. Steno's), ``broker_url``
    (default: the Redis of ``redis_settings``), ``retry_policy``, ``loop_stall_warning``
    (seconds of loop silence the watchdog reports), ``log_level``, ``quiet`` (no start-up
    banner: every line a log record), ``hostname`` (the Celery node name, ``%h`` expanded;
    default ``<queue>@<host>``) and ``visibility_timeout`` (seconds after which a message
    unacked by a dead worker is handed out again; default twice the in-progress timeout,
    the longest function timeout + 10 s; ignored with ``celery_app``).
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
        quiet: bool = False,
        hostname: str | None = None,
        visibility_timeout: SecondsTimedelta | None = None,
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
        # A message may wait in the worker for a greenlet (as long as a job runs) and then
        # run: twice the in-progress timeout, and a dead worker's jobs are back soon after.
        self.visibility_timeout_s = int(
            to_seconds(visibility_timeout) or 2 * self.in_progress_timeout_s
        )
        self._celery_app = celery_app
        self._lock = gevent.lock.Semaphore()
        self._loop: LoopThread | None = None
        self._pool: ArqRedis | None = None
        self._heartbeat = Heartbeat(self)
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._watchdog: gevent.Greenlet | None = None
        self.job_tasks: dict[str, asyncio.Task[Any]] = {}
        self.aborting_tasks: set[str] = set()
        self.jobs_complete = self.jobs_failed = self.jobs_retried = 0
        self.stopping = False
        self.log_level = log_level
        self.quiet = quiet
        self.hostname = hostname

    # -- Celery wiring -----------------------------------------------------------------

    @property
    def celery_app(self) -> Celery:
        """The Celery app serving this worker's functions (made on first use if not given)."""
        if self._celery_app is None:
            self._celery_app = make_worker_app(
                self.broker_url, self.queue_name, self.visibility_timeout_s
            )
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
            *(["--quiet"] if self.quiet else []),
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
        configure_worker_app(app, self.max_jobs)
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
        self._heartbeat_task = asyncio.create_task(self._heartbeat.run())

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
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
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

    # -- one job (workers.arq.execution) -------------------------------------------------

    def execute(self, task: Task, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run one job from its Celery task's greenlet; a failure is raised to Celery too."""
        return execution.execute(self, task, name, args, kwargs)

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
    ) -> Outcome | None:
        """Claim the job, run it with its timeout, and record the outcome (arq's ``run_job``).

        Returns ``None`` when the message is a duplicate of a job that runs or ran elsewhere.
        """
        return await execution.run_job(
            self,
            name,
            job_id,
            args,
            kwargs,
            tracked=tracked,
            header_try=header_try,
            enqueued_at=enqueued_at,
        )


def make_worker_app(broker_url: str, queue_name: str, visibility_timeout: int = 3600) -> Celery:
    """A Celery app for a standalone arq worker, with Steno's delivery guarantees.

    Late acks with requeue on a lost worker, prefetch 1, JSON only; Redis's visibility
    timeout (seconds) must be longer than a message can wait in a worker and then run. No
    result backend: results live in arq's keys.
    """
    return celery_app("arq", broker_url, visibility_timeout=visibility_timeout, queues=[queue_name])


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
