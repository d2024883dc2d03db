"""The OpenAI-compatible routes' HTTP contract, with the app in process and no workers.

The app's publisher only records messages, so each job stays queued until a test plays
the worker's part: it claims the job, publishes segment events and completes it (or
cancels it) while the request waits, exactly as a GPU worker would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.app import create_app
from service.core import transitions
from service.core.db.models import Job
from service.core.events.publish import emit
from service.core.events.schemas import Completed, Segment
from service.core.routing import TRANSCRIBE
from service.core.settings import Settings
from service.core.transcript import Transcript, TranscriptSegment
from tests.audio import speak
from tests.conftest import bearer, make_key
from tests.integration.test_api_contract import RecordingPublisher

Sessions = async_sessionmaker[AsyncSession]
Client = httpx.AsyncClient
TRANSCRIPTIONS = "/v1/audio/transcriptions"
TRANSLATIONS = "/v1/audio/translations"


@pytest.fixture(scope="module")
def owner_key(settings: Settings) -> tuple[str, str]:
    """A key of an owner of its own, so this module's jobs are easy to count."""
    owner = f"openai-{uuid.uuid4().hex[:8]}"
    return owner, make_key(settings, "openai-routes", owner=owner)


@pytest.fixture(scope="module")
async def app(
    settings: Settings, owner_key: tuple[str, str]
) -> AsyncIterator[tuple[Client, RecordingPublisher]]:
    """The API with a recording publisher, waiting at most 3 s for a job.

    It runs on this test's event loop (httpx's ASGI transport), so a test can play the
    worker while a request waits; Litestar's test client would block the loop instead.
    """
    quick = dataclasses.replace(settings, openai_wait_seconds=3.0, sse_heartbeat_seconds=1.0)
    app = create_app(quick)
    publisher = RecordingPublisher()
    started, stop = asyncio.Event(), asyncio.Event()

    async def serve() -> None:
        # The lifespan holds a task group: it is entered and left in this one task.
        async with app.lifespan():
            app.state.publisher = publisher
            started.set()
            await stop.wait()

    serving = asyncio.ensure_future(serve())
    await started.wait()
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://steno", headers=bearer(owner_key[1]), timeout=60
        ) as client:
            yield client, publisher
    finally:
        stop.set()
        await serving


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("openai") / "speech.wav"
    return speak("Hello from the compatible route.", path).read_bytes()


async def _post(client: Client, path: str, audio: bytes, **fields: Any) -> httpx.Response:
    return await client.post(path, files={"file": ("speech.wav", audio, "audio/wav")}, data=fields)


async def _jobs(sessions: Sessions, owner: str) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).where(Job.owner == owner)) or 0)


def _assert_openai_error(
    response: httpx.Response, status: int, code: str, param: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["param"] == param, error
    assert error["message"].strip()
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    return error


async def _next_job(publisher: RecordingPublisher, seen: int, timeout: float = 10.0) -> str:
    """The id of the job whose task the app publishes after the ``seen`` first messages."""
    deadline = time.monotonic() + timeout
    while len(publisher.messages) <= seen:
        assert time.monotonic() < deadline, "the app published no task"
        await asyncio.sleep(0.05)
    message = publisher.messages[seen]
    assert message.task_name == TRANSCRIBE.name
    job_id: str = message.args[0]
    return job_id


async def _finish(settings: Settings, sessions: Sessions, job_id: str, texts: list[str]) -> None:
    """Play the GPU worker: claim the job, publish its segments, store the transcript."""
    redis = Redis.from_url(settings.redis_url)
    try:
        async with sessions() as session, session.begin():
            claim = await transitions.claim_job(
                session, uuid.UUID(job_id), worker="test", lease_seconds=30, max_attempts=3
            )
        assert claim is not None
        segments = [
            TranscriptSegment(id=i, start=2.0 * i, end=2.0 * i + 1.5, text=text, tokens=[1, 2])
            for i, text in enumerate(texts)
        ]
        for segment in [*segments, segments[0]]:  # a repeated segment is said once
            event = Segment(
                job_id=job_id,
                id=segment.id,
                start=segment.start,
                end=segment.end,
                text=segment.text,
            )
            await emit(redis, None, settings, event)
        transcript = Transcript(
            text=" ".join(texts), language="en", duration=2.0 * len(texts), segments=segments
        )
        async with sessions() as session, session.begin():
            assert await transitions.complete_job(session, claim, transcript)
        await emit(redis, sessions, settings, Completed(job_id=job_id, language="en"))
    finally:
        await redis.aclose()


@pytest.mark.parametrize("path", [TRANSCRIPTIONS, TRANSLATIONS])
@pytest.mark.parametrize("authorization", [None, "Bearer stn_0123456789_" + "x" * 43])
async def test_a_bad_key_is_401_in_openais_shape(
    app: tuple[Client, RecordingPublisher], speech: bytes, path: str, authorization: str | None
) -> None:
    client, _ = app
    headers = {"Authorization": authorization or ""}
    response = await client.post(
        path,
        files={"file": ("a.wav", speech, "audio/wav")},
        data={"model": "whisper-1"},
        headers=headers,
    )
    _assert_openai_error(response, 401, "invalid_api_key")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "path,fields,status,code,param",
    [
        (TRANSCRIPTIONS, {"model": "whisper-9"}, 404, "model_not_found", "model"),
        (TRANSLATIONS, {"model": "whisper-1"}, 400, "validation_error", "model"),
        (TRANSLATIONS, {"model": "tiny.en"}, 400, "validation_error", "model"),
        (
            TRANSCRIPTIONS,
            {"response_format": "mp3"},
            400,
            "validation_error",
            "response_format",
        ),
        (TRANSCRIPTIONS, {"temperature": "1.5"}, 400, "validation_error", "temperature"),
        (
            TRANSCRIPTIONS,
            {"timestamp_granularities[]": "char"},
            400,
            "validation_error",
            "timestamp_granularities",
        ),
        (TRANSCRIPTIONS, {"language": "klingon"}, 400, "validation_error", "language"),
        (TRANSCRIPTIONS, {"stream": "maybe"}, 400, "validation_error", "stream"),
    ],
)
async def test_a_field_steno_cant_use_is_refused_before_any_job(
    app: tuple[Client, RecordingPublisher],
    sessions: Sessions,
    owner_key: tuple[str, str],
    speech: bytes,
    path: str,
    fields: dict[str, str],
    status: int,
    code: str,
    param: str,
) -> None:
    # given the owner's jobs so far (the session's default model is English-only tiny.en)
    client, _ = app
    before = await _jobs(sessions, owner_key[0])

    # when a request has a field Steno can't use
    response = await _post(client, path, speech, **{"model": "whisper-1", **fields})

    # then it is OpenAI's error naming the field, and no job was made
    _assert_openai_error(response, status, code, param)
    assert "steno-job-id" not in response.headers
    assert await _jobs(sessions, owner_key[0]) == before


async def test_a_body_that_is_not_multipart_is_400(app: tuple[Client, RecordingPublisher]) -> None:
    client, _ = app
    response = await client.post(TRANSCRIPTIONS, json={"model": "whisper-1"})
    _assert_openai_error(response, 400, "validation_error", "file")


async def test_the_answer_waits_for_the_job_and_names_it(
    app: tuple[Client, RecordingPublisher], settings: Settings, sessions: Sessions
) -> None:
    # given a transcription request in flight, with fields OpenAI has and Steno ignores
    client, publisher = app
    seen = len(publisher.messages)
    audio = speak("One two three.", Path(settings.data_dir) / f"{uuid.uuid4().hex}.wav")
    request = asyncio.ensure_future(
        client.post(
            TRANSCRIPTIONS,
            files={"file": ("talk.wav", audio.read_bytes(), "audio/wav")},
            data={
                "model": "whisper-1",
                "response_format": "verbose_json",
                "temperature": "0.4",
                "prompt": "A greeting.",
                "include[]": "logprobs",
                "chunking_strategy": "auto",
            },
        )
    )

    # when a worker transcribes the job
    job_id = await _next_job(publisher, seen)
    await _finish(settings, sessions, job_id, ["Hello there.", "General Kenobi."])
    response = await request

    # then the answer is OpenAI's verbose_json of the job named in the header
    assert response.status_code == 200, response.text
    assert response.headers["steno-job-id"] == job_id
    body = response.json()
    assert set(body) == {"task", "language", "duration", "text", "segments", "usage"}
    assert body["task"] == "transcribe" and body["language"] == "english"
    assert body["text"] == "Hello there. General Kenobi."
    assert [s["text"] for s in body["segments"]] == ["Hello there.", "General Kenobi."]
    assert body["usage"] == {"seconds": 4, "type": "duration"}
    # and the job carries the options, as any Steno job
    async with sessions() as session:
        job = await session.get(Job, uuid.UUID(job_id))
        assert job is not None
        assert (job.task, job.temperature, job.initial_prompt) == ("transcribe", 0.4, "A greeting.")
        assert job.word_timestamps is False


async def test_a_stream_sends_each_segment_as_it_comes_then_the_text(
    app: tuple[Client, RecordingPublisher], settings: Settings, sessions: Sessions, speech: bytes
) -> None:
    client, publisher = app
    seen = len(publisher.messages)

    async def read() -> tuple[httpx.Response, list[str]]:
        async with client.stream(
            "POST",
            TRANSCRIPTIONS,
            files={"file": ("a.wav", speech, "audio/wav")},
            data={"model": "whisper-1", "stream": "true"},
        ) as response:
            return response, [line async for line in response.aiter_lines()]

    reading = asyncio.ensure_future(read())
    job_id = await _next_job(publisher, seen)
    await _finish(settings, sessions, job_id, ["First part.", "Second part."])
    response, lines = await reading

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["steno-job-id"] == job_id
    events = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert [json.loads(e) for e in events[:-1]] == [
        {"type": "transcript.text.delta", "delta": "First part."},
        {"type": "transcript.text.delta", "delta": " Second part."},
        {"type": "transcript.text.done", "text": "First part. Second part."},
    ]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_job_that_does_not_end_in_time_is_504_and_goes_on(
    app: tuple[Client, RecordingPublisher],
    owner_key: tuple[str, str],
    speech: bytes,
    stream: bool,
) -> None:
    # given no worker takes the job (the wait is 3 s here)
    client, publisher = app
    seen = len(publisher.messages)

    # when a request waits for it
    started = time.monotonic()
    response = await _post(
        client, TRANSCRIPTIONS, speech, model="whisper-1", stream=str(stream).lower()
    )

    # then the answer names the job, says it goes on, and tells OpenAI's clients not to resend
    waited = time.monotonic() - started
    assert 3.0 <= waited < 15.0
    job_id = response.headers["steno-job-id"]
    assert await _next_job(publisher, seen) == job_id
    if stream:
        assert response.status_code == 200
        data = [ln for ln in response.text.splitlines() if ln.startswith("data: ")]
        assert len(data) == 1
        error = json.loads(data[0].removeprefix("data: "))["error"]
    else:
        error = _assert_openai_error(response, 504, "job_not_finished")
        assert response.headers["x-should-retry"] == "false"
    assert error["code"] == "job_not_finished" and job_id in error["message"]
    job = (await client.get(f"/v1/jobs/{job_id}", headers=bearer(owner_key[1]))).json()
    assert job["status"] == "queued"


async def test_a_job_cancelled_while_waited_for_is_409_job_cancelled(
    app: tuple[Client, RecordingPublisher], speech: bytes
) -> None:
    client, publisher = app
    seen = len(publisher.messages)
    request = asyncio.ensure_future(_post(client, TRANSCRIPTIONS, speech, model="whisper-1"))
    job_id = await _next_job(publisher, seen)

    cancelled = await client.post(f"/v1/jobs/{job_id}/cancel")
    response = await request

    assert cancelled.status_code == 200
    _assert_openai_error(response, 409, "job_cancelled")
    assert response.headers["steno-job-id"] == job_id
    assert response.headers["x-should-retry"] == "false"


async def test_the_claim_carries_task_and_temperature_to_the_worker(sessions: Sessions) -> None:
    # given a translation job with a temperature
    new = transitions.NewJob(
        id=uuid.uuid4(),
        owner="openai-claims",
        source="upload",
        model="base",
        task="translate",
        temperature=0.3,
        audio_path="/nonexistent.wav",
    )
    async with sessions() as session, session.begin():
        await transitions.create_job(session, new)

    # when a worker claims it
    async with sessions() as session, session.begin():
        claim = await transitions.claim_job(
            session, new.id, worker="test", lease_seconds=30, max_attempts=3
        )

    # then the claim has what whisper.transcribe needs
    assert claim is not None
    assert (claim.model, claim.task, claim.temperature) == ("base", "translate", 0.3)
