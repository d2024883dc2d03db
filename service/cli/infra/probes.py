"""Ask the PostgreSQL or Redis at a URL whether Steno can use it; create the database it names.

The probes are async; ``run_sync`` runs them from the command's plain synchronous code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import asyncpg
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from service.cli.infra.urls import asyncpg_dsn, database_name

__all__ = [
    "POSTGRES_PROBE_ERRORS",
    "database_problem",
    "describe",
    "ensure_database_exists",
    "redis_answers",
    "redis_problem",
    "run_sync",
]

_T = TypeVar("_T")

# Probes count a server that answers but refuses us (bad password, wrong protocol) as not
# usable: the caller then starts a private one rather than failing on a config problem.
POSTGRES_PROBE_ERRORS = (
    OSError,
    TimeoutError,
    ValueError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
_REDIS_PROBE_ERRORS = (OSError, TimeoutError, RedisError)


def describe(exc: BaseException) -> str:
    """One line naming an error and its first line of text, for a log line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _connect_maintenance(url: str, timeout: float) -> asyncpg.Connection:
    # The maintenance database, not the target one: a server whose target database does not
    # exist yet still answers, and ensure_database_exists() can then create it.
    try:
        return await asyncpg.connect(asyncpg_dsn(url, database="postgres"), timeout=timeout)
    except asyncpg.InvalidCatalogNameError:
        # Someone dropped "postgres"; template1 always exists.
        return await asyncpg.connect(asyncpg_dsn(url, database="template1"), timeout=timeout)


# The timeouts go to the drivers' own socket timeouts as well, which an asyncio.timeout()
# around the call could not do.
async def database_problem(url: str, timeout: float = 2.0) -> str | None:
    """Return why the PostgreSQL server at ``url`` is not usable, or None when it is.

    The target database need not exist; a server that answers but rejects the credentials
    is not usable, since Steno could not use it.
    """
    try:
        # A backstop only: asyncpg's own timeout normally fires first and cleans up after itself.
        conn = await asyncio.wait_for(_connect_maintenance(url, timeout), timeout * 2)
    except POSTGRES_PROBE_ERRORS as exc:
        return describe(exc)
    await conn.close(timeout=timeout)
    return None


async def redis_problem(url: str, timeout: float = 2.0) -> str | None:
    """Return why the Redis at ``url`` is not usable, or None when it answers PING."""
    try:
        # No retries: a probe should take at most ``timeout``, not the client's retry budget.
        client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError as exc:
        return describe(exc)
    try:
        await asyncio.wait_for(client.ping(), timeout)
    except _REDIS_PROBE_ERRORS as exc:
        return describe(exc)
    finally:
        await client.aclose()
    return None


async def redis_answers(url: str, timeout: float = 2.0) -> bool:
    """Return True when the Redis at ``url`` answers PING within ``timeout`` seconds."""
    return await redis_problem(url, timeout) is None


async def ensure_database_exists(url: str, *, connect_timeout: float = 10.0) -> bool:
    """Create the database ``url`` names unless it exists; return True when this call made it.

    Safe to race: when another process creates it at the same moment, this returns False.
    Raises asyncpg errors when the server does not answer or the user may not create it.
    """
    name = database_name(url)
    conn = await _connect_maintenance(url, connect_timeout)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        try:
            await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            # Two concurrent CREATE DATABASE: the loser gets one of these, depending on
            # whether it saw the winner's catalog row before or after its own insert.
            return False
        return True
    finally:
        await conn.close(timeout=connect_timeout)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` to completion and return its result; blocks the calling thread."""
    # A fresh thread has no running loop, so this works from plain scripts and from inside
    # async code (e.g. a Litestar startup hook) alike, where asyncio.run() would refuse.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="steno-infra") as pool:
        return pool.submit(asyncio.run, coro).result()
