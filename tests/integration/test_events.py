"""The SSE endpoint against a real API process, PostgreSQL and Redis; events are published
with the workers' own ``emit`` (the GPU path is covered end to end in tests/e2e)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.db.models import Job
from service.core.events import schemas as events
from service.core.events.publish import emit
from service.core.events.stream import Position, stream_key
from service.core.settings import Settings
from tests.conftest import bearer, start_api
from tests.sse import new_job, read_events

MAX_STREAMS = 4


@pytest.fixture(scope="module")
def sse_api(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real API process with short heartbeat and send timeout, and a small stream cap."""
    process, base = start_api(
        settings,
        tmp_path_factory.mktemp("sse-api"),
        sse_heartbeat_seconds=0.5,
        sse_send_timeout_seconds=1.0,
        sse_max_streams_per_key=MAX_STREAMS,
    )
    yield base
    process.stop()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def client(sse_api: str, api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sse_api, timeout=30, headers=bearer(api_key)) as http:
        yield http


async def _finish(sessions: async_sessionmaker[AsyncSession], job_id: str, **values: Any) -> None:
    """Set the job row's final state directly, as a worker whose event got lost would."""
    async with sessions() as session, session.begin():
        await session.execute(
            update(Job).where(Job.id == job_id).values(finished_at=Job.updated_at, **values)
        )


async def _publish_run(
    redis: Redis, sessions: async_sessionmaker[AsyncSession], settings: Settings, job_id: str
) -> None:
    for event in (
        events.Started(job_id=job_id, attempt=1, worker="gpu@test"),
        events.Progress(
            job_id=job_id,
            stage="transcribing",
            percent=50.0,
            audio_seconds_done=5.0,
            audio_seconds=10.0,
            eta_seconds=1.5,
        ),
        events.Segment(job_id=job_id, id=0, start=0.0, end=5.0, text="Hello there."),
        events.Completed(job_id=job_id, duration=10.0, language="en", segments=1),
    ):
        assert await emit(redis, sessions, settings, event) is not None


