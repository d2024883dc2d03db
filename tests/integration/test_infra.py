"""Finding the machine's PostgreSQL and Redis, and starting private ones when none answers.

Needs the machine's PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres) and Redis at
127.0.0.1:6379, plus initdb, pg_ctl and redis-server for the private-server tests.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from service.cli.infra import (
    PrivateServices,
    asyncpg_dsn,
    database_problem,
    ensure_database_exists,
    redis_answers,
    redis_problem,
    resolve_services,
)
from tests.conftest import free_port

MACHINE_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
MACHINE_REDIS_URL = "redis://127.0.0.1:6379/0"


def _answers(database_url: str, redis_url: str) -> tuple[bool, bool]:
    async def both() -> tuple[bool, bool]:
        return await database_problem(database_url) is None, await redis_answers(redis_url)

    return asyncio.run(both())


def _database_answers(url: str) -> bool:
    return asyncio.run(database_problem(url)) is None


@pytest.fixture
def lines() -> list[str]:
    return []


@pytest.fixture
def cleanup_data_dirs(tmp_path: Path) -> Iterator[list[Path]]:
    """Data folders to remove afterwards: as root they may live outside tmp_path."""
    dirs: list[Path] = []
    yield dirs
    for data in dirs:
        if not data.is_relative_to(tmp_path):
            shutil.rmtree(data.parent, ignore_errors=True)


def test_machine_services_are_used_unchanged(tmp_path: Path, lines: list[str]) -> None:
    database_url, redis_url, services = resolve_services(
        MACHINE_DATABASE_URL, MACHINE_REDIS_URL, tmp_path / "state", log=lines.append
    )
    assert (database_url, redis_url, services) == (MACHINE_DATABASE_URL, MACHINE_REDIS_URL, None)
    assert not (tmp_path / "state").exists()
    assert len(lines) == 2
    assert lines[0].startswith("PostgreSQL: using the server at")
    assert lines[1].startswith("Redis: using the server at")


def test_unreachable_services_are_started_privately_and_stopped(
    tmp_path: Path, lines: list[str], cleanup_data_dirs: list[Path]
) -> None:
    dead_database = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/steno"
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    database_url, redis_url, services = resolve_services(
        dead_database, dead_redis, tmp_path / "state", log=lines.append
    )
    assert services is not None
    with services:
        assert services.postgres_data_dir is not None
        cleanup_data_dirs.append(services.postgres_data_dir)
        assert database_url != dead_database
        assert database_url.startswith("postgresql+asyncpg://steno@127.0.0.1:")
        assert database_url.endswith("/steno")
        assert redis_url.startswith("redis://127.0.0.1:")
        assert redis_url != dead_redis
        assert _answers(database_url, redis_url) == (True, True)

        async def query() -> str:
            conn = await asyncpg.connect(asyncpg_dsn(database_url))
            try:
                # The target database exists and holds non-ASCII text faithfully.
                value: str = await conn.fetchval("SELECT $1::text", "Grüße 世界")
                assert await conn.fetchval("SHOW server_encoding") == "UTF8"
                return value
            finally:
                await conn.close()

        assert asyncio.run(query()) == "Grüße 世界"
    assert _answers(database_url, redis_url) == (False, False)
    assert services.postgres_data_dir is None
    assert any("nothing usable at" in line and "PostgreSQL" in line for line in lines)
    assert any("Redis: started a private server" in line for line in lines)


def test_private_postgres_reuses_and_takes_over_its_data_folder(
    tmp_path: Path, lines: list[str], cleanup_data_dirs: list[Path]
) -> None:
    state = tmp_path / "state"
    with PrivateServices(log=lines.append) as first:
        first.start(state, need_postgres=True, need_redis=False)
        assert first.postgres_data_dir is not None
        cleanup_data_dirs.append(first.postgres_data_dir)
    assert any("initialising" in line for line in lines)

    lines.clear()
    orphan = PrivateServices(log=lines.append)
    url = orphan.start(state, need_postgres=True, need_redis=False)["database_url"]
    assert any("reusing the private data folder" in line for line in lines)
    assert not any("initialising" in line for line in lines)

    # The orphan is never stopped, as if its process had been killed: the next start must
    # take the still-running server over instead of failing on the locked data folder.
    with PrivateServices(log=lines.append) as heir:
        assert heir.start(state, need_postgres=True, need_redis=False)["database_url"] == url
        assert any("taking over" in line for line in lines)
        assert _database_answers(url)
    assert not _database_answers(url)
    orphan.stop()  # its server is gone already: reports that, does not raise


async def test_probes_tell_usable_servers_from_dead_or_foreign_ones() -> None:
    assert await database_problem(MACHINE_DATABASE_URL) is None
    missing_database = "postgresql+asyncpg://postgres@127.0.0.1:5432/no_such_db_xyz"
    assert await database_problem(missing_database) is None
    assert await redis_problem(MACHINE_REDIS_URL) is None
    assert await redis_answers(MACHINE_REDIS_URL)
    dead = free_port()
    assert await database_problem(f"postgresql+asyncpg://postgres@127.0.0.1:{dead}/x")
    assert await redis_problem(f"redis://127.0.0.1:{dead}/0")
    assert not await redis_answers(f"redis://127.0.0.1:{dead}/0")
    # Something answers, but not in the right protocol.
    assert await database_problem("postgresql+asyncpg://postgres@127.0.0.1:6379/x", 0.5)
    assert await redis_problem("redis://127.0.0.1:5432/0", 0.5)


async def test_ensure_database_exists_creates_once_and_survives_a_race() -> None:
    name = f"steno_test_{uuid.uuid4().hex[:12]}"
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    try:
        assert await ensure_database_exists(url) is True
        assert await ensure_database_exists(url) is False
        conn = await asyncpg.connect(asyncpg_dsn(url))
        await conn.close()
    finally:
        await _drop(name)

    raced = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}_race"
    try:
        results = await asyncio.gather(*(ensure_database_exists(raced) for _ in range(4)))
        assert sorted(results) == [False, False, False, True]
    finally:
        await _drop(f"{name}_race")


async def _drop(name: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(MACHINE_DATABASE_URL))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await conn.close()
