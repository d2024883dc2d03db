"""Idempotent submits and content dedupe, in process on the test database.

The broker is replaced by a recording publisher, so jobs stay queued; a test that needs a
completed job completes it through the state machine, as a GPU worker would.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core import transitions
from service.core.db.models import IdempotencyKey, Job
from service.core.settings import Settings
from service.core.transcript import Transcript, TranscriptSegment
from service.jobs import reuse, submit
from tests.audio import speak
from tests.conftest import TEST_OWNER, bearer, make_key, start_api
from tests.integration.test_api_contract import RecordingPublisher, assert_error, steno_client

Client = AsyncTestClient[Any]
Sessions = async_sessionmaker[AsyncSession]
AUDIO_URL = "https://media.example.com/talks/idempotent.mp3"


@pytest.fixture(scope="module")
async def quiet(
    settings: Settings, api_key: str
) -> AsyncIterator[tuple[Client, RecordingPublisher]]:
    async with steno_client(settings, api_key) as pair:
        yield pair


@pytest.fixture(scope="module")
def client(quiet: tuple[Client, RecordingPublisher]) -> Client:
    return quiet[0]


@pytest.fixture(scope="module")
def speech_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speak("Say it once, mean it once.", tmp_path_factory.mktemp("idem") / "once.wav")


@pytest.fixture(scope="module")
def speech(speech_file: Path) -> bytes:
    return speech_file.read_bytes()


def _key() -> dict[str, str]:
    return {"Idempotency-Key": f"test-{uuid.uuid4()}"}


async def _upload(client: Client, audio: bytes, headers: dict[str, str], **fields: str) -> Any:
    return await client.post(
        "/v1/jobs", files={"file": ("once.wav", audio, "audio/wav")}, data=fields, headers=headers
    )


async def _count(sessions: Sessions, model: Any, *where: Any) -> int:
    async with sessions() as session:
        query = select(func.count()).select_from(model).where(*where)
        return int(await session.scalar(query) or 0)


async def test_the_same_key_and_request_answer_with_the_same_job(
    client: Client, sessions: Sessions, speech: bytes, settings: Settings
) -> None:
    # given an upload accepted with an Idempotency-Key
    key = _key()
    first = await _upload(client, speech, key, language="en")
    assert first.status_code == 202, first.text
    job_id = first.json()["id"]
    files_before = set(settings.audio_dir.iterdir())

    # when the client sends the very same request again (it never saw the answer)
    again = await _upload(client, speech, key, language="en")

    # then it gets the same job, 200, marked as a replay; nothing new is stored
    assert again.status_code == 200, again.text
    assert again.json()["id"] == job_id
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == f"/v1/jobs/{job_id}"
    assert await _count(sessions, Job, Job.id == uuid.UUID(job_id)) == 1
    assert set(settings.audio_dir.iterdir()) == files_before
    # and the audio's SHA-256 was stored on the job as it streamed in
    async with sessions() as session:
        row = await session.get(Job, uuid.UUID(job_id))
    assert row is not None and row.audio_sha256 == hashlib.sha256(speech).hexdigest()


@pytest.mark.parametrize(
    "change",
    [{"language": "fr"}, {"word_timestamps": "true"}, {"webhook_url": "http://127.0.0.1:9/h"}],
    ids=["language", "word_timestamps", "webhook_url"],
)
async def test_the_same_key_with_another_request_is_refused(
    client: Client, speech: bytes, change: dict[str, str]
) -> None:
    # given a key used for one request
    key = _key()
    assert (await _upload(client, speech, key)).status_code == 202
    # when it comes back with different audio or options
    other_audio = await _upload(client, speech + b"\0", key)
    other_options = await _upload(client, speech, key, **change)

    # then both are refused; the key still names its first job only
    assert_error(other_audio, 422, "idempotency_key_reused")
    if change.get("language") == "fr":  # tiny.en can't do French: refused before the key
        assert other_options.status_code == 422
    else:
        assert_error(other_options, 422, "idempotency_key_reused")


async def test_the_same_key_of_two_owners_makes_two_jobs(
    client: Client, settings: Settings
) -> None:
    # given two owners using the same key value
    other = await asyncio.to_thread(make_key, settings, "idem-other")
    key = _key()
    body = {"audio_url": AUDIO_URL}

    # when each submits with it
    mine = await client.post("/v1/jobs", json=body, headers=key)
    theirs = await client.post("/v1/jobs", json=body, headers={**key, **bearer(other)})

    # then each gets a job of its own
    assert (mine.status_code, theirs.status_code) == (202, 202)
    assert mine.json()["id"] != theirs.json()["id"]


@pytest.fixture(scope="module")
def live_api(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real API process (granian), its URL check off; no workers needed."""
    process, base = start_api(
        settings, tmp_path_factory.mktemp("idem-api"), url_check_timeout_seconds=0.0
    )
    yield base
    process.stop()


@pytest.mark.parametrize("kind", ["upload", "url"])
async def test_concurrent_submits_with_one_key_make_one_job(
    live_api: str, api_key: str, sessions: Sessions, speech: bytes, kind: str
) -> None:
    # given eight identical requests with one key, sent at the same moment over HTTP
    key = _key()
    async with httpx.AsyncClient(base_url=live_api, headers=bearer(api_key), timeout=60) as http:

        async def send() -> httpx.Response:
            if kind == "upload":
                files = {"file": ("once.wav", speech, "audio/wav")}
                return await http.post("/v1/jobs", files=files, headers=key)
            return await http.post("/v1/jobs", json={"audio_url": AUDIO_URL}, headers=key)

        answers = await asyncio.gather(*(send() for _ in range(8)))

    # then exactly one job was made: one 202, and the others answer with it (200)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 7 + [202], [a.text for a in answers]
    [job_id] = {a.json()["id"] for a in answers}
    row = IdempotencyKey.key == key["Idempotency-Key"]
    assert await _count(sessions, IdempotencyKey, row) == 1
    assert await _count(sessions, Job, Job.id == uuid.UUID(job_id)) == 1


async def test_two_commits_racing_on_one_key_leave_one_job(
    settings: Settings, sessions: Sessions
) -> None:
    # given two submits that both found the key unused and now commit their jobs at once
    key = f"race-{uuid.uuid4()}"
    submission = reuse.Submission(
        owner=TEST_OWNER,
        key_id=None,
        idempotency_key=key,
        fingerprint="f" * 64,
        options_digest="o" * 64,
        webhook_url=None,
        dedupe=False,
        audio_url=AUDIO_URL,
    )

    def new_job() -> transitions.NewJob:
        return transitions.NewJob(
            id=uuid.uuid4(), owner=TEST_OWNER, source="url", model="tiny.en", audio_url=AUDIO_URL
        )

    # when both transactions run concurrently
    first, second = await asyncio.gather(
        submit._enqueue(sessions, settings, new_job(), submission),
        submit._enqueue(sessions, settings, new_job(), submission),
    )

    # then one made the job and the other answers with it; the loser's job row rolled back
    assert sorted([first.reused or "made", second.reused or "made"]) == ["made", "replayed"]
    assert first.job.id == second.job.id
    assert await _count(sessions, Job, Job.id.in_([first.job.id, second.job.id])) == 1


async def test_an_expired_key_makes_a_new_job(client: Client, sessions: Sessions) -> None:
    # given a key used more than 24 hours ago
    key = _key()
    first = await client.post("/v1/jobs", json={"audio_url": AUDIO_URL}, headers=key)
    async with sessions() as session, session.begin():
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == key["Idempotency-Key"])
            .values(created_at=func.now() - timedelta(hours=25))
        )

    # when it is used again, for another request even
    again = await client.post(
        "/v1/jobs", json={"audio_url": AUDIO_URL, "language": "en"}, headers=key
    )

    # then it is a new job, and the key now names that one
    assert again.status_code == 202, again.text
    assert again.json()["id"] != first.json()["id"]
    replay = await client.post(
        "/v1/jobs", json={"audio_url": AUDIO_URL, "language": "en"}, headers=key
    )
    assert replay.json()["id"] == again.json()["id"]


@pytest.mark.parametrize("value", ["has space", "", "x" * 256, "tab\there"])
async def test_an_unusable_key_is_a_validation_error(client: Client, value: str) -> None:
    response = await client.post(
        "/v1/jobs", json={"audio_url": AUDIO_URL}, headers={"Idempotency-Key": value}
    )
    assert_error(response, 422, "validation_error")


async def _complete(sessions: Sessions, job_id: str) -> None:
    """Finish the job as a GPU worker would."""
    async with sessions() as session, session.begin():
        claim = await transitions.claim_job(
            session, uuid.UUID(job_id), worker="t", lease_seconds=60, max_attempts=3
        )
        assert claim is not None
        text = "say it once mean it once"
        segment = TranscriptSegment(id=0, start=0.0, end=1.0, text=text)
        assert await transitions.complete_job(
            session, claim, Transcript(text=text, language="en", duration=1.0, segments=[segment])
        )


async def test_dedupe_answers_with_a_completed_job_of_the_same_audio_and_options(
    client: Client, sessions: Sessions, speech: bytes
) -> None:
    # given a completed job of this audio with word timestamps
    done = (await _upload(client, speech, {}, word_timestamps="true")).json()["id"]
    await _complete(sessions, done)

    # when the same audio is submitted with dedupe, with other options, and without dedupe
    same = await _upload(client, speech, {}, word_timestamps="true", dedupe="true")
    other_options = await _upload(client, speech, {}, dedupe="true")
    no_dedupe = await _upload(client, speech, {}, word_timestamps="true")

    # then only the first reuses the completed job (200, marked); the others make new jobs
    assert same.status_code == 200, same.text
    assert same.json()["id"] == done and same.json()["status"] == "completed"
    assert same.headers["steno-deduplicated"] == "true"
    assert other_options.status_code == 202 and other_options.json()["id"] != done
    assert no_dedupe.status_code == 202 and no_dedupe.json()["id"] != done


async def test_dedupe_of_a_url_job_matches_the_same_url(client: Client, sessions: Sessions) -> None:
    # given a completed job of a URL
    url = f"https://media.example.com/{uuid.uuid4()}.mp3"
    done = (await client.post("/v1/jobs", json={"audio_url": url})).json()["id"]
    await _complete(sessions, done)

    # when the URL is submitted again with dedupe (its bytes are not fetched by the API)
    again = await client.post("/v1/jobs", json={"audio_url": url, "dedupe": True})

    # then the completed job answers
    assert again.status_code == 200, again.text
    assert again.json()["id"] == done
