"""Counting and timing every HTTP request by method, route template (not raw path) and status.

A middleware notes when a routed request starts; a ``before_send`` hook, which sees every
answer the app sends (error answers made by the app's exception handlers included, such as
a 401 from the key middleware), records the count and the time to the first byte. A request
no route matched is counted under route ``unmatched``, so scanners can't grow the series.
"""

from __future__ import annotations

import time
from typing import Any, cast

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from service.core.metrics import series

__all__ = ["record_response", "request_timer"]

_STARTED = "steno.started"


def request_timer(app: ASGIApp) -> ASGIApp:
    """Middleware: remember when the request started."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            cast(dict[str, Any], scope)[_STARTED] = time.perf_counter()
        await app(scope, receive, send)

    return middleware


async def record_response(message: Message, scope: Scope) -> None:
    """``before_send`` hook: count the answer as it starts, and observe its latency."""
    if message["type"] != "http.response.start" or scope["type"] != ScopeType.HTTP:
        return
    fields = cast(dict[str, Any], scope)
    route = fields.get("path_template") or "unmatched"
    method = str(fields.get("method", ""))
    metrics = series()
    metrics.http_requests.labels(method, route, str(message["status"])).inc()
    started = fields.get(_STARTED)
    if started is not None:
        metrics.http_duration.labels(method, route).observe(time.perf_counter() - started)
