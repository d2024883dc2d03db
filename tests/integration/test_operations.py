"""Operator endpoints without workers: ``/metrics`` and ``/v1/queues`` need an admin key and
show a backlog put straight into PostgreSQL; a queued job's view has an ETA from its place;
a transition's counter moves once, when its transaction commits."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.app import create_app
from service.core import metrics, transitions
from service.core.db.models import Job
from service.core.settings import Settings
from tests.conftest import TEST_OWNER, bearer, make_key
from tests.integration.test_api_contract import RecordingPublisher

Client = AsyncTestClient[Any]
# A moment later than anything else in the database: these rows are the newest.
FUTURE = datetime.now(UTC) + timedelta(days=1)


@pytest.fixture(scope="module")
def admin(settings: Settings) -> dict[str, str]:
    """The header of an admin key."""
    return bearer(make_key(settings, "ops-metrics", admin=True))


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    """A fresh app per test (no rate cached yet) with the session's plain key, sending nothing."""
    offline = dataclasses.replace(settings, url_check_timeout_seconds=0)
    async with AsyncTestClient(create_app(offline), timeout=60) as http:
        http.app.state.publisher = RecordingPublisher()
        http.headers.update(bearer(settings.api_key))
        yield http


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _job(created: datetime, **fields: Any) -> Job:
    defaults: dict[str, Any] = {
        "id": uuid.uuid4(),
        "owner": TEST_OWNER,
        "status": "queued",
        "source": "upload",
        "model": "tiny.en",
        "progress_stage": "queued",
        "progress_percent": 0.0,
        "attempts": 0,
        "created_at": created,
        "updated_at": created,
    }
    return Job(**{**defaults, **fields})


async def test_operator_endpoints_need_an_admin_key(client: Client, admin: dict[str, str]) -> None:
    for path in ("/metrics", "/v1/queues"):
        # given no key, then a plain key, then an admin key
        missing = await client.get(path, headers={"Authorization": ""})
        plain = await client.get(path)
        allowed = await client.get(path, headers=admin)

        # then 401, 403 forbidden, 200
        assert missing.status_code == 401, (path, missing.text)
        assert plain.status_code == 403, (path, plain.text)
        assert plain.json()["code"] == "forbidden"
        assert allowed.status_code == 200, (path, allowed.text)
    assert allowed.json()["queues"][0]["name"] == "io"

    # and every answer was counted by its route template and status, with its latency
    found = samples((await client.get("/metrics", headers=admin)).text)
    for status in ("401", "403", "200"):
        labels = (("method", "GET"), ("route", "/v1/queues"), ("status", status))
        assert found[("steno_http_requests_total", labels)] >= 1, status
    timed = (("method", "GET"), ("route", "/v1/queues"))
    assert found[("steno_http_request_duration_seconds_count", timed)] >= 3