async def test_live_events_arrive_in_order_then_the_stream_closes(
    client: httpx.AsyncClient,
    redis: Redis,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    # Given a client following a queued job
    job_id = await new_job(sessions, audio_seconds=10.0)
    connected = asyncio.Event()
    reader = asyncio.create_task(read_events(client, job_id, connected=connected))
    await connected.wait()
    await asyncio.sleep(0.3)

    # when a worker publishes its run
    await _publish_run(redis, sessions, settings, job_id)

    # then the client gets each event once, in order, and the server ends the stream
    messages = await reader
    assert [m.event for m in messages] == [
        "queued",
        "started",
        "progress",
        "segment",
        "completed",
    ]
    positions = [Position.parse(m.id or "") for m in messages]
    assert positions == sorted(set(positions))
    progress = json.loads(messages[2].data)
    assert progress["stage"] == "transcribing"
    assert progress["percent"] == 50.0
    assert progress["audio_seconds_done"] == 5.0
    assert progress["audio_seconds"] == 10.0
    assert progress["eta_seconds"] == 1.5
    segment = json.loads(messages[3].data)
    assert (segment["start"], segment["end"], segment["text"]) == (0.0, 5.0, "Hello there.")


async def test_a_late_client_gets_the_history_and_a_resuming_one_exactly_what_it_missed(
    client: httpx.AsyncClient,
    redis: Redis,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    # Given a job whose run was published before anyone listened
    job_id = await new_job(sessions, audio_seconds=10.0)
    await _publish_run(redis, sessions, settings, job_id)

    # when a client connects, it gets the whole history, ending with the terminal event
    everything = await read_events(client, job_id)
    assert [m.event for m in everything][-4:] == ["started", "progress", "segment", "completed"]

    # and a client resuming after the progress event gets exactly the rest
    resumed = await read_events(client, job_id, last_event_id=everything[2].id)
    assert [(m.event, m.id) for m in resumed] == [(m.event, m.id) for m in everything[3:]]

    # and one resuming after the terminal event gets nothing more
    assert await read_events(client, job_id, last_event_id=everything[-1].id) == []


async def test_milestones_outlive_redis(
    client: httpx.AsyncClient,
    redis: Redis,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    # Given a finished job whose stream Redis then lost
    job_id = await new_job(sessions, audio_seconds=10.0)
    await _publish_run(redis, sessions, settings, job_id)
    before = await read_events(client, job_id)
    await redis.delete(stream_key(job_id))

    # when a client resumes after the first event, or connects afresh
    resumed = await read_events(client, job_id, last_event_id=before[0].id)
    fresh = await read_events(client, job_id)

    # then PostgreSQL's milestones, with their original ids, tell the story
    assert [(m.event, m.id) for m in resumed] == [
        (m.event, m.id) for m in before if m.event in ("started", "completed")
    ]
    assert [m.event for m in fresh] == ["queued", "started", "completed"]


async def test_a_job_finished_without_its_event_still_ends_the_stream(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Given a client following a queued job
    job_id = await new_job(sessions)
    connected = asyncio.Event()
    reader = asyncio.create_task(read_events(client, job_id, connected=connected))
    await connected.wait()

    # when the job fails with no event published (the row is the truth)
    await _finish(
        sessions, job_id, status="failed", error_code="invalid_audio", error_detail="not audio"
    )

    # then within a heartbeat the stream sends the failure and closes
    messages = await reader
    assert [m.event for m in messages] == ["queued", "failed"]
    assert json.loads(messages[-1].data) | {"at": 0} == {
        "kind": "failed",
        "job_id": job_id,
        "code": "invalid_audio",
        "detail": "not audio",
        "at": 0,
    }
    # and a client resuming after it is told nothing more
    assert await read_events(client, job_id, last_event_id=messages[-1].id) == []


async def test_cancelling_through_the_api_ends_the_stream(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    job_id = await new_job(sessions)
    connected = asyncio.Event()
    reader = asyncio.create_task(read_events(client, job_id, connected=connected))
    await connected.wait()

    assert (await client.post(f"/v1/jobs/{job_id}/cancel")).status_code == 200

    assert [m.event for m in await reader] == ["queued", "cancelled"]


async def test_cancelling_twice_publishes_one_cancelled_event(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], redis: Redis
) -> None:
    # given a queued job cancelled once
    job_id = await new_job(sessions)
    assert (await client.post(f"/v1/jobs/{job_id}/cancel")).status_code == 200

    # when it is cancelled again
    assert (await client.post(f"/v1/jobs/{job_id}/cancel")).status_code == 200

    # then its event stream holds a single cancelled event
    entries = await redis.xrange(stream_key(job_id))
    kinds = [fields[b"kind"].decode() for _, fields in entries]
    assert kinds.count("cancelled") == 1, kinds


async def test_heartbeats_come_at_a_steady_interval(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Given a stream of a job that publishes nothing (heartbeat every 0.5 s here)
    job_id = await new_job(sessions)
    comments: list[str] = []
    reader = asyncio.create_task(read_events(client, job_id, comments=comments))

    # when 2.2 s pass
    await asyncio.sleep(2.2)
    reader.cancel()

    # then about four heartbeat comments arrived
    assert 3 <= comments.count("heartbeat") <= 5, comments


async def test_unknown_job_and_bad_position_are_refused_before_the_stream(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    missing = await client.get("/v1/jobs/00000000-0000-0000-0000-000000000000/events")
    assert missing.status_code == 404
    assert missing.json()["code"] == "job_not_found"
    assert (await client.get("/v1/jobs/not-a-uuid/events")).status_code == 404

    job_id = await new_job(sessions)
    bad = await client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "junk"})
    assert bad.status_code == 400
    assert bad.json()["code"] == "bad_request"

    # A position past PostgreSQL's bigint once broke the stream after it had started.
    url = f"/v1/jobs/{job_id}/events"
    for huge in ("8077241331186334870404-1365", "1-99999999999999999999"):
        by_header = await client.get(url, headers={"Last-Event-ID": huge})
        by_query = await client.get(url, params={"last_event_id": huge})
        for refused in (by_header, by_query):
            assert refused.status_code == 400, refused.text
            assert refused.json()["code"] == "bad_request"

    # A bad query is refused even beside a good header, which would win (read as a stream:
    # were it accepted, a queued job's stream would not end).
    good_header, bad_query = {"Last-Event-ID": "46283"}, {"last_event_id": "junk"}
    async with client.stream("GET", url, headers=good_header, params=bad_query) as both:
        assert both.status_code == 400
        assert json.loads(await both.aread())["code"] == "bad_request"


async def _open_streams(client: httpx.AsyncClient, job_id: str, count: int) -> list[socket.socket]:
    """Raw connections holding open streams (answered 200), never read after the headers."""
    host, port = str(client.base_url).rstrip("/").removeprefix("http://").split(":")
    auth = client.headers["Authorization"]
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)))
        request = (
            f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n"
        )
        sock.sendall(request.encode())
        sock.settimeout(10)
        head = await asyncio.to_thread(sock.recv, 4096)
        assert head.startswith(b"HTTP/1.1 200"), head
        sockets.append(sock)
    return sockets


async def _status_of_one_more(client: httpx.AsyncClient, job_id: str) -> int:
    """The status a new stream gets (its body is not read)."""
    async with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        return response.status_code


async def test_streams_per_client_are_capped_and_given_back_when_clients_vanish(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Given a client holding as many streams as it may
    job_id = await new_job(sessions)
    held = await _open_streams(client, job_id, MAX_STREAMS)

    # then one more is refused with a stable code
    refused = await client.get(f"/v1/jobs/{job_id}/events")
    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_streams"

    # when those connections vanish, their slots come back
    for sock in held:
        sock.close()
    await asyncio.sleep(1.0)
    again = await _open_streams(client, job_id, MAX_STREAMS)
    for sock in again:
        sock.close()


async def test_a_client_that_stops_reading_is_dropped(
    client: httpx.AsyncClient,
    redis: Redis,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    # Given clients holding every stream slot but never reading
    job_id = await new_job(sessions)
    stalled = await _open_streams(client, job_id, MAX_STREAMS)
    for sock in stalled:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        # when the job publishes far more than their buffers hold
        text = "x" * 20_000
        for i in range(400):
            await emit(
                redis,
                None,
                settings,
                events.Segment(job_id=job_id, id=i, start=i, end=i, text=text),
            )
        # then after the send timeout (1 s) they are dropped and their slots come back
        deadline = asyncio.get_running_loop().time() + 15
        while (status := await _status_of_one_more(client, job_id)) == 429:
            assert asyncio.get_running_loop().time() < deadline, "stalled clients kept their slots"
            await asyncio.sleep(0.5)
        assert status == 200
    finally:
        for sock in stalled:
            sock.close()
