"""When PostgreSQL or Redis does not answer: clear 503s, never a stack trace."""

from __future__ import annotations

import dataclasses
import socket

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.core.settings import Settings


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/3f0c0000-0000-4000-8000-000000000000"),
        ("POST", "/v1/jobs"),
        ("POST", "/v1/jobs/3f0c0000-0000-4000-8000-000000000000/cancel"),
        ("DELETE", "/v1/jobs/3f0c0000-0000-4000-8000-000000000000"),
    ],
)
async def test_a_database_outage_answers_503_with_a_code(
    settings: Settings, method: str, path: str
) -> None:
    # Given an API whose PostgreSQL does not answer
    down = dataclasses.replace(
        settings,
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{_dead_port()}/steno",
        url_check_timeout_seconds=0,
    )
    async with AsyncTestClient(create_app(down)) as client:
        # when a client calls it (with a well-formed key: checking it needs the database)
        client.headers["Authorization"] = "Bearer stn_0123456789_" + "k" * 43
        body = {"audio_url": "http://127.0.0.1:9/a.wav"} if method == "POST" else None
        response = await client.request(method, path, json=body)

    # then it answers 503 database_unavailable, with no traceback in the body
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "database_unavailable"
    assert "Traceback" not in response.text


async def test_readyz_names_what_is_down(settings: Settings) -> None:
    # Given an API whose PostgreSQL and Redis both do not answer
    down = dataclasses.replace(
        settings,
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{_dead_port()}/steno",
        redis_url=f"redis://127.0.0.1:{_dead_port()}/0",
        broker_url=f"redis://127.0.0.1:{_dead_port()}/0",
        publish_timeout_seconds=0.5,
    )
    async with AsyncTestClient(create_app(down)) as client:
        # when readiness is probed
        response = await client.get("/readyz")
        live = await client.get("/healthz")

    # then readiness fails and says which checks failed; liveness still answers
    assert response.status_code == 503
    body = response.json()
    assert body["ready"] is False
    assert body["database"]["ok"] is False and "PostgreSQL" in body["database"]["detail"]
    assert body["redis"]["ok"] is False and "Redis" in body["redis"]["detail"]
    assert body["workers"] == {"io": [], "gpu": []}
    assert live.status_code == 200
