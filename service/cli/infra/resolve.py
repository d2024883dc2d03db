"""Decide which PostgreSQL and Redis to run with: the configured ones that answer, else private."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from service.cli.infra import probes
from service.cli.infra.host import Log
from service.cli.infra.private import PrivateServices
from service.cli.infra.urls import database_name, redact_url

__all__ = ["resolve_services"]

_logger = logging.getLogger(__name__)


def resolve_services(
    database_url: str,
    redis_url: str,
    state_dir: Path,
    *,
    log: Log | None = None,
    timeout: float = 2.0,
) -> tuple[str, str, PrivateServices | None]:
    """Return the database and Redis URLs to use, and the private servers started, if any.

    A configured server that answers is used as is (its database is created when missing);
    for each one that does not, a private server is started under ``state_dir``. The caller
    must stop() the returned PrivateServices. Raises InfraError when a needed server can
    neither be reached nor started. Blocks; callable from sync code and from async code.
    """
    emit: Log = log or _logger.info

    async def probe() -> tuple[str | None, str | None]:
        db, rd = await asyncio.gather(
            probes.database_problem(database_url, timeout),
            probes.redis_problem(redis_url, timeout),
        )
        return db, rd

    db_problem, redis_problem = probes.run_sync(probe())
    if db_problem is None:
        emit(f"PostgreSQL: using the server at {redact_url(database_url)}")
        _create_configured_database(database_url, emit)
    else:
        emit(
            f"PostgreSQL: nothing usable at {redact_url(database_url)} ({db_problem}); "
            f"starting a private server under {state_dir}"
        )
    if redis_problem is None:
        emit(f"Redis: using the server at {redact_url(redis_url)}")
    else:
        emit(
            f"Redis: nothing usable at {redact_url(redis_url)} ({redis_problem}); "
            f"starting a private server under {state_dir}"
        )
    if db_problem is None and redis_problem is None:
        return database_url, redis_url, None
    services = PrivateServices(log=emit)
    urls = services.start(
        state_dir, need_postgres=db_problem is not None, need_redis=redis_problem is not None
    )
    return urls.get("database_url", database_url), urls.get("redis_url", redis_url), services


def _create_configured_database(url: str, emit: Log) -> None:
    try:
        name = database_name(url)
    except ValueError:
        return  # nothing named, so nothing to create; the driver's default applies
    try:
        created = probes.run_sync(probes.ensure_database_exists(url))
    except probes.POSTGRES_PROBE_ERRORS as exc:
        # Not fatal here: a user without CREATEDB may still use a database made for it by
        # someone else; migrations will report a real problem with its full context.
        emit(f"PostgreSQL: could not create database {name!r}: {probes.describe(exc)}")
        return
    if created:
        emit(f"PostgreSQL: created database {name!r}")
