"""The reference for ``sse``: a bare shared-subscription fan-out, as a raw ASGI app.

One ``XREAD`` over every watched job stream, each entry written as it comes to every client
of its job with ``send`` (no framework, no key check, no history, no heartbeats). Served by
granian exactly as the real API is (``--interface asgi tests.bench.sse_bare:app``); it reads
its Redis from ``STENO_REDIS_URL``. It speaks just enough of ``GET /v1/jobs/{id}/events``
for the benchmark's clients.
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from typing import Any

from redis.asyncio import Redis

from service.core.events.stream import frame_of, last_position, stream_key

_queues: defaultdict[str, set[asyncio.Queue[bytes]]] = defaultdict(set)
_cursors: dict[str, str] = {}
_reader: asyncio.Task[None] | None = None
_redis: Redis | None = None
_cursor_lock = asyncio.Lock()


async def _read(redis: Redis) -> None:
    while True:
        if not _cursors:
            await asyncio.sleep(0.05)
            continue
        replies: Any = await redis.xread(dict(_cursors), count=500, block=200)
        for raw_key, entries in replies or ():
            key = raw_key.decode()
            for entry_id, fields in entries:
                _cursors[key] = entry_id.decode()
                chunk = frame_of(entry_id, fields).sse
                for queue in tuple(_queues[key]):
                    queue.put_nowait(chunk)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI app: ``/v1/jobs/{id}/events`` streams, 404 for anything else."""
    global _reader, _redis
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    parts = scope["path"].strip("/").split("/")
    if len(parts) != 4 or parts[3] != "events":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if _redis is None:
        _redis = Redis.from_url(os.environ["STENO_REDIS_URL"])
        _reader = asyncio.create_task(_read(Redis.from_url(os.environ["STENO_REDIS_URL"])))
    job_id = parts[2]
    key = stream_key(job_id)
    async with _cursor_lock:  # one look per stream (and within the Redis pool's 100)
        if key not in _cursors:
            _cursors[key] = str(await last_position(_redis, job_id))
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    _queues[key].add(queue)
    try:
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b": connected\n\n", "more_body": True})
        while True:
            chunk = await queue.get()
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if b"event: completed" in chunk:
                break
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        _queues[key].discard(queue)
