"""A ``text/event-stream`` response that drops a client who stops reading.

Litestar's streaming response awaits each ``send`` without limit, so a client that stops
reading (while its TCP window is full) would hold the stream forever. Here every write has
``send_timeout`` seconds; past it, or when the client disconnects, the body generator is
closed and ``on_close`` runs (it returns the client's stream slot), whatever happened.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

import anyio
from litestar import Request
from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import Receive, Scope, Send

log = logging.getLogger(__name__)


class _TimedStreamingResponse(ASGIStreamingResponse):
    __slots__ = ("body_generator", "on_close", "send_timeout")

    body_generator: AsyncGenerator[bytes, None]
    on_close: Callable[[], None]
    send_timeout: float

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with contextlib.suppress(Exception):
                await self.body_generator.aclose()
            self.on_close()

    async def send_body(self, send: Send, receive: Receive) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self._listen_for_disconnect, group.cancel_scope, receive)
            try:
                async for chunk in self.body_generator:
                    with anyio.fail_after(self.send_timeout):
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except TimeoutError:
                log.info("SSE client did not read for %.0f s; dropped", self.send_timeout)
            finally:
                group.cancel_scope.cancel()


class EventStream(Stream):
    """SSE response over an async generator of encoded messages."""

    def __init__(
        self,
        body: AsyncGenerator[bytes, None],
        *,
        send_timeout: float,
        on_close: Callable[[], None],
    ) -> None:
        super().__init__(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._body = body
        self._send_timeout = send_timeout
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
        response.send_timeout = self._send_timeout
        response.on_close = self._on_close
        return response
