"""Which errors count as transient, and how long workers wait before retrying them."""

from __future__ import annotations

import errno

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from service.core.db.engine import database_unreachable
from workers.retry import backoff


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "refused"),
        OSError(errno.ENETUNREACH, "network unreachable"),
        TimeoutError("connect timed out"),
        PoolTimeout("pool exhausted"),
        OperationalError("SELECT 1", {}, Exception("server closed the connection")),
        DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True),
    ],
)
def test_an_unreachable_database_is_transient(error: BaseException) -> None:
    assert database_unreachable(error)


@pytest.mark.parametrize(
    "error",
    [
        IntegrityError("INSERT", {}, Exception("duplicate key")),
        DBAPIError("SELECT 1", {}, Exception("syntax"), connection_invalidated=False),
        ValueError("bad value"),
        OSError(errno.ENOSPC, "no space left on device"),
        FileNotFoundError(errno.ENOENT, "ffprobe"),
        RuntimeError("bug"),
    ],
)
def test_other_errors_are_not_transient(error: BaseException) -> None:
    assert not database_unreachable(error)


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    for retries, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 32.0), (6, 60.0), (20, 60.0)]:
        waits = [backoff(retries) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits), (retries, min(waits), max(waits))
        assert len(set(waits)) > 1, "jittered"
