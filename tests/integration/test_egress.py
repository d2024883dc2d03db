"""The egress end to end in process: the API refuses forbidden audio URLs with 422
``url_forbidden`` and the IO worker's fetch fails such a job at once, both without
connecting anywhere refused; a presigned URL's query never shows in a detail or a log."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.app import create_app
from service.core import transitions
from service.core.db.models import Job
from service.core.egress import EgressClient
from service.core.settings import Settings
from tests.conftest import bearer
from tests.egress import LocalServer, RecordingNetwork, audio, redirect
from workers.io.fetch import fetch_audio

Sessions = async_sessionmaker[AsyncSession]
SECRET = "X-Amz-Signature=secret"


@asynccontextmanager
async def recording_api(
    settings: Settings, **overrides: Any
) -> AsyncIterator[tuple[AsyncTestClient[Any], RecordingNetwork]]:
    """The real app under ``settings`` with ``overrides``; its egress client records every
    connection it attempts (loopback ones are real, no other leaves this machine)."""
    changed = dataclasses.replace(settings, **overrides)
    network = RecordingNetwork()
    async with AsyncTestClient(create_app(changed), timeout=60) as client:
        client.headers.update(bearer(settings.api_key))
        made = client.app.state.http
        client.app.state.http = EgressClient.from_settings(
            changed,
            deadline=5.0,
            timeout=httpx.Timeout(5.0),
            user_agent="steno-test",
            network=network,
        )
        await made.aclose()
        yield client, network


@pytest.fixture(scope="module")
async def strict(
    settings: Settings,
) -> AsyncIterator[tuple[AsyncTestClient[Any], RecordingNetwork]]:
    """The API with the default egress: nothing private, loopback included, is allowed."""
    async with recording_api(settings, egress_allow=()) as pair:
        yield pair


@pytest.fixture(scope="module")
def remote() -> Iterator[LocalServer]:
    """A loopback server standing in for a remote audio host."""
    server = LocalServer()
    server.routes["/x.wav"] = audio()
    yield server
    server.close()


async def _job_count(sessions: Sessions) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Job)) or 0)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://2852039166/latest/meta-data/",
        "http://0xa9.0xfe.0xa9.0xfe/latest/meta-data/",
        "http://10.0.0.1/a.wav",
        "https://[fd00:ec2::254]/latest/meta-data/",
        "http://user:pass@media.example.com/a.wav",
    ],
)
async def test_a_forbidden_audio_url_is_422_url_forbidden_and_nothing_connects(
    strict: tuple[AsyncTestClient[Any], RecordingNetwork], sessions: Sessions, url: str
) -> None:
    # given the API and a URL naming a forbidden address (or carrying credentials)
    api, network = strict
    before, attempts = await _job_count(sessions), len(network.attempts)

    # when it is submitted
    response = await api.post("/v1/jobs", json={"audio_url": url})

    # then it is refused with url_forbidden, no job exists and no connection was attempted
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "url_forbidden"
    assert response.json()["detail"]
    assert await _job_count(sessions) == before
    assert len(network.attempts) == attempts


async def test_a_forbidden_address_is_refused_even_with_the_url_check_off(
    settings: Settings,
) -> None:
    # given the API with the submit-time URL check turned off
    async with recording_api(settings, egress_allow=(), url_check_timeout_seconds=0) as pair:
        api, network = pair

        # when a metadata URL is submitted
        response = await api.post(
            "/v1/jobs", json={"audio_url": "http://169.254.169.254/latest/meta-data/"}
        )

    # then it is still refused as written, without a connection
    assert response.status_code == 422
    assert response.json()["code"] == "url_forbidden"
    assert network.attempts == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "0x7f.1"])
async def test_a_loopback_audio_url_reaches_nothing_unless_loopback_is_allowed(
    strict: tuple[AsyncTestClient[Any], RecordingNetwork],
    api: AsyncTestClient[Any],
    remote: LocalServer,
    host: str,
) -> None:
    # given a local server holding audio
    url = remote.url("/x.wav", host=host)
    seen = len(remote.seen)

    # when its URL is submitted to an API that does not allow loopback
    refused = await strict[0].post("/v1/jobs", json={"audio_url": url})

    # then it is 422 url_forbidden and the server got no request from that API (the session's
    # IO worker may be fetching an earlier case's accepted job meanwhile: not counted)
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "url_forbidden"
    assert _checks(remote, since=seen, agent="steno-test") == 0

    # and the test settings' allow list (loopback) lets the same URL through
    if host == "127.0.0.1":
        accepted = await api.post("/v1/jobs", json={"audio_url": url})
        assert accepted.status_code == 202, accepted.text
        assert _checks(remote, since=seen, agent="url check") == 1


def _checks(remote: LocalServer, *, since: int, agent: str) -> int:
    """Requests the server got after ``since`` whose user agent mentions ``agent``."""
    return sum(agent in seen.headers.get("user-agent", "") for seen in remote.seen[since:])


async def test_a_redirect_to_a_forbidden_address_is_refused_at_submit(
    settings: Settings, remote: LocalServer
) -> None:
    # given an allowed server whose URL redirects to the metadata service
    remote.routes["/moved.wav"] = redirect("http://169.254.169.254/latest/meta-data/")
    async with recording_api(settings) as (api, network):
        # when it is submitted
        response = await api.post("/v1/jobs", json={"audio_url": remote.url("/moved.wav")})

    # then it is url_forbidden, and only the allowed server was connected to
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "url_forbidden"
    assert network.attempts == [("127.0.0.1", remote.port)]


async def test_a_presigned_query_never_shows_in_details_or_logs(
    strict: tuple[AsyncTestClient[Any], RecordingNetwork],
    api: AsyncTestClient[Any],
    remote: LocalServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given presigned URLs: one forbidden, one missing on an allowed server
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")
    forbidden = remote.url(f"/x.wav?{SECRET}")
    missing = remote.url(f"/gone.wav?{SECRET}")

    # when they are submitted
    responses = [
        await strict[0].post("/v1/jobs", json={"audio_url": forbidden}),
        await api.post("/v1/jobs", json={"audio_url": missing}),
    ]

    # then each is refused with a detail that names the URL without its query
    assert [r.json()["code"] for r in responses] == ["url_forbidden", "url_unreadable"]
    assert "/gone.wav" in responses[1].json()["detail"]
    assert not any("secret" in r.text for r in responses)
    assert "secret" not in caplog.text


async def _fetch(
    settings: Settings, sessions: Sessions, url: str, *allow: str
) -> tuple[str, Job, RecordingNetwork]:
    """Run the IO worker's fetch handler in process on a new URL job; returns its outcome,
    the job afterwards and the connections its egress attempted."""
    job_id = uuid.uuid4()
    async with sessions() as session, session.begin():
        await transitions.create_job(
            session,
            transitions.NewJob(
                id=job_id, owner="tests", source="url", model="tiny.en", audio_url=url
            ),
        )
    network = RecordingNetwork()
    egress_settings = dataclasses.replace(settings, egress_allow=allow)
    http = EgressClient.from_settings(
        egress_settings,
        deadline=10.0,
        timeout=httpx.Timeout(5.0),
        user_agent="steno-test",
        network=network,
    )
    redis = Redis.from_url(settings.redis_url)
    ctx: dict[str, Any] = {
        "settings": settings,
        "sessions": sessions,
        "http": http,
        "redis": redis,
        "job_try": 1,
        "job_id": f"egress-{job_id}",
    }
    try:
        outcome = await fetch_audio(ctx, str(job_id))
    finally:
        await http.aclose()
        await redis.aclose()
    async with sessions() as session:
        job = await session.get(Job, job_id)
    assert job is not None
    return outcome, job, network


async def test_the_worker_fails_a_forbidden_url_at_once_without_a_retry(
    settings: Settings, sessions: Sessions
) -> None:
    # given a queued job whose presigned URL names the metadata service
    url = f"http://169.254.169.254/latest/meta-data/?{SECRET}"

    # when the IO worker fetches it, on its first try
    outcome, job, network = await _fetch(settings, sessions, url)

    # then the job failed with url_forbidden (no Retry was raised), nothing was connected
    # to, and the detail holds no query
    assert outcome == "failed"
    assert (job.status, job.error_code) == ("failed", "url_forbidden")
    assert "secret" not in (job.error_detail or "")
    assert network.attempts == []


async def test_the_worker_refuses_a_redirect_to_a_forbidden_address(
    settings: Settings, sessions: Sessions, remote: LocalServer
) -> None:
    # given a job on an allowed server that redirects to a private address
    remote.routes["/inside.wav"] = redirect("http://10.0.0.1/a.wav", status=307)

    # when the IO worker fetches it
    outcome, job, network = await _fetch(
        settings, sessions, remote.url("/inside.wav"), "127.0.0.1/32"
    )

    # then the job failed with url_forbidden after connecting only to the allowed server
    assert outcome == "failed"
    assert (job.status, job.error_code) == ("failed", "url_forbidden")
    assert network.attempts == [("127.0.0.1", remote.port)]


async def test_the_worker_refuses_a_name_resolving_to_loopback(
    settings: Settings, sessions: Sessions, remote: LocalServer
) -> None:
    # given a job whose URL names localhost, with loopback not allowed
    seen = len(remote.seen)

    # when the IO worker fetches it
    outcome, job, network = await _fetch(settings, sessions, remote.url("/x.wav", host="localhost"))

    # then the job failed with url_forbidden and the server got no request
    assert (outcome, job.error_code) == ("failed", "url_forbidden")
    assert network.attempts == []
    assert len(remote.seen) == seen
