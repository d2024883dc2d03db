"""A private throwaway PostgreSQL: initdb and pg_ctl under a state folder that later runs reuse.

It binds to 127.0.0.1 on a free port, has superuser ``steno`` (trust auth) and a ``steno``
database. PostgreSQL refuses to run as root, so under root it runs as an unprivileged user.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from service.cli.infra.host import LOOPBACK, START_ATTEMPTS, InfraError, Log, free_port, log_tail
from service.cli.infra.probes import ensure_database_exists, run_sync

__all__ = ["PRIVATE_DATABASE", "PRIVATE_USER", "PrivatePostgres"]

PRIVATE_USER = "steno"
"""Superuser name of a private PostgreSQL (initdb -U), independent of the OS user."""
PRIVATE_DATABASE = "steno"
"""Database that a private PostgreSQL's URL names; start() creates it."""


class PrivatePostgres:
    """One private PostgreSQL server; its data folder persists under the state folder."""

    def __init__(self, initdb: str, pg_ctl: str, *, log: Log) -> None:
        """Prepare with binaries of one PostgreSQL version; nothing starts until start()."""
        self._initdb, self._pg_ctl, self._log = initdb, pg_ctl, log
        self._user: pwd.struct_passwd | None = None
        self._data: Path | None = None  # while a server started or taken over here runs
        self._socket_dir: Path | None = None
        self._options = ""

    @property
    def data_dir(self) -> Path | None:
        """The data folder while the server runs, else None."""
        return self._data

    def start(self, state_dir: Path) -> str:
        """Start a server on the data folder under ``state_dir`` (made when missing, reused
        otherwise, taken over when a killed run left it running); return its URL.

        Raises InfraError with the server's log when it does not start.
        """
        self._user = _service_user()
        if self._user is not None:
            self._log(
                f"PostgreSQL: refuses to run as root, so the private server runs as user "
                f"{self._user.pw_name!r}"
            )
        data = self._data_dir(state_dir)
        if (data / "PG_VERSION").exists():
            port = self._running_port(data)
            if port is not None:
                # A server left behind by an earlier run that did not stop it (killed): take
                # it over, and stop it with ours, rather than fail on its locked data folder.
                self._log(f"PostgreSQL: taking over the private server still running in {data}")
                self._data = data
                return self._finish(port)
            self._log(f"PostgreSQL: reusing the private data folder {data}")
        else:
            self._run_initdb(data)
        log_path = data / "steno-postgres.log"
        socket_dir = Path(tempfile.mkdtemp(prefix="steno-pg-"))
        self._socket_dir = socket_dir
        if self._user is not None:
            os.chown(socket_dir, self._user.pw_uid, self._user.pw_gid)
        error = ""
        for _attempt in range(START_ATTEMPTS):
            port = free_port()
            options = f"-p {port} -k {shlex.quote(str(socket_dir))} -c listen_addresses={LOOPBACK}"
            done = self._run_as_service_user(
                [self._pg_ctl, "start", "-D", str(data), "-o", options, "-l", str(log_path), "-w"],
                data.parent,
                timeout=120,
            )
            if done.returncode == 0:
                self._log(f"PostgreSQL: started a private server on {LOOPBACK}:{port} ({data})")
                self._data, self._options = data, options
                return self._finish(port)
            error = done.stderr.strip() or done.stdout.strip()
        raise InfraError(
            f"Could not start a private PostgreSQL in {data}: {error}\n"
            f"{log_path}:\n{log_tail(log_path)}"
        )

    def stop(self) -> None:
        """Stop the server (fast shutdown) if one runs here; safe to call more than once.

        A failing ``pg_ctl stop`` (the server is gone already) is reported, not raised.
        """
        if self._data is not None:
            data, self._data = self._data, None
            done = self._run_as_service_user(
                [self._pg_ctl, "stop", "-D", str(data), "-m", "fast", "-w", "-t", "60"],
                data.parent,
            )
            if done.returncode == 0:
                self._log(f"PostgreSQL: stopped the private server in {data}")
            else:
                self._log(f"PostgreSQL: pg_ctl stop failed: {done.stderr.strip()}")
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def pause(self, *, mode: str = "immediate") -> None:
        """Stop the server (``pg_ctl stop -m mode``) until ``resume``; InfraError when none runs."""
        data = self._running_data()
        self._pg_ctl_checked(["stop", "-D", str(data), "-m", mode, "-w", "-t", "60"])

    def resume(self) -> None:
        """Start the server again after ``pause``, on the same port."""
        data = self._running_data()
        log_path = str(data / "steno-postgres.log")
        self._pg_ctl_checked(["start", "-D", str(data), "-o", self._options, "-l", log_path, "-w"])

    def _running_data(self) -> Path:
        if self._data is None:
            raise InfraError("no private PostgreSQL runs here")
        return self._data

    def _pg_ctl_checked(self, arguments: list[str]) -> None:
        data = self._running_data()
        done = self._run_as_service_user([self._pg_ctl, *arguments], data.parent, timeout=120)
        if done.returncode != 0:
            raise InfraError(f"pg_ctl {arguments[0]} failed: {done.stderr.strip() or done.stdout}")

    def _finish(self, port: int) -> str:
        url = f"postgresql+asyncpg://{PRIVATE_USER}@{LOOPBACK}:{port}/{PRIVATE_DATABASE}"
        if run_sync(ensure_database_exists(url)):
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

    def _run_initdb(self, data: Path) -> None:
        # UTF8 explicitly: under a C/POSIX locale (common in containers) initdb would pick
        # SQL_ASCII, which accepts but cannot validate or compare non-ASCII transcript text.
        command = [self._initdb, "-D", str(data), "-A", "trust", "-U", PRIVATE_USER]
        command += ["-E", "UTF8", "--locale=C"]
        self._log(f"PostgreSQL: initialising a private data folder in {data}")
        done = self._run_as_service_user(command, data.parent, timeout=300)
        if done.returncode != 0:
            raise InfraError(
                f"initdb failed for {data}: {done.stderr.strip() or done.stdout.strip()}\n"
                f"If {data} holds something else, remove it and retry."
            )

    def _running_port(self, data: Path) -> int | None:
        status = [self._pg_ctl, "status", "-D", str(data)]
        if self._run_as_service_user(status, data.parent).returncode:
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
