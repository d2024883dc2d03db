"""``/healthz`` (the process is up) and ``/readyz`` (it can do useful work)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from celery import Celery
from litestar import Controller, Response, get
from litestar.di import NamedDependency
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, NoPermissionError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

QUEUES = ("io", "gpu")


class Check(msgspec.Struct):
    """One dependency's state."""

    ok: bool
    detail: str


class Readiness(msgspec.Struct):
    """Every check; ``ready`` only when all pass."""

    ready: bool
    database: Check
    redis: Check
    workers: dict[str, list[str]]


@dataclass(frozen=True)
class Census:
    """Who serves each queue: worker names, and their pool slots (concurrency) in all."""

    workers: dict[str, list[str]]
    concurrency: dict[str, int] = field(default_factory=dict)


class WorkerCensus:
    """Which Celery workers consume which queue, and their pool sizes, asked over the broker
    and cached briefly."""

    def __init__(self, app: Celery, *, ttl: float = 5.0, timeout: float = 1.0) -> None:
        self._app = app
        self._ttl = ttl
        self._timeout = timeout
        self._cached: tuple[float, Census] | None = None
        self._lock = asyncio.Lock()
        self._refresh: asyncio.Task[Census] | None = None

    async def by_queue(self) -> dict[str, list[str]]:
        """Worker names per queue name (empty lists when none answered)."""
        return (await self.snapshot()).workers

    async def snapshot(self) -> Census:
        """The census, asked anew when the cached one is older than the TTL."""
        async with self._lock:
            now = time.monotonic()
            if self._cached and now - self._cached[0] < self._ttl:
                return self._cached[1]
            # Both questions at once: each waits its whole timeout for replies.
            queues, stats = await asyncio.gather(
                asyncio.to_thread(self._inspect, "active_queues"),
                asyncio.to_thread(self._inspect, "stats"),
            )
            census = _tally(queues, stats)
            self._cached = (now, census)
            return census

    def peek(self) -> Census | None:
        """The cached census without waiting (None before the first); a stale one is
        refreshed in the background."""
        stale = self._cached is None or time.monotonic() - self._cached[0] >= self._ttl
        if stale and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.create_task(self.snapshot())
        return self._cached[1] if self._cached else None

    def _inspect(self, command: str) -> dict[str, Any]:
        try:
            replies = getattr(self._app.control.inspect(timeout=self._timeout), command)()
        except Exception:  # broker down: no worker is reachable
            return {}
        return dict(replies or {})


def _tally(queues: dict[str, Any], stats: dict[str, Any]) -> Census:
    workers: dict[str, list[str]] = {q: [] for q in QUEUES}
    concurrency: dict[str, int] = dict.fromkeys(QUEUES, 0)
    for worker, consumed in sorted(queues.items()):
        slots = (stats.get(worker) or {}).get("pool", {}).get("max-concurrency") or 0
        for queue in consumed:
            workers.setdefault(queue["name"], []).append(worker)
            concurrency[queue["name"]] = concurrency.get(queue["name"], 0) + int(slots)
    return Census(workers, concurrency)


class HealthController(Controller):
    """Probes for load balancers and orchestrators."""

    tags = ["health"]  # noqa: RUF012 - declared by Litestar as an instance attribute

    @get("/healthz", summary="Liveness: the API process is up")
    async def healthz(self) -> dict[str, str]:
        """Always 200 while the process serves requests."""
        return {"status": "ok"}

    @get("/readyz", summary="Readiness: PostgreSQL, Redis and a worker per queue answer")
    async def readyz(
        self,
        engine: NamedDependency[AsyncEngine],
        redis: NamedDependency[Redis],
        census: NamedDependency[WorkerCensus],
    ) -> Response[Readiness]:
        """200 when ready, 503 (with every check's detail) when not."""
        database, cache, workers = await asyncio.gather(
            _check_database(engine), _check_redis(redis), census.by_queue()
        )
        ready = database.ok and cache.ok and all(workers.get(q) for q in QUEUES)
        body = Readiness(ready=ready, database=database, redis=cache, workers=workers)
        return Response(body, status_code=200 if ready else 503)


async def _check_database(engine: AsyncEngine) -> Check:
    try:
        async with asyncio.timeout(2.0), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        return Check(ok=False, detail=f"PostgreSQL unreachable: {type(exc).__name__}")
    return Check(ok=True, detail="ok")


async def _check_redis(redis: Redis) -> Check:
    try:
        async with asyncio.timeout(2.0):
            await redis.ping()
    except (AuthenticationError, NoPermissionError) as exc:
        # It answers, but not to these credentials: a configuration problem, not an outage.
        return Check(ok=False, detail=f"Redis refused the credentials: {type(exc).__name__}")
    except Exception as exc:
        return Check(ok=False, detail=f"Redis unreachable: {type(exc).__name__}")
    return Check(ok=True, detail="ok")
