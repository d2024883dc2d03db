"""One long-lived asyncio loop per IO worker process, driven from gevent greenlets.

Celery's gevent pool runs each task in a greenlet. Async handlers instead run on a single
asyncio loop that lives in a real OS thread (started with gevent's *original*
``start_new_thread``) and owns the shared async resources (httpx client, database engine,
Redis). A task greenlet submits its coroutine with ``call_soon_threadsafe`` and waits on a
``gevent.event.Event`` that the loop sets through the hub's thread-safe callback, so the
greenlet yields to the hub instead of blocking it.

The loop is created *inside* its thread with ``asyncio.new_event_loop()``: after
monkey-patching it gets gevent's selector (a second hub in that thread), which keeps the
default executor and hostname lookups working.

Limit: a handler that burns CPU stalls this loop (and so the other async handlers) but not
Celery's own greenlets; CPU-heavy work belongs in ``loop.run_in_executor``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import gevent
import gevent.event
import gevent.hub
from gevent import monkey

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a cancelled coroutine may take to clean up before the greenlet gives up on it.
CANCEL_GRACE_SECONDS = 5.0


class LoopThread:
    """An asyncio event loop in its own OS thread; ``run`` it from any greenlet."""

    def __init__(self, name: str = "arq-asyncio-loop") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hub: gevent.hub.Hub | None = None
        self._stopped = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (after ``start``)."""
        if self._loop is None:
            raise RuntimeError("the asyncio loop thread is not started")
        return self._loop

    def start(self, timeout: float = 10.0) -> None:
        """Start the thread and wait (cooperatively) until its loop runs."""
        self._hub = gevent.get_hub()
        start_new_thread = monkey.get_original("_thread", "start_new_thread")
        start_new_thread(self._main, ())
        with gevent.Timeout(timeout, RuntimeError("the asyncio loop thread did not start")):
            while self._loop is None or not self._loop.is_running():
                gevent.sleep(0.005)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()
                self._stopped = True

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and return its result, waiting without blocking the hub.

        The handler's exception propagates unchanged. On any ``BaseException`` in the waiting
        greenlet (``timeout``, Celery's time limit, ``GreenletExit``) the coroutine is
        cancelled on the loop and given a moment to clean up.
        """
        loop = self.loop
        hub = gevent.get_hub()
        done = gevent.event.Event()
        holder: dict[str, asyncio.Task[T]] = {}

        def wake(_: asyncio.Task[T]) -> None:
            hub.loop.run_callback_threadsafe(done.set)

        def submit() -> None:
            task = loop.create_task(coro)
            holder["task"] = task
            task.add_done_callback(wake)

        loop.call_soon_threadsafe(submit)
        try:
            if not done.wait(timeout):
                raise TimeoutError(f"the handler did not finish within {timeout} s")
        except BaseException:
            loop.call_soon_threadsafe(lambda: holder["task"].cancel() if holder else None)
            done.wait(CANCEL_GRACE_SECONDS)
            raise
        return holder["task"].result()

    async def in_hub(self, func: Callable[..., T], *args: Any) -> T:
        """Await ``func(*args)`` run in a greenlet of the worker's main hub.

        For what only the main hub can do: gevent's child-process watchers exist only on
        the default loop, so subprocesses are started from there.
        """
        if self._hub is None:
            raise RuntimeError("the asyncio loop thread is not started")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        def call() -> None:
            try:
                result = func(*args)
            except BaseException as exc:
                loop.call_soon_threadsafe(settle, None, exc)
            else:
                loop.call_soon_threadsafe(settle, result, None)

        self._hub.loop.run_callback_threadsafe(gevent.spawn, call)
        return await future

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop after the coroutines scheduled so far; wait for the thread to end."""
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        with gevent.Timeout(timeout, False):
            while not self._stopped:
                gevent.sleep(0.01)
