"""A ``text/event-stream`` response that drops a client who stops reading.

Litestar's streaming response awaits each ``send`` without limit, so a client that stops
reading (while its TCP window is full) would hold the stream forever. Here every write has
``send_timeout`` seconds; past it, or when the client disconnects, the body generator is
closed and ``on_close`` runs (it returns the client's stream slot), whatever happened.

The time limit is kept by one ``SendWatchdog`` per process rather than a timer per write:
a timer per write cost about a quarter of the CPU of delivering an event.

The response start goes out through Litestar's ``send`` (its ``before_send`` hooks count the
request, its exception middleware learns that the response started); the body's writes go
straight to the server's ``send``, which ``StenoLitestar`` keeps in the scope. Those
wrappers only ever look at the start, and at 10,000 writes a second the three of them per
write (a hook and two ``capture_response_started``) took about a third of the API's time.
The body is written after Litestar's stack has returned (``StenoLitestar`` does it), so a
stream holds none of that stack's objects, and from a task of its own, a few frames deep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any, cast

import anyio
from litestar import Litestar, Request
from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import HTTPResponseBodyEvent, Receive, Scope, Send

log = logging.getLogger(__name__)

# Where ``StenoLitestar`` keeps the server's own ``send`` in an HTTP request's scope.
SERVER_SEND = "steno.server_send"
# Where it lists the event streams whose bodies it writes once Litestar's stack has returned.
LATER_BODIES = "steno.later_bodies"


class StenoLitestar(Litestar):
    """Litestar, keeping the server's ``send`` in the scope for event streams' body writes,
    and writing those bodies once Litestar's middleware stack has returned."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """The ASGI entry point: Litestar's, then the body of an event stream it started."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope[SERVER_SEND] = send
        later: list[_TimedStreamingResponse] = []
        scope[LATER_BODIES] = later
        try:
            await super().__call__(scope, receive, send)
        except BaseException:
            for response in later:
                await response.close()
            raise
        for response in later:
            await response.finish(receive)


class _Write:
    """One stream's write in progress, as the watchdog sees it."""

    __slots__ = ("scope", "since", "timed_out")

    def __init__(self, scope: anyio.CancelScope) -> None:
        self.scope = scope
        self.since: float | None = None
        self.timed_out = False


class SendWatchdog:
    """Cancels the streams whose current write has taken longer than ``timeout`` seconds."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._writes: set[_Write] = set()
        self._task: asyncio.Task[None] | None = None

    def watch(self, write: _Write) -> None:
        """Keep an eye on a stream's writes (starts the watchdog on first use)."""
        self._writes.add(write)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="steno-sse-watchdog")

    def forget(self, write: _Write) -> None:
        """Stop watching a stream."""
        self._writes.discard(write)

    async def stop(self) -> None:
        """Stop the watchdog task."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._writes:
            await asyncio.sleep(min(1.0, self.timeout / 4))
            now = loop.time()
            for write in tuple(self._writes):
                if write.since is not None and now - write.since > self.timeout:
                    write.timed_out = True
                    write.scope.cancel()


class _TimedStreamingResponse(ASGIStreamingResponse):
    __slots__ = ("body_generator", "on_close", "server_send", "watchdog")

    body_generator: AsyncGenerator[bytes, None]
    on_close: Callable[[], None]
    watchdog: SendWatchdog
    server_send: Send

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fields = cast(dict[str, Any], scope)
        self.server_send = cast(Send, fields.get(SERVER_SEND, send))
        later: list[_TimedStreamingResponse] | None = fields.get(LATER_BODIES)
        if later is None:  # not under StenoLitestar: the whole response now
            try:
                await super().__call__(scope, receive, send)
            finally:
                await self.close()
            return
        # Only the start here; ``StenoLitestar`` writes the body once Litestar's stack has
        # returned, so that the stream's long life doesn't keep that stack's coroutines,
        # closures and request objects (most of a stream's objects, each walked by every
        # full GC) alive.
        try:
            await self.start_response(send=send)
        except BaseException:
            await self.close()
            raise
        later.append(self)

    async def finish(self, receive: Receive) -> None:
        """Write the body (the start is sent), then close the stream."""
        try:
            if self.is_head_response:
                end: HTTPResponseBodyEvent = {
                    "type": "http.response.body",
                    "body": b"",
                    "more_body": False,
                }
                await self.server_send(end)
            else:
                await self.send_body(self.server_send, receive)
            await self.after_response()
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the body generator and give the stream back (``on_close``)."""
        with contextlib.suppress(Exception):
            await self.body_generator.aclose()
        self.on_close()

    async def send_body(self, send: Send, receive: Receive) -> None:
        # The body is written from a task of its own and this one waits for the disconnect:
        # each event then resumes a coroutine a few frames deep instead of the request's
        # whole middleware stack (a dozen frames, twice an event: the wake-up and the
        # write's completion), which was most of the API's time per event.
        async with anyio.create_task_group() as group:
            write = _Write(group.cancel_scope)
            self.watchdog.watch(write)
            try:
                group.start_soon(self._write_body, write)
                await self._listen_for_disconnect(group.cancel_scope, receive)
            finally:
                self.watchdog.forget(write)
        if write.timed_out:
            log.info("SSE client did not read for %.0f s; dropped", self.watchdog.timeout)

    async def _write_body(self, write: _Write) -> None:
        send = self.server_send
        loop = asyncio.get_running_loop()
        try:
            async for chunk in self.body_generator:
                write.since = loop.time()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                write.since = None
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            write.scope.cancel()  # the wait for a disconnect ends with the body


class EventStream(Stream):
    """SSE response over an async generator of encoded messages."""

    def __init__(
        self,
        body: AsyncGenerator[bytes, None],
        *,
        watchdog: SendWatchdog,
        on_close: Callable[[], None],
    ) -> None:
        super().__init__(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._body = body
        self._watchdog = watchdog
        self._on_close = on_close

    def to_asgi_response(
        self, app: Any, request: Request[Any, Any, Any], **kwargs: Any
    ) -> ASGIResponse:
        """The ASGI response, with a time limit on every write."""
        response = _TimedStreamingResponse(
            iterator=self._body,
            background=self.background or kwargs.get("background"),
            content_length=0,
            cookies=self.cookies,
            encoded_headers=kwargs.get("encoded_headers"),
            encoding=self.encoding,
            headers={**(kwargs.get("headers") or {}), **self.headers},
            is_head_response=kwargs.get("is_head_response", False),
            media_type="text/event-stream",
            status_code=self.status_code or 200,
        )
        response.body_generator = self._body
        response.watchdog = self._watchdog
        response.on_close = self._on_close
        return response
