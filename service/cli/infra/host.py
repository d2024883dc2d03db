"""What this host gives a private server: its binaries (or what to install) and a free port.

Also ``InfraError``, what every part of the bootstrap raises when the host falls short.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LOOPBACK",
    "START_ATTEMPTS",
    "InfraError",
    "Log",
    "ServerBinaries",
    "find_binary",
    "find_server_binaries",
    "free_port",
    "log_tail",
]

Log = Callable[[str], None]
"""Receives one line per decision (what was found, started, stopped)."""

LOOPBACK = "127.0.0.1"
START_ATTEMPTS = 3
"""Tries, each on a fresh free port, before a private server counts as failing to start."""

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


@dataclass(frozen=True)
class ServerBinaries:
    """The binaries that start private servers; None for those not asked for."""

    initdb: str | None = None
    pg_ctl: str | None = None
    redis_server: str | None = None


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


def find_server_binaries(*, postgres: bool, redis: bool) -> ServerBinaries:
    """Find initdb and pg_ctl (one version) and/or redis-server, as asked.

    Raises InfraError naming the packages to install when any asked for is missing.
    """
    initdb = pg_ctl = redis_server = None
    missing: list[str] = []
    if postgres:
        initdb = find_binary("initdb")
        pg_ctl = find_binary("pg_ctl", next_to=initdb) if initdb else find_binary("pg_ctl")
        if not (initdb and pg_ctl):
            missing.append("postgres")
    if redis:
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
    return ServerBinaries(initdb, pg_ctl, redis_server)


def _install_hint(services: list[str]) -> str:
    debian = " ".join(_PACKAGES[service][0] for service in services)
    brew = " ".join(_PACKAGES[service][1] for service in services)
    return f"Debian/Ubuntu: `apt-get install {debian}`; macOS: `brew install {brew}`"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    # The kernel picks an unused port; another process could take it before the server binds,
    # which is why starts are retried on a fresh port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` of a server's log, for the error that says why it did not start."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
