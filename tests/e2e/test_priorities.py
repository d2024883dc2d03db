"""Priorities and per-owner fairness on the GPU queue, measured with a real GPU worker (one child).

Each test prints the positions it measured (``-s`` shows them): the order in which the jobs
started on the worker.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.db.models import Job
from service.core.settings import Settings
from service.core.states import FINAL
from tests.audio import SENTENCES, speak
from tests.conftest import WorkerProcess, bearer, make_key


@pytest.fixture(scope="module")
def owner_keys(settings: Settings) -> dict[str, str]:
    """Two API keys of two owners (made outside the tests' event loop)."""
    return {
        name: make_key(settings, f"fair-{name}", owner=f"fair-{name}-{uuid.uuid4().hex[:6]}")
        for name in ("a", "b")
    }


async def _submit(client: AsyncTestClient[Any], clip: Path, key: str, **fields: str) -> str:
    with clip.open("rb") as audio:
        response = await client.post(
            "/v1/jobs",
            files={"file": (clip.name, audio, "audio/wav")},
            data=fields,
            headers=bearer(key),
        )
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    assert job["priority"] == fields.get("priority", "normal")
    return str(job["id"])


async def _wait(client: AsyncTestClient[Any], job_id: str, key: str) -> str:
    """Poll the job as its owner until it is final; its status."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = (await client.get(f"/v1/jobs/{job_id}", headers=bearer(key))).json()
        if job["status"] in FINAL:
            return str(job["status"])
        await asyncio.sleep(0.2)
    raise TimeoutError(f"job {job_id} not final after 120 s")


async def _start_order(
    sessions: async_sessionmaker[AsyncSession], ids: list[str]
) -> list[tuple[str, str]]:
    """(id, status) of the jobs that started, in the order they started."""
    async with sessions() as session:
        rows = (
            await session.execute(
                select(Job.id, Job.status)
                .where(Job.id.in_([uuid.UUID(i) for i in ids]), Job.started_at.is_not(None))
                .order_by(Job.started_at)
            )
        ).all()
    return [(str(row.id), row.status) for row in rows]


async def _cancel_rest(client: AsyncTestClient[Any], ids: list[str], key: str) -> None:
    for job_id in ids:
        await client.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(key))


async def test_a_high_job_overtakes_a_backlog_of_normal_ones(
    api: AsyncTestClient[Any],
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    workers: dict[str, WorkerProcess],
    owner_keys: dict[str, str],
    tmp_path: Path,
) -> None:
    # Given a backlog of normal jobs from one owner (its share in the lane, the rest held),
    # several times what the GPU worker runs at once (one child, or a batched worker's slots)
    slots = settings.gpu_task_slots
    clip = speak(SENTENCES[0], tmp_path / "short.wav")
    key = owner_keys["a"]
    backlog = [await _submit(api, clip, key) for _ in range(4 + 4 * slots)]

    # when a high job is submitted after them
    high = await _submit(api, clip, key, priority="high")

    # then it completes before most of the backlog
    assert await _wait(api, high, key) == "completed"
    for job_id in backlog:
        await _wait(api, job_id, key)
    order = [job_id for job_id, _ in await _start_order(sessions, [*backlog, high])]
    position = order.index(high) + 1
    print(f"\npriority: high job started {position} of {len(order)} (submitted last)")
    # At most the jobs running when it arrived, and those the worker had reserved (one per
    # slot), go first.
    assert position <= 2 * slots + 1, order


async def test_one_owners_backlog_does_not_starve_another_owners_job(
    api: AsyncTestClient[Any],
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    workers: dict[str, WorkerProcess],
    owner_keys: dict[str, str],
    tmp_path: Path,
) -> None:
    # Given owner A's backlog (30 jobs with one GPU slot, more with more slots), most of them
    # held in PostgreSQL past its share
    clip = speak(SENTENCES[0], tmp_path / "short.wav")
    slots = settings.gpu_task_slots
    backlog = [await _submit(api, clip, owner_keys["a"]) for _ in range(26 + 4 * slots)]

    # when owner B submits one job
    submitted = time.monotonic()
    single = await _submit(api, clip, owner_keys["b"])

    # then it completes while most of A's backlog still waits
    assert await _wait(api, single, owner_keys["b"]) == "completed"
    waited = time.monotonic() - submitted
    order = [job_id for job_id, _ in await _start_order(sessions, [*backlog, single])]
    position = order.index(single) + 1
    waiting = len(backlog) - (len(order) - 1)
    print(
        f"\nfairness: B's job started {position} of {len(backlog) + 1} after {waited:.1f} s;"
        f" {waiting} of A's {len(backlog)} had not started (share {settings.fair_share_per_owner})"
    )
    await _cancel_rest(api, backlog, owner_keys["a"])
    # Ahead of it at most: A's share in the lane, and what the worker runs and holds reserved
    # (a slot each: one child, or a batched worker's threads).
    assert position <= settings.fair_share_per_owner + 2 * slots + 1, order
    assert waiting >= len(backlog) // 2
