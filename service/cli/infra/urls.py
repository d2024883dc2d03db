"""Read the configured PostgreSQL and Redis URLs: asyncpg's DSN, the database named, redaction."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.engine import make_url

__all__ = ["asyncpg_dsn", "database_name", "redact_url"]


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
