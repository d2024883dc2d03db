"""Async engine and session factory, made in lifecycle hooks and passed down."""

from __future__ import annotations

import errno
import socket

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
    if isinstance(exc, network):
        return True
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated)
    return isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS
