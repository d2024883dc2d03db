"""The settings of a benchmark's private stack, next to the configured PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import redis

from service.cli.processes import migrate
from service.core.settings import Settings, load_settings
from tests.conftest import free_port, recreate_database


def private_settings(database: str, redis_db: int, data_dir: Path, **overrides: Any) -> Settings:
    """Settings on a fresh, migrated database ``database`` and an emptied Redis database
    ``redis_db`` of the configured servers, with a free port, the configured Whisper weights
    and quiet logs; ``overrides`` on top."""
    base = load_settings()
    database_url = f"{base.database_url.rsplit('/', 1)[0]}/{database}"
    redis_url = f"{base.redis_url.rsplit('/', 1)[0]}/{redis_db}"
    asyncio.run(recreate_database(database_url))
    redis.Redis.from_url(redis_url).flushdb()
    settings = load_settings(
        {},
        **{
            "database_url": database_url,
            "redis_url": redis_url,
            "data_dir": data_dir,
            "model_dir": base.models_dir.resolve(),
            "port": free_port(),
            "log_level": "WARNING",
            **overrides,
        },
    )
    migrate(settings)
    return settings
