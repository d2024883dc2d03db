"""URL helpers and binary discovery of service.cli.infra, which need no running server."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli.infra import (
    InfraError,
    PrivateServices,
    asyncpg_dsn,
    database_name,
    find_binary,
    host,
    redact_url,
)


def test_asyncpg_dsn_strips_the_driver() -> None:
    url = "postgresql+asyncpg://steno@127.0.0.1:5433/steno"
    assert asyncpg_dsn(url) == "postgresql://steno@127.0.0.1:5433/steno"


def test_asyncpg_dsn_can_name_another_database_and_keeps_credentials() -> None:
    url = "postgresql+asyncpg://u:p%40ss@db.example:5432/steno?ssl=require"
    assert asyncpg_dsn(url, database="postgres") == (
        "postgresql://u:p%40ss@db.example:5432/postgres?ssl=require"
    )


def test_asyncpg_dsn_rejects_other_backends() -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        asyncpg_dsn("sqlite+aiosqlite:///x.db")


def test_database_name() -> None:
    assert database_name("postgresql+asyncpg://u@h/steno") == "steno"
    with pytest.raises(ValueError, match="names no database"):
        database_name("postgresql+asyncpg://u@h")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
        ("postgresql+asyncpg://u:secret@h:5432/db", "postgresql+asyncpg://u:***@h:5432/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_find_binary_prefers_a_sibling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for name in ("initdb", "pg_ctl"):
            path = tmp_path / folder / name
            path.write_text("#!/bin/sh\n")
            path.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "a"))
    assert find_binary("pg_ctl") == str(tmp_path / "a" / "pg_ctl")
    assert find_binary("pg_ctl", next_to=str(tmp_path / "b" / "initdb")) == str(
        tmp_path / "b" / "pg_ctl"
    )


def test_missing_binaries_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(host, "_POSTGRES_BIN_PATTERNS", ())
    with pytest.raises(InfraError) as caught:
        PrivateServices().start(tmp_path / "state", need_postgres=True, need_redis=True)
    message = str(caught.value)
    assert "apt-get install postgresql redis-server" in message
    assert "brew install postgresql redis" in message
    assert not (tmp_path / "state").exists()  # checked before anything was started

    with pytest.raises(InfraError, match="apt-get install redis-server`"):
        PrivateServices().start(tmp_path / "state", need_postgres=False, need_redis=True)