async def test_a_backlog_shows_in_the_gauges_the_queues_and_a_queued_jobs_eta(
    client: Client,
    admin: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # Given a measured rate (recent jobs took 0.5 s per second of audio), two queued uploads
    # (100 s, then 40 s of audio) and a URL job not fetched yet
    done = [
        _job(
            FUTURE,
            status="completed",
            audio_path="/nowhere",
            audio_seconds=20.0,
            started_at=FUTURE + timedelta(seconds=i),
            finished_at=FUTURE + timedelta(seconds=i + 10),
        )
        for i in range(50)
    ]
    first = _job(FUTURE, audio_path="/nowhere/a", audio_seconds=100.0)
    second = _job(FUTURE + timedelta(seconds=1), audio_path="/nowhere/b", audio_seconds=40.0)
    unfetched = _job(FUTURE, source="url", audio_url="https://example.com/a.mp3")
    rows = [*done, first, second, unfetched]
    async with sessions() as session, session.begin():
        session.add_all(rows)
    try:
        # when an operator scrapes /metrics and reads /v1/queues
        scrape = await client.get("/metrics", headers=admin)
        queues = (await client.get("/v1/queues", headers=admin)).json()["queues"]

        # then the depth gauges and the queues count them (and whatever else waits)
        found = samples(scrape.text)
        assert found[("steno_queue_depth_jobs", (("queue", "gpu"),))] >= 2
        assert found[("steno_queue_depth_audio_seconds", (("queue", "gpu"),))] >= 140.0
        assert found[("steno_queue_depth_jobs", (("queue", "io"),))] >= 1
        gpu = {q["name"]: q for q in queues}["gpu"]
        assert gpu["jobs_waiting"] >= 2 and gpu["audio_seconds_waiting"] >= 140.0, gpu
        assert gpu["realtime_factor"] == pytest.approx(0.5)
        if gpu["concurrency"]:
            assert gpu["eta_seconds_for_new_job"] >= 0.5 * 140 / gpu["concurrency"]
        assert {q["name"]: q for q in queues}["io"]["jobs_waiting"] >= 1

        # and each queued job's view has an ETA: what waits ahead of it, then its own audio;
        # the later one waits for the earlier one's 100 s as well (at 0.5 s per second)
        views = [(await client.get(f"/v1/jobs/{job.id}")).json() for job in (first, second)]
        etas = [view["progress"]["eta_seconds"] for view in views]
        # (the earlier job's audio is shared by the GPU slots: one per child, or the batch)
        slots = client.app.state.estimator.gpu_slots()
        assert slots >= 1
        assert etas[0] >= 0.5 * 100
        assert etas[1] - etas[0] == pytest.approx(0.5 * 100 / slots + 0.5 * 40 - 0.5 * 100, abs=0.2)
        unknown = (await client.get(f"/v1/jobs/{unfetched.id}")).json()
        assert unknown["progress"]["eta_seconds"] is None
    finally:
        async with sessions() as session, session.begin():
            await session.execute(delete(Job).where(Job.id.in_([row.id for row in rows])))


async def test_a_transition_counts_once_and_only_when_it_commits(
    client: Client, sessions: async_sessionmaker[AsyncSession]
) -> None:
    def value(name: str, **labels: str) -> float:
        return metrics.series().registry.get_sample_value(name, labels) or 0.0

    cancelled = ("steno_jobs_finished_total", {"status": "cancelled"})
    job = _job(datetime.now(UTC), audio_path="/nowhere/c", audio_seconds=5.0)
    async with sessions() as session, session.begin():
        session.add(job)
    before = value(cancelled[0], **cancelled[1])

    # given a record meant for a transaction that rolls back
    async with sessions() as session:
        metrics.on_commit(session, lambda: metrics.series().jobs_finished.labels("x").inc())
        await session.execute(select(1))
        await session.rollback()
        # when the next transaction of the same session commits
        await session.execute(select(1))
        await session.commit()
    # then nothing was recorded
    assert value("steno_jobs_finished_total", status="x") == 0.0

    # when a job is cancelled twice over the API
    first = await client.post(f"/v1/jobs/{job.id}/cancel")
    again = await client.post(f"/v1/jobs/{job.id}/cancel")

    # then the cancellation committed once and counted once, with its duration
    assert first.status_code == again.status_code == 200
    assert value(cancelled[0], **cancelled[1]) == before + 1
    assert value("steno_job_duration_seconds_count", status="cancelled") >= 1


async def test_failures_count_where_they_commit_and_never_twice(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    def failed() -> float:
        return (
            metrics.series().registry.get_sample_value(
                "steno_jobs_finished_total", {"status": "failed"}
            )
            or 0.0
        )

    # given a job claimed to the cap, and a URL job whose fetch failed
    capped = _job(datetime.now(UTC), audio_path="/nowhere/d", audio_seconds=5.0, attempts=3)
    unfetched = _job(datetime.now(UTC), source="url", audio_url="https://example.com/b.mp3")
    async with sessions() as session, session.begin():
        session.add_all([capped, unfetched])
    before = failed()

    # when each failing transition runs twice (a duplicate message)
    for _ in range(2):
        async with sessions() as session, session.begin():
            claim = await transitions.claim_job(
                session, capped.id, worker="w", lease_seconds=10, max_attempts=3
            )
            await transitions.fail_fetch(session, unfetched.id, code="url_unreadable", detail="x")
        assert claim is None

    # then each job counted one failure
    assert failed() == before + 2
