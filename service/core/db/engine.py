"""Async engine and session factory, made in lifecycle hooks and passed down."""

from __future__ import annotations

import errno
import json
import socket

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from service.core.settings import Settings


def make_engine(settings: Settings, *, pool_size: int | None = None) -> AsyncEngine:
    """An asyncpg engine sized for this process's concurrency, with stale connections checked."""
    size = pool_size or settings.db_pool_size
    return create_async_engine(
        settings.database_url,
        pool_size=size,
        max_overflow=size // 2,
        pool_pre_ping=True,
        pool_timeout=10,
    )


async def make_read_pool(settings: Settings) -> asyncpg.Pool:
    """A plain asyncpg pool for the hot read paths (key check, one job), no ORM.

    A single ``fetchrow`` on it is one round trip: no pre-ping, BEGIN or ROLLBACK, which
    the ORM session adds around every query (four round trips for one read).
    """
    dsn = make_url(settings.database_url).set(drivername="postgresql")
    return await asyncpg.create_pool(
        dsn.render_as_string(hide_password=False),
        # Lazy: an API whose PostgreSQL is down still starts (and answers 503, not nothing).
        min_size=0,
        max_size=settings.db_pool_size,
        timeout=10,
        command_timeout=30,
        # Only single statements run here (no SET, LISTEN, cursors or advisory locks), so
        # the default reset query at each release (a round trip) has nothing to undo.
        reset=_keep_session,
        init=_decode_jsonb,
    )


async def _keep_session(_: asyncpg.Connection) -> None:
    """A read-pool connection goes back as it is (see ``make_read_pool``)."""


async def _decode_jsonb(connection: asyncpg.Connection) -> None:
    """jsonb columns as Python values, as the ORM reads them (asyncpg's default is text)."""
    await connection.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:  # type: ignore[type-arg]
    """Sessions that keep loaded values after commit (we hand them to msgspec afterwards)."""
    return async_sessionmaker(engine, expire_on_commit=False)


# Socket errors that mean "the server is not there (now)", as opposed to a local OS error
# such as a full disk or a missing program.
_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ETIMEDOUT,
        errno.EPIPE,
    }
)


def database_unreachable(exc: BaseException) -> bool:
    """True when ``exc`` means PostgreSQL could not be reached (worth retrying later)."""
    # asyncpg raises the built-in TimeoutError when connecting takes too long.
    network = (PoolTimeout, OperationalError, ConnectionError, socket.gaierror, TimeoutError)
    # The same from the plain asyncpg pool (``make_read_pool``), which has no ORM wrapping.
    lost = (
        asyncpg.PostgresConnectionError,
        asyncpg.AdminShutdownError,
        asyncpg.CannotConnectNowError,
    )
    if isinstance(exc, lost):
        return True
    if isinstance(exc, network):
        return True
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated)
    return isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS
