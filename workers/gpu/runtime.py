"""One GPU child's resources: device, model cache, database and Redis access, and its lease.

Each prefork child owns one ``GpuRuntime``, made after fork: its Whisper model(s), loaded once,
and a private asyncio loop (in a thread of the child) with its own database engine; the async
service functions are shared with the API. While Whisper holds the child's main thread, that
loop renews the claim's lease, so a child that dies is noticed within ``STENO_LEASE_SECONDS``
and its redelivered message claims the job again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from service.core import transitions
from service.core.db.engine import make_engine, make_sessionmaker
from service.core.events import schemas as events
from service.core.events.publish import emit
from service.core.settings import Settings

__all__ = ["MODELS_PER_CHILD", "GpuRuntime"]

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

MODELS_PER_CHILD = 2


class GpuRuntime:
    """One GPU child's model cache and database access."""

    def __init__(self, settings: Settings, *, slot: int = 0) -> None:
        # whisper (and torch) are imported here, in the child, never at import time: the IO
        # worker registers the GPU tasks too and must not load them.
        from workers.gpu.whisper import choose_device

        self.settings = settings
        self.device = choose_device(settings.whisper_device, slot=slot)
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.set_device(self.device)
        # Whisper holds the child's main thread for seconds at a time; the loop runs beside
        # it so lease renewals go on meanwhile.
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="steno-gpu-db", daemon=True
        )
        self._thread.start()
        self._engine = make_engine(settings, pool_size=2)
        self.sessions = make_sessionmaker(self._engine)
        self._redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        self._models: OrderedDict[str, Any] = OrderedDict()

    def emit(self, event: events.Event) -> None:
        """Publish a progress event from the child's main thread (in order; never raises)."""
        coro = emit(self._redis, self.sessions, self.settings, event)
        asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def transact(
        self,
        operation: Callable[Concatenate[AsyncSession, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``operation(session, *args, **kwargs)`` in one transaction, on this child's loop."""
        async with self.sessions() as session, session.begin():
            return await operation(session, *args, **kwargs)

    def write(
        self,
        operation: Callable[Concatenate[AsyncSession, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``transact`` from the child's main thread, waiting for its result."""
        coro = self.transact(operation, *args, **kwargs)
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this child's loop from its main thread, waiting for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def admitted(self, job_id: str) -> contextlib.AbstractContextManager[None]:
        """Admission of one job to this child: a prefork child runs one job at a time, so
        every job is admitted at once (the batched runtime decides who runs beside whom)."""
        return contextlib.nullcontext()

    def transcribing(self) -> contextlib.AbstractContextManager[None]:
        """Around one job's Whisper call: a prefork child decodes one job at a time, so there
        is nothing to tell (the batched runtime tells its batcher a job is transcribing)."""
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def lease_kept(self, claim: transitions.Claim) -> Iterator[None]:
        """Renew ``claim``'s lease every quarter lease while the block runs."""
        beat = asyncio.run_coroutine_threadsafe(self._renew(claim), self._loop)
        try:
            yield
        finally:
            beat.cancel()

    async def _renew(self, claim: transitions.Claim) -> None:
        lease = self.settings.lease_seconds
        while True:
            await asyncio.sleep(lease / 4)
            try:
                held = await self.transact(transitions.renew_lease, claim, lease_seconds=lease)
            except Exception:  # a database blip: the next beat tries again
                log.warning("job %s: lease renewal failed", claim.job_id, exc_info=True)
                continue
            if not held:
                log.info("job %s: claim lost (cancelled or fenced out)", claim.job_id)
                return

    def model(self, name: str) -> Any:
        """The named Whisper model, loaded on first use and kept (a couple per child)."""
        from workers.gpu.whisper import load_model

        if name not in self._models:
            started = time.perf_counter()
            self._models[name] = load_model(
                name,
                self.settings.models_dir,
                self.device,
                cpu_int8=self.settings.whisper_cpu_int8,
                trim_padding=self.settings.whisper_trim_padding,
            )
            log.info(
                "loaded Whisper %r on %s in %.1f s",
                name,
                self.device,
                time.perf_counter() - started,
            )
            while len(self._models) > MODELS_PER_CHILD:
                self._models.popitem(last=False)
        self._models.move_to_end(name)
        return self._models[name]

    def close(self) -> None:
        """Dispose of the engine and stop the loop thread."""
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._engine.dispose(), self._loop).result(10.0)
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._redis.aclose(), self._loop).result(5.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
