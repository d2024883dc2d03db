"""Private PostgreSQL and Redis servers as one: start those asked for, stop exactly those."""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType
from typing import Self

from service.cli.infra.host import InfraError, Log, find_server_binaries
from service.cli.infra.private_postgres import PrivatePostgres
from service.cli.infra.private_redis import PrivateRedis

__all__ = ["PrivateServices"]

_logger = logging.getLogger(__name__)


class PrivateServices:
    """Private throwaway PostgreSQL and Redis servers, bound to 127.0.0.1 on free ports.

    Use as a context manager, or call stop() when done: it stops exactly what start() began.
    PostgreSQL's data folder persists under the state folder and is reused by later starts.
    """

    def __init__(self, *, log: Log | None = None) -> None:
        """Prepare; nothing starts until start(). ``log`` receives one line per decision."""
        self._log: Log = log or _logger.info
        self._postgres: PrivatePostgres | None = None
        self._redis: PrivateRedis | None = None
        self.urls: dict[str, str] = {}

    @property
    def postgres_data_dir(self) -> Path | None:
        """The data folder of the private PostgreSQL while one runs, else None."""
        return self._postgres.data_dir if self._postgres is not None else None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, state_dir: Path, *, need_postgres: bool, need_redis: bool) -> dict[str, str]:
        """Start the requested servers; return their URLs under "database_url"/"redis_url".

        A private PostgreSQL has superuser ``steno`` (trust auth) and a ``steno`` database.
        Raises InfraError, naming what to install, before starting anything when a binary is
        missing; if one server fails to start, the other is stopped again.
        """
        binaries = find_server_binaries(postgres=need_postgres, redis=need_redis)
        state_dir = state_dir.resolve()
        state_dir.mkdir(parents=True, exist_ok=True)
        try:
            if binaries.initdb and binaries.pg_ctl:
                self._postgres = PrivatePostgres(binaries.initdb, binaries.pg_ctl, log=self._log)
                self.urls["database_url"] = self._postgres.start(state_dir)
            if binaries.redis_server:
                self._redis = PrivateRedis(binaries.redis_server, log=self._log)
                self.urls["redis_url"] = self._redis.start(state_dir)
        except BaseException:
            self.stop()
            raise
        return dict(self.urls)

    def stop(self) -> None:
        """Stop every server start() began; safe to call more than once."""
        if self._redis is not None:
            self._redis.stop()
        if self._postgres is not None:
            self._postgres.stop()
        self.urls.clear()

    def stop_postgres(self, *, mode: str = "immediate") -> None:
        """Stop the private PostgreSQL (``pg_ctl stop -m mode``) until ``resume_postgres``.

        With ``immediate`` every connection is cut and the next start recovers from the WAL
        as after a crash: the fault-injection suite's restart. InfraError when none runs here.
        """
        self._running_postgres().pause(mode=mode)

    def resume_postgres(self) -> None:
        """Start the private PostgreSQL again after ``stop_postgres``, on the same port."""
        self._running_postgres().resume()

    def _running_postgres(self) -> PrivatePostgres:
        if self._postgres is None:
            raise InfraError("no private PostgreSQL runs here")
        return self._postgres
