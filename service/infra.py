"""Find or start the PostgreSQL and Redis that Steno needs.

``just demo`` and ``just dev`` use the servers at the configured URLs. When nothing usable
answers there, they start private throwaway instances (``redis-server``, and ``initdb`` +
``pg_ctl`` under a local state folder) if the binaries exist, and otherwise say exactly what
to install, so that a newcomer never edits a config file to see Steno work.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import logging
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from sqlalchemy.engine import make_url

__all__ = [
    "PRIVATE_DATABASE",
    "PRIVATE_USER",
    "InfraError",
    "PrivateServices",
    "asyncpg_dsn",
    "database_answers",
    "database_name",
    "ensure_database_exists",
    "find_binary",
    "redact_url",
    "redis_answers",
    "resolve_services",
]

_logger = logging.getLogger(__name__)
_T = TypeVar("_T")
Log = Callable[[str], None]

PRIVATE_USER = "steno"
"""Superuser name of a private PostgreSQL (initdb -U), independent of the OS user."""
PRIVATE_DATABASE = "steno"
"""Database that a private PostgreSQL's URL names; start() creates it."""

_LOOPBACK = "127.0.0.1"
_START_ATTEMPTS = 3
_READY_TIMEOUT = 15.0
# Probes count a server that answers but refuses us (bad password, wrong protocol) as not
# usable: the caller then starts a private one rather than failing on a config problem.
_PG_PROBE_ERRORS = (
    OSError,
    TimeoutError,
    ValueError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
_REDIS_PROBE_ERRORS = (OSError, TimeoutError, RedisError)
_POSTGRES_BIN_PATTERNS = (
    "/usr/lib/postgresql/*/bin",  # Debian/Ubuntu keep them off PATH
    "/usr/pgsql-*/bin",  # RHEL/Fedora PGDG packages
    "/opt/homebrew/opt/postgresql*/bin",  # keg-only versioned formulae on Apple silicon
    "/usr/local/opt/postgresql*/bin",  # ...and on Intel macs
)
_SERVICE_NAMES = {"postgres": "PostgreSQL", "redis": "Redis"}
_BINARIES = {"postgres": "initdb/pg_ctl", "redis": "redis-server"}
_PACKAGES = {
    "postgres": ("postgresql", "postgresql"),  # (Debian, Homebrew)
    "redis": ("redis-server", "redis"),
}


class InfraError(RuntimeError):
    """A needed service neither answers nor can be started; the message says what to do."""


# --- URLs -----------------------------------------------------------------------------------


def asyncpg_dsn(url: str, *, database: str | None = None) -> str:
    """Return a DSN asyncpg accepts for an SQLAlchemy PostgreSQL URL (``+driver`` removed).

    With ``database`` the DSN names that database on the same server instead. Raises
    ValueError when the URL is not a PostgreSQL URL.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {redact_url(url)}")
    parsed = parsed.set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def database_name(url: str) -> str:
    """Return the database an SQLAlchemy URL names; ValueError when it names none."""
    name = make_url(url).database
    if not name:
        raise ValueError(f"the URL names no database: {redact_url(url)}")
    return name


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, for log lines and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --- probes ---------------------------------------------------------------------------------


async def _connect_maintenance(url: str, limit: float) -> asyncpg.Connection:
    # The maintenance database, not the target one: a server whose target database does not
    # exist yet still answers, and ensure_database_exists() can then create it.
    try:
        return await asyncpg.connect(asyncpg_dsn(url, database="postgres"), timeout=limit)
    except asyncpg.InvalidCatalogNameError:
        # Someone dropped "postgres"; template1 always exists.
        return await asyncpg.connect(asyncpg_dsn(url, database="template1"), timeout=limit)


async def _database_problem(url: str, limit: float) -> str | None:
    """Return why the PostgreSQL server at ``url`` is not usable, or None when it is."""
    try:
        # A backstop only: asyncpg's own timeout normally fires first and cleans up after itself.
        conn = await asyncio.wait_for(_connect_maintenance(url, limit), limit * 2)
    except _PG_PROBE_ERRORS as exc:
        return _describe(exc)
    await conn.close(timeout=limit)
    return None


async def _redis_problem(url: str, limit: float) -> str | None:
    """Return why the Redis at ``url`` is not usable, or None when it answers PING."""
    try:
        # No retries: a probe should take at most ``limit``, not the client's retry budget.
        client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=limit,
            socket_timeout=limit,
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError as exc:
        return _describe(exc)
    try:
        await asyncio.wait_for(client.ping(), limit)
    except _REDIS_PROBE_ERRORS as exc:
        return _describe(exc)
    finally:
        await client.aclose()
    return None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# The timeout is part of the agreed signature and is handed to the drivers' own socket
# timeouts as well, which an asyncio.timeout() around the call could not do.
async def database_answers(url: str, timeout: float = 2.0) -> bool:
    """Return True when a PostgreSQL server at ``url`` accepts our login within ``timeout``.

    The target database need not exist; a server that answers but rejects the credentials
    counts as not answering, since Steno could not use it.
    """
    return await _database_problem(url, timeout) is None


async def redis_answers(url: str, timeout: float = 2.0) -> bool:
    """Return True when the Redis at ``url`` answers PING within ``timeout`` seconds."""
    return await _redis_problem(url, timeout) is None


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


def _run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    # A fresh thread has no running loop, so this works from plain scripts and from inside
    # async code (e.g. a Litestar startup hook) alike, where asyncio.run() would refuse.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="steno-infra") as pool:
        return pool.submit(asyncio.run, coro).result()


# --- binaries -------------------------------------------------------------------------------


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(number) for number in re.findall(r"\d+", path))


def find_binary(name: str, *, next_to: str | None = None) -> str | None:
    """Return the path of executable ``name``, or None when it is not installed.

    With ``next_to`` (another binary's path) a sibling in that binary's folder wins, so that
    initdb, pg_ctl and postgres come from one PostgreSQL version. Otherwise PATH is searched,
    then the usual PostgreSQL package folders (newest version first).
    """
    if next_to is not None:
        sibling = Path(os.path.realpath(next_to)).with_name(name)
        if os.access(sibling, os.X_OK):
            return str(sibling)
    found = shutil.which(name)
    if found:
        return found
    candidates = [path for pattern in _POSTGRES_BIN_PATTERNS for path in glob.glob(pattern)]
    for folder in sorted(candidates, key=_version_key, reverse=True):
        path = Path(folder, name)
        if os.access(path, os.X_OK):
            return str(path)
    return None


def _install_hint(services: list[str]) -> str:
    debian = " ".join(_PACKAGES[service][0] for service in services)
    brew = " ".join(_PACKAGES[service][1] for service in services)
    return f"Debian/Ubuntu: `apt-get install {debian}`; macOS: `brew install {brew}`"


def _free_port() -> int:
    # The kernel picks an unused port; another process could take it before the server binds,
    # which is why starts are retried on a fresh port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# --- private servers ------------------------------------------------------------------------


class PrivateServices:
    """Private throwaway PostgreSQL and Redis servers, bound to 127.0.0.1 on free ports.

    Use as a context manager, or call stop() when done: it stops exactly what start() began.
    PostgreSQL's data folder persists under the state folder and is reused by later starts.
    """

    def __init__(self, *, log: Log | None = None) -> None:
        """Prepare; nothing starts until start(). ``log`` receives one line per decision."""
        self._log: Log = log or _logger.info
        self._redis: subprocess.Popen[bytes] | None = None
        self._pg_ctl: str | None = None
        self._pg_data: Path | None = None
        self._pg_socket_dir: Path | None = None
        self._pg_options = ""
        self._user: pwd.struct_passwd | None = None
        self.urls: dict[str, str] = {}

    @property
    def postgres_data_dir(self) -> Path | None:
        """The data folder of the private PostgreSQL while one runs, else None."""
        return self._pg_data if self._pg_ctl is not None else None

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
        initdb = pg_ctl = redis_server = None
        missing: list[str] = []
        if need_postgres:
            initdb = find_binary("initdb")
            pg_ctl = find_binary("pg_ctl", next_to=initdb) if initdb else find_binary("pg_ctl")
            if not (initdb and pg_ctl):
                missing.append("postgres")
        if need_redis:
            redis_server = find_binary("redis-server")
            if not redis_server:
                missing.append("redis")
        if missing:
            names = " and ".join(_SERVICE_NAMES[service] for service in missing)
            binaries = " and ".join(_BINARIES[service] for service in missing)
            raise InfraError(
                f"Steno needs {names}: none answers at the configured URL, and {binaries} "
                f"(needed to start a private one) cannot be found. Install: "
                f"{_install_hint(missing)}. Or point the configured URL at a running server."
            )
        state_dir = state_dir.resolve()
        state_dir.mkdir(parents=True, exist_ok=True)
        try:
            if initdb and pg_ctl:
                self.urls["database_url"] = self._start_postgres(state_dir, initdb, pg_ctl)
            if redis_server:
                self.urls["redis_url"] = self._start_redis(state_dir, redis_server)
        except BaseException:
            self.stop()
            raise
        return dict(self.urls)

    def stop(self) -> None:
        """Stop every server start() began; safe to call more than once."""
        if self._redis is not None:
            process, self._redis = self._redis, None
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            self._log(f"Redis: stopped the private server (pid {process.pid})")
        if self._pg_ctl is not None and self._pg_data is not None:
            pg_ctl, data, self._pg_ctl = self._pg_ctl, self._pg_data, None
            done = self._run_as_service_user(
                [pg_ctl, "stop", "-D", str(data), "-m", "fast", "-w", "-t", "60"], data.parent
            )
            if done.returncode == 0:
                self._log(f"PostgreSQL: stopped the private server in {data}")
            else:
                self._log(f"PostgreSQL: pg_ctl stop failed: {done.stderr.strip()}")
        if self._pg_socket_dir is not None:
            shutil.rmtree(self._pg_socket_dir, ignore_errors=True)
            self._pg_socket_dir = None
        self.urls.clear()

    def stop_postgres(self, *, mode: str = "immediate") -> None:
        """Stop the private PostgreSQL (``pg_ctl stop -m mode``) until ``resume_postgres``.

        With ``immediate`` every connection is cut and the next start recovers from the WAL
        as after a crash: the fault-injection suite's restart. InfraError when none runs here.
        """
        if self._pg_ctl is None or self._pg_data is None:
            raise InfraError("no private PostgreSQL runs here")
        self._pg_ctl_checked(["stop", "-D", str(self._pg_data), "-m", mode, "-w", "-t", "60"])

    def resume_postgres(self) -> None:
        """Start the private PostgreSQL again after ``stop_postgres``, on the same port."""
        if self._pg_ctl is None or self._pg_data is None:
            raise InfraError("no private PostgreSQL runs here")
        log_path = str(self._pg_data / "steno-postgres.log")
        self._pg_ctl_checked(
            ["start", "-D", str(self._pg_data), "-o", self._pg_options, "-l", log_path, "-w"]
        )

    def _pg_ctl_checked(self, arguments: list[str]) -> None:
        assert self._pg_ctl is not None and self._pg_data is not None
        done = self._run_as_service_user(
            [self._pg_ctl, *arguments], self._pg_data.parent, timeout=120
        )
        if done.returncode != 0:
            raise InfraError(f"pg_ctl {arguments[0]} failed: {done.stderr.strip() or done.stdout}")

    # PostgreSQL ----------------------------------------------------------------------------

    def _start_postgres(self, state_dir: Path, initdb: str, pg_ctl: str) -> str:
        self._user = _service_user()
        if self._user is not None:
            self._log(
                f"PostgreSQL: refuses to run as root, so the private server runs as user "
                f"{self._user.pw_name!r}"
            )
        data = self._data_dir(state_dir)
        if (data / "PG_VERSION").exists():
            port = self._running_port(pg_ctl, data)
            if port is not None:
                # A server left behind by an earlier run that did not stop it (killed): take
                # it over, and stop it with ours, rather than fail on its locked data folder.
                self._log(f"PostgreSQL: taking over the private server still running in {data}")
                self._pg_ctl, self._pg_data = pg_ctl, data
                return self._finish_postgres(port)
            self._log(f"PostgreSQL: reusing the private data folder {data}")
        else:
            self._initdb(initdb, data)
        log_path = data / "steno-postgres.log"
        socket_dir = Path(tempfile.mkdtemp(prefix="steno-pg-"))
        self._pg_socket_dir = socket_dir
        if self._user is not None:
            os.chown(socket_dir, self._user.pw_uid, self._user.pw_gid)
        error = ""
        for _attempt in range(_START_ATTEMPTS):
            port = _free_port()
            options = f"-p {port} -k {shlex.quote(str(socket_dir))} -c listen_addresses={_LOOPBACK}"
            done = self._run_as_service_user(
                [pg_ctl, "start", "-D", str(data), "-o", options, "-l", str(log_path), "-w"],
                data.parent,
                timeout=120,
            )
            if done.returncode == 0:
                self._log(f"PostgreSQL: started a private server on {_LOOPBACK}:{port} ({data})")
                self._pg_ctl, self._pg_data, self._pg_options = pg_ctl, data, options
                return self._finish_postgres(port)
            error = done.stderr.strip() or done.stdout.strip()
        raise InfraError(
            f"Could not start a private PostgreSQL in {data}: {error}\n"
            f"{log_path}:\n{_log_tail(log_path)}"
        )

    def _finish_postgres(self, port: int) -> str:
        url = f"postgresql+asyncpg://{PRIVATE_USER}@{_LOOPBACK}:{port}/{PRIVATE_DATABASE}"
        if _run_sync(ensure_database_exists(url)):
            self._log(f"PostgreSQL: created database {PRIVATE_DATABASE!r}")
        return url

    def _data_dir(self, state_dir: Path) -> Path:
        data = state_dir / "pg"
        user = self._user
        if user is None:
            return data
        # PostgreSQL refuses to run as root, so it runs as an unprivileged user, who must be
        # able to reach its data folder: often not the case inside root's private folders.
        data.mkdir(exist_ok=True)
        os.chown(data, user.pw_uid, user.pw_gid)
        if self._user_can_write(data):
            return data
        # Made just above and unusable: leaving it would suggest the data lives there.
        with contextlib.suppress(OSError):
            data.rmdir()
        digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]
        home = Path(tempfile.gettempdir(), f"steno-pg-{digest}")
        home.mkdir(mode=0o700, exist_ok=True)
        if home.stat().st_uid not in (0, user.pw_uid):
            raise InfraError(f"{home} belongs to another user; remove it and retry")
        os.chown(home, user.pw_uid, user.pw_gid)
        self._log(
            f"PostgreSQL: user {user.pw_name!r} cannot reach {data} (a parent folder is "
            f"private), so the private server keeps its data in {home / 'pg'} instead"
        )
        return home / "pg"

    def _user_can_write(self, folder: Path) -> bool:
        done = self._run_as_service_user(
            ["test", "-w", str(folder), "-a", "-x", str(folder)], Path("/")
        )
        return done.returncode == 0

    def _initdb(self, initdb: str, data: Path) -> None:
        # UTF8 explicitly: under a C/POSIX locale (common in containers) initdb would pick
        # SQL_ASCII, which accepts but cannot validate or compare non-ASCII transcript text.
        command = [initdb, "-D", str(data), "-A", "trust", "-U", PRIVATE_USER]
        command += ["-E", "UTF8", "--locale=C"]
        self._log(f"PostgreSQL: initialising a private data folder in {data}")
        done = self._run_as_service_user(command, data.parent, timeout=300)
        if done.returncode != 0:
            raise InfraError(
                f"initdb failed for {data}: {done.stderr.strip() or done.stdout.strip()}\n"
                f"If {data} holds something else, remove it and retry."
            )

    def _running_port(self, pg_ctl: str, data: Path) -> int | None:
        if self._run_as_service_user([pg_ctl, "status", "-D", str(data)], data.parent).returncode:
            return None
        try:
            # postmaster.pid's fourth line is the port the server listens on.
            return int((data / "postmaster.pid").read_text().splitlines()[3])
        except (OSError, IndexError, ValueError):
            return None

    def _run_as_service_user(
        self, command: list[str], cwd: Path, *, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        user = self._user
        return subprocess.run(
            command,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
        )

    # Redis ---------------------------------------------------------------------------------

    def _start_redis(self, state_dir: Path, redis_server: str) -> str:
        folder = state_dir / "redis"
        folder.mkdir(exist_ok=True)
        log_path = folder / "redis.log"
        for _attempt in range(_START_ATTEMPTS):
            port = _free_port()
            url = f"redis://{_LOOPBACK}:{port}/0"
            with log_path.open("ab") as log_file:
                process = subprocess.Popen(
                    [
                        redis_server,
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--port",
                        str(port),
                        "--bind",
                        _LOOPBACK,
                        "--daemonize",
                        "no",
                        "--dir",
                        str(folder),
                    ],
                    cwd=folder,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            self._redis = process
            if self._wait_for_redis(process, url):
                self._log(f"Redis: started a private server on {_LOOPBACK}:{port}")
                return url
            self._redis = None
            if process.poll() is None:
                process.kill()
            process.wait()
        raise InfraError(f"Could not start a private Redis: {log_path}:\n{_log_tail(log_path)}")

    @staticmethod
    def _wait_for_redis(process: subprocess.Popen[bytes], url: str) -> bool:
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            if _run_sync(redis_answers(url, timeout=0.5)):
                return True
            time.sleep(0.05)
        return False


def _service_user() -> pwd.struct_passwd | None:
    """Return the unprivileged user to run PostgreSQL as, or None when not running as root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise InfraError(
        "PostgreSQL refuses to run as root, and there is no 'postgres' or 'nobody' user to run "
        "it as: run Steno as a normal user, or create one (`useradd --system postgres`)."
    )


# --- the decision ---------------------------------------------------------------------------


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
            _database_problem(database_url, timeout), _redis_problem(redis_url, timeout)
        )
        return db, rd

    db_problem, redis_problem = _run_sync(probe())
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
        created = _run_sync(ensure_database_exists(url))
    except _PG_PROBE_ERRORS as exc:
        # Not fatal here: a user without CREATEDB may still use a database made for it by
        # someone else; migrations will report a real problem with its full context.
        emit(f"PostgreSQL: could not create database {name!r}: {_describe(exc)}")
        return
    if created:
        emit(f"PostgreSQL: created database {name!r}")
