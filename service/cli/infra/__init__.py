"""Find or start the PostgreSQL and Redis that Steno needs.

``just demo`` and ``just dev`` use the servers at the configured URLs. When nothing usable
answers there, they start private throwaway instances (``redis-server``, and ``initdb`` +
``pg_ctl`` under a local state folder) if the binaries exist, and otherwise say exactly what
to install, so that a newcomer never edits a config file to see Steno work.

resolve.py            resolve_services(): use what answers, start privately what does not
probes.py             whether the server at a URL is usable (and why not); create a database
private.py            PrivateServices: start the private servers asked for, stop exactly those
private_postgres.py   initdb + pg_ctl, a data folder reused (or taken over) across runs
private_redis.py      a redis-server child that keeps nothing on disk
host.py               the binaries (or what to install), free ports, InfraError
urls.py               asyncpg DSNs, database names, passwords redacted for logs
"""

from service.cli.infra.host import InfraError, find_binary
from service.cli.infra.private import PrivateServices
from service.cli.infra.private_postgres import PRIVATE_DATABASE, PRIVATE_USER
from service.cli.infra.probes import (
    database_problem,
    ensure_database_exists,
    redis_answers,
    redis_problem,
)
from service.cli.infra.resolve import resolve_services
from service.cli.infra.urls import asyncpg_dsn, database_name, redact_url

__all__ = [
    "PRIVATE_DATABASE",
    "PRIVATE_USER",
    "InfraError",
    "PrivateServices",
    "asyncpg_dsn",
    "database_name",
    "database_problem",
    "ensure_database_exists",
    "find_binary",
    "redact_url",
    "redis_answers",
    "redis_problem",
    "resolve_services",
]
