"""The IO worker process's shared async resources and the bridge tasks run through.

Made lazily by the first task (``worker_process_init`` does not fire under the gevent pool)
and closed on ``worker_shutdown``. Handlers receive them in an ARQ-style ``ctx`` dict.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

import gevent.lock
import httpx
from redis.asyncio import Redis

from service.broker import Publisher
from service.db.engine import make_engine, make_sessionmaker
from service.settings import Settings
from workers.io.loop import LoopThread

log = logging.getLogger(__name__)

Handler = Callable[..., Coroutine[Any, Any, Any]]


class Retry(Exception):
    """Raised by a handler to run the job again after ``defer`` seconds (arq's contract)."""

    def __init__(self, defer: float = 0.0) -> None:
        super().__init__(f"retry in {defer:.1f} s")
        self.defer = defer


class IoRuntime:
    """One asyncio loop thread and the resources that live on it."""

    def __init__(self, settings: Settings, publisher: Publisher) -> None:
        self.settings = settings
        self.publisher = publisher
        self.loop = LoopThread()
        self.ctx: dict[str, Any] = {}

    def start(self) -> None:
        """Start the loop and build the shared resources on it."""
        self.loop.start()
        self.loop.run(self._startup())
        log.info("IO runtime ready: one asyncio loop thread for this worker process")

    async def _startup(self) -> None:
        s = self.settings
        # Pools sized to the greenlet concurrency, so no handler waits on a pool slot.
        limits = httpx.Limits(
            max_connections=s.io_concurrency, max_keepalive_connections=s.io_concurrency // 4
        )
        engine = make_engine(s, pool_size=min(s.io_concurrency, s.db_pool_size))
        self.ctx.update(
            settings=s,
            publisher=self.publisher,
            run_process=self.run_process,
            # Celery's producer pool belongs to the main hub: publish from there.
            in_hub=self.loop.in_hub,
            http=httpx.AsyncClient(
                limits=limits,
                timeout=httpx.Timeout(s.fetch_timeout_seconds, connect=10.0),
                follow_redirects=True,
                headers={"user-agent": "steno/0.1 (+audio fetcher)"},
            ),
            engine=engine,
            sessions=make_sessionmaker(engine),
            redis=Redis.from_url(s.redis_url, max_connections=s.io_concurrency),
            # The redrive's marker lives in the broker; only a Redis broker has one.
            broker_redis=Redis.from_url(s.broker, max_connections=4)
            if s.broker.startswith(("redis://", "rediss://", "unix://"))
            else None,
        )

    async def run_process(self, argv: Sequence[str], timeout: float) -> tuple[int, bytes, bytes]:
        """Run a program from the main hub (see ``LoopThread.in_hub``); for ``probe_audio``."""

        def run() -> tuple[int, bytes, bytes]:
            # subprocess is gevent's here (monkey-patched), so this yields to the hub.
            done = subprocess.run(list(argv), capture_output=True, timeout=timeout, check=False)
            return done.returncode, done.stdout, done.stderr

        try:
            return await self.loop.in_hub(run)
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(str(exc)) from exc

    async def _shutdown(self) -> None:
        await self.ctx["http"].aclose()
        await self.ctx["redis"].aclose()
        if self.ctx["broker_redis"] is not None:
            await self.ctx["broker_redis"].aclose()
        await self.ctx["engine"].dispose()

    def call(
        self, handler: Handler, *args: Any, job_id: str, job_try: int, enqueue_time: datetime
    ) -> Any:
        """Run ``handler(ctx, *args)`` on the loop from the calling greenlet."""
        ctx = {**self.ctx, "job_id": job_id, "job_try": job_try, "enqueue_time": enqueue_time}
        return self.loop.run(handler(ctx, *args))

    def close(self) -> None:
        """Close the resources and stop the loop thread."""
        try:
            self.loop.run(self._shutdown(), timeout=10.0)
        finally:
            self.loop.stop()


_runtime: IoRuntime | None = None
_lock = gevent.lock.Semaphore()


def get_runtime(settings: Settings, publisher: Publisher) -> IoRuntime:
    """This process's runtime, started on first use."""
    global _runtime
    with _lock:
        if _runtime is None:
            runtime = IoRuntime(settings, publisher)
            runtime.start()
            _runtime = runtime
        return _runtime


def close_runtime() -> None:
    """Close this process's runtime if one was started."""
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.close()
            _runtime = None


def enqueue_time(enqueued_at: Any) -> datetime:
    """When the job was enqueued (the message's ``enqueued_at`` header), as arq's UTC datetime."""
    try:
        return datetime.fromtimestamp(float(enqueued_at), tz=UTC)
    except (TypeError, ValueError):
        return datetime.now(tz=UTC)
