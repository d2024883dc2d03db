"""The reference for ``poll``: a bare Litestar handler, one asyncpg ``fetchrow``, msgspec JSON.

Served by granian exactly as the real API is (``--factory tests.bench.poll_bare:create_app``);
it reads its database from ``STENO_DATABASE_URL`` and checks no key.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import msgspec
from litestar import Litestar, Response, get
from litestar.datastructures import State


def create_app() -> Litestar:
    """The bare app; its pool is made in the lifespan."""
    dsn = os.environ["STENO_DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(dsn, min_size=10, max_size=30)
        try:
            yield
        finally:
            await app.state.pool.close()

    @get("/v1/jobs/{job_id:str}")
    async def job(job_id: str, state: State) -> Response[bytes]:
        row = await state.pool.fetchrow("SELECT * FROM jobs WHERE id = $1", uuid.UUID(job_id))
        return Response(msgspec.json.encode(dict(row)), media_type="application/json")

    @get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return Litestar(route_handlers=[job, healthz], lifespan=[lifespan])
