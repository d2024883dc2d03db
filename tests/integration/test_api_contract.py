"""The HTTP contract of ``/v1/jobs``: statuses, headers, bodies and error codes.

The app runs in process on the test database. Its publisher is replaced by one that only
records messages, so jobs stay queued whether or not worker processes run in this session,
and each test can check which task its submission would have sent.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import uuid
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.app import create_app
from service.core.db.models import Job, OutboxMessage
from service.core.routing import FETCH_AUDIO, TRANSCRIBE
from service.core.settings import Settings
from tests.audio import speak
from tests.conftest import TEST_OWNER, bearer

Sessions = async_sessionmaker[AsyncSession]
Client = AsyncTestClient[Any]
AUDIO_URL = "https://media.example.com/talks/keynote.mp3"


@dataclasses.dataclass(frozen=True)
class Published:
    """One message the app asked the broker to send."""

    task_name: str
    queue: str
    args: list[Any]
    time_limit: float | None


class RecordingPublisher:
    """Stands in for the broker: keeps every message instead of sending it."""

    def __init__(self) -> None:
        self.messages: list[Published] = []

    def publish(
        self,
        task_name: str,
        queue: str,
        args: list[Any],
        time_limit: float | None,
        enqueued_at: float | None = None,
    ) -> None:
        self.messages.append(Published(task_name, queue, args, time_limit))

    def for_job(self, job_id: str) -> list[Published]:
        """The messages about one job."""
        return [m for m in self.messages if m.args == [job_id]]


@asynccontextmanager
async def steno_client(
    settings: Settings, key: str
) -> AsyncIterator[tuple[Client, RecordingPublisher]]:
    """The real app under ``settings``, with a recording publisher in place of the broker.

    The submit-time URL check is off here (these URLs name no real server); it has its
    own tests in ``test_url_check.py``.
    """
    offline = dataclasses.replace(settings, url_check_timeout_seconds=0)
    async with AsyncTestClient(create_app(offline), timeout=60) as client:
        client.headers.update(bearer(key))
        publisher = RecordingPublisher()
        client.app.state.publisher = publisher
        yield client, publisher


@pytest.fixture(scope="module", autouse=True)
async def _no_backlog_left(sessions: Sessions) -> AsyncIterator[None]:
    """Cancel the jobs this module leaves queued (their messages are only recorded here).

    Otherwise the relay publishes them once the session's workers start, and the GPU worker
    transcribes a backlog of contract-test uploads ahead of (and, under the per-owner fair
    share, holding back) the jobs of the tests that follow.
    """
    started = datetime.now(UTC)
    yield
    async with sessions() as session, session.begin():
        await session.execute(
            update(Job)
            .where(Job.owner == TEST_OWNER, Job.status == "queued", Job.created_at >= started)
            .values(status="cancelled", finished_at=func.now(), progress_stage="cancelled")
        )


@pytest.fixture(scope="module")
async def quiet(
    settings: Settings, api_key: str
) -> AsyncIterator[tuple[Client, RecordingPublisher]]:
    async with steno_client(settings, api_key) as pair:
        yield pair


@pytest.fixture(scope="module")
def client(quiet: tuple[Client, RecordingPublisher]) -> Client:
    """The API; nothing it submits reaches a worker."""
    return quiet[0]


@pytest.fixture(scope="module")
def publisher(quiet: tuple[Client, RecordingPublisher]) -> RecordingPublisher:
    """What the API published."""
    return quiet[1]


@pytest.fixture(scope="module")
def speech_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few seconds of spoken English as 16 kHz mono WAV."""
    path = tmp_path_factory.mktemp("contract") / "speech.wav"
    return speak("Steno keeps the contract it publishes, word for word.", path)


@pytest.fixture(scope="module")
def speech(speech_file: Path) -> bytes:
    return speech_file.read_bytes()


@pytest.fixture(scope="module")
def speech_seconds(speech_file: Path) -> float:
    """The WAV header's duration, measured without ffprobe."""
    with wave.open(str(speech_file)) as audio:
        return audio.getnframes() / audio.getframerate()


async def upload(
    client: Client,
    data: bytes,
    *,
    filename: str = "speech.wav",
    content_type: str = "audio/wav",
    **fields: str,
) -> httpx.Response:
    """``POST /v1/jobs`` with a multipart body: the file and optional form fields."""
    return await client.post(
        "/v1/jobs", files={"file": (filename, data, content_type)}, data=fields
    )


async def submit_url(client: Client, **body: Any) -> httpx.Response:
    """``POST /v1/jobs`` with a JSON body."""
    return await client.post("/v1/jobs", json={"audio_url": AUDIO_URL, **body})


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    """The response is ``status`` with exactly ``{"code", "detail"}`` and a real detail."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "detail"}
    assert body["code"] == code, body
    assert isinstance(body["detail"], str)
    assert body["detail"].strip()


@dataclasses.dataclass(frozen=True)
class Footprint:
    """What a submission can leave behind: rows and stored audio."""

    jobs: int
    outbox: int
    audio_files: frozenset[str]


async def footprint(sessions: Sessions, settings: Settings) -> Footprint:
    async with sessions() as session:
        jobs = await session.scalar(select(func.count()).select_from(Job))
        # Rows of no job: a refused submit's job would show in ``jobs``; the session's relay
        # may stage new messages for older jobs meanwhile (a redrive), which are not ours.
        outbox = await session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(
                OutboxMessage.job_id.is_(None)
                | OutboxMessage.job_id.not_in(select(Job.id).scalar_subquery())
            )
        )
    folder = settings.audio_dir
    files = frozenset(p.name for p in folder.iterdir()) if folder.exists() else frozenset()
    return Footprint(jobs=jobs or 0, outbox=outbox or 0, audio_files=files)


async def job_row(sessions: Sessions, job_id: str) -> Job | None:
    async with sessions() as session:
        return await session.get(Job, uuid.UUID(job_id))


# --- submitting ---------------------------------------------------------------------------


async def test_an_upload_is_accepted_as_a_queued_job(
    client: Client,
    publisher: RecordingPublisher,
    sessions: Sessions,
    settings: Settings,
    speech: bytes,
    speech_seconds: float,
) -> None:
    # given spoken audio
    # when it is uploaded with no options
    response = await upload(client, speech)

    # then it is accepted: 202, a Location to poll, and the queued job in the body
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert uuid.UUID(job["id"])
    assert job["status"] == "queued"
    assert job["progress"] == {
        "stage": "queued",
        "percent": 0.0,
        "audio_seconds_done": 0.0,
        "eta_seconds": None,
    }
    assert job["error"] is None
    assert job["attempts"] == 0
    assert datetime.fromisoformat(job["created_at"]).tzinfo is not None
    assert job["started_at"] is None
    assert job["finished_at"] is None
    assert job["audio_seconds"] == pytest.approx(speech_seconds, abs=0.05)
    assert job["language"] is None
    assert job["model"] == "tiny.en"
    assert job["word_timestamps"] is False
    assert job["source"] == "upload"
    assert job["filename"] == "speech.wav"
    assert job["audio_url"] is None

    # and the audio is stored, and one transcription task was published for it
    row = await job_row(sessions, job["id"])
    assert row is not None and row.audio_path is not None
    assert Path(row.audio_path).read_bytes() == speech
    assert Path(row.audio_path).parent == settings.audio_dir
    assert publisher.for_job(job["id"]) == [
        Published(
            TRANSCRIBE.name,
            TRANSCRIBE.queue,
            [job["id"]],
            settings.transcribe_time_limit(row.audio_seconds),
        )
    ]


async def test_an_audio_url_is_accepted_as_a_queued_job(
    client: Client, publisher: RecordingPublisher
) -> None:
    # given the URL of some audio
    # when it is submitted as JSON
    response = await submit_url(client)

    # then the job waits for an IO worker to fetch it
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["source"] == "url"
    assert job["audio_url"] == AUDIO_URL
    assert job["audio_seconds"] is None
    assert job["filename"] is None
    assert job["model"] == "tiny.en"
    assert [(m.task_name, m.queue) for m in publisher.for_job(job["id"])] == [
        (FETCH_AUDIO.name, FETCH_AUDIO.queue)
    ]


async def test_get_returns_the_job_as_submitted(client: Client, speech: bytes) -> None:
    # given a submitted job
    submitted = (await upload(client, speech)).json()

    # when it is fetched through its Location
    response = await client.get(f"/v1/jobs/{submitted['id']}")

    # then it is the same job (a queued job's view may add an ETA once jobs have completed)
    assert response.status_code == 200
    fetched = response.json()
    eta = fetched["progress"].pop("eta_seconds")
    assert eta is None or eta >= 0
    submitted["progress"].pop("eta_seconds")
    assert fetched == submitted


@pytest.mark.parametrize("job_id", [str(uuid.uuid4()), "not-a-uuid", "12345"])
async def test_an_unknown_or_malformed_id_is_job_not_found(client: Client, job_id: str) -> None:
    # given an id that names no job
    # when the job, its transcript, its cancellation or its deletion is asked for
    # then each answers 404 job_not_found
    assert_error(await client.get(f"/v1/jobs/{job_id}"), 404, "job_not_found")
    assert_error(await client.get(f"/v1/jobs/{job_id}/transcript"), 404, "job_not_found")
    assert_error(await client.post(f"/v1/jobs/{job_id}/cancel"), 404, "job_not_found")
    assert_error(await client.delete(f"/v1/jobs/{job_id}"), 404, "job_not_found")


# --- options ------------------------------------------------------------------------------


async def test_upload_options_are_kept_on_the_job(
    client: Client, sessions: Sessions, speech: bytes
) -> None:
    # given a language, word timestamps and a prompt
    # when they are sent with an upload
    response = await upload(
        client,
        speech,
        language="en",
        word_timestamps="true",
        initial_prompt="  Steno, Litestar, Celery.  ",
    )

    # then the job carries them
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["language"] == "en"
    assert job["word_timestamps"] is True
    row = await job_row(sessions, job["id"])
    assert row is not None
    assert row.initial_prompt == "Steno, Litestar, Celery."


async def test_url_options_are_kept_on_the_job(client: Client, sessions: Sessions) -> None:
    # given options in the JSON body, the language by its name
    # when they are submitted
    response = await submit_url(
        client, language="English", word_timestamps=True, initial_prompt="Keynote."
    )

    # then the job carries them, the language as its code
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["language"] == "en"
    assert job["word_timestamps"] is True
    row = await job_row(sessions, job["id"])
    assert row is not None
    assert row.initial_prompt == "Keynote."


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"model": "large-v3"}, "unsupported_model"),
        ({"language": "klingon"}, "validation_error"),
        ({"language": "fr"}, "validation_error"),
        ({"model": "tiny.en", "language": "de"}, "validation_error"),
        ({"word_timestamps": "maybe"}, "validation_error"),
        ({"initial_prompt": "x" * 2001}, "validation_error"),
        ({"initial_prompt": "nul\x00byte"}, "validation_error"),
    ],
    ids=[
        "unserved-model",
        "unknown-language",
        "en-model-fr",
        "en-model-de",
        "bad-flag",
        "long-prompt",
        "nul-in-prompt",
    ],
)
async def test_unusable_options_are_refused_and_leave_nothing(
    client: Client,
    sessions: Sessions,
    settings: Settings,
    speech: bytes,
    fields: dict[str, str],
    code: str,
) -> None:
    # given options this deployment can't honour (it serves only tiny.en, English-only)
    before = await footprint(sessions, settings)

    # when they are sent with an upload, and (where JSON can carry them) with a URL
    by_upload = await upload(client, speech, **fields)
    by_url = None if "word_timestamps" in fields else await submit_url(client, **fields)

    # then each is 422 with the same code, and nothing is stored
    assert_error(by_upload, 422, code)
    if by_url is not None:
        assert_error(by_url, 422, code)
    assert await footprint(sessions, settings) == before


# --- listing ------------------------------------------------------------------------------


async def _all_ids_newest_first(sessions: Sessions) -> list[str]:
    """Every job of the session key's owner (what its listing may show), newest first."""
    query = (
        select(Job.id).where(Job.owner == TEST_OWNER).order_by(Job.created_at.desc(), Job.id.desc())
    )
    async with sessions() as session:
        return [str(job_id) for job_id in (await session.scalars(query)).all()]


async def test_jobs_are_listed_newest_first(client: Client) -> None:
    # given three jobs submitted one after another
    ids = [(await submit_url(client)).json()["id"] for _ in range(3)]

    # when the first page of three is listed
    response = await client.get("/v1/jobs", params={"limit": 3})

    # then it holds exactly those, the last submitted first, and points to more
    assert response.status_code == 200
    page = response.json()
    assert [job["id"] for job in page["items"]] == ids[::-1]
    assert page["next_cursor"]


async def test_paging_with_the_cursor_visits_every_job_once(
    client: Client, sessions: Sessions
) -> None:
    # given more jobs than fit on a page
    for _ in range(5):
        await submit_url(client)
    expected = await _all_ids_newest_first(sessions)

    # when every page of two is followed through next_cursor
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    pages = 0
    while True:
        page = (await client.get("/v1/jobs", params=params)).json()
        pages += 1
        assert len(page["items"]) <= 2
        seen += [job["id"] for job in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]

    # then together the pages are every job, in order, with no duplicate and no gap
    assert seen == expected
    assert len(set(seen)) == len(seen)
    assert pages == math.ceil(len(expected) / 2)


def _newest_first(items: list[dict[str, Any]]) -> bool:
    keys = [(datetime.fromisoformat(job["created_at"]), uuid.UUID(job["id"])) for job in items]
    return keys == sorted(keys, reverse=True)


async def test_the_status_filter_lists_only_that_status(client: Client) -> None:
    # given a queued job and a cancelled one
    queued = (await submit_url(client)).json()["id"]
    cancelled = (await submit_url(client)).json()["id"]
    assert (await client.post(f"/v1/jobs/{cancelled}/cancel")).status_code == 200

    # when jobs are listed by status
    listed: dict[str, list[dict[str, Any]]] = {}
    for status in ("queued", "cancelled"):
        response = await client.get("/v1/jobs", params={"status": status, "limit": 200})
        assert response.status_code == 200
        listed[status] = response.json()["items"]

    # then each list holds only jobs of its status, newest first
    for status, items in listed.items():
        assert {job["status"] for job in items} == {status}
        assert _newest_first(items)
    queued_ids = {job["id"] for job in listed["queued"]}
    cancelled_ids = {job["id"] for job in listed["cancelled"]}
    assert queued in queued_ids and queued not in cancelled_ids
    assert cancelled in cancelled_ids and cancelled not in queued_ids


def _cursor(moment: str) -> str:
    """A cursor in the API's encoding whose timestamp is ``moment``."""
    raw = f"{moment}|3f0c0000-0000-4000-8000-000000000000".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "bm90LWEtY3Vyc29y",
        "MjAyNHxub3QtYS11dWlk",
        _cursor("9999-12-31T23:00:00-05:00"),  # year 10000 in UTC
        _cursor("0001-01-01T00:30:00+01:00"),  # before year 1 in UTC
        _cursor("2024-01-01T00:00:00"),  # no time zone
    ],
)
async def test_a_cursor_this_api_did_not_issue_is_a_bad_request(
    client: Client, cursor: str
) -> None:
    # given a cursor that does not decode to a position
    # when it is used
    # then it is 400 bad_request
    assert_error(await client.get("/v1/jobs", params={"cursor": cursor}), 400, "bad_request")


@pytest.mark.parametrize("limit", ["0", "201", "-1", "ten"])
async def test_a_limit_out_of_range_is_a_validation_error(client: Client, limit: str) -> None:
    # given a page size outside 1..200
    # when jobs are listed with it
    # then it is 422
    assert_error(await client.get("/v1/jobs", params={"limit": limit}), 422, "validation_error")


async def test_an_unknown_status_filter_is_a_validation_error(client: Client) -> None:
    # given a status that does not exist
    # when jobs are listed by it
    # then it is 422
    response = await client.get("/v1/jobs", params={"status": "sleeping"})
    assert_error(response, 422, "validation_error")


# --- transcript, cancel, delete -----------------------------------------------------------


async def test_the_transcript_of_a_queued_job_is_not_there_yet(
    client: Client, speech: bytes
) -> None:
    # given a job that has not run
    job_id = (await upload(client, speech)).json()["id"]

    # when its transcript is asked for, in any format
    # then it is 409 job_not_completed
    for fmt in ("json", "text", "srt"):
        response = await client.get(f"/v1/jobs/{job_id}/transcript", params={"format": fmt})
        assert_error(response, 409, "job_not_completed")


async def test_cancelling_a_queued_job_twice_leaves_it_cancelled(
    client: Client, speech: bytes
) -> None:
    # given a queued job
    job_id = (await upload(client, speech)).json()["id"]

    # when it is cancelled
    first = await client.post(f"/v1/jobs/{job_id}/cancel")

    # then it is cancelled and finished
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "cancelled"
    assert first.json()["finished_at"] is not None

    # and when it is cancelled again, nothing changes
    second = await client.post(f"/v1/jobs/{job_id}/cancel")
    assert second.status_code == 200, second.text
    assert second.json() == first.json()
    assert (await client.get(f"/v1/jobs/{job_id}")).json() == first.json()


async def test_deleting_a_job_removes_it_and_its_audio(
    client: Client, sessions: Sessions, speech: bytes
) -> None:
    # given an uploaded job with its audio on disk
    job_id = (await upload(client, speech)).json()["id"]
    row = await job_row(sessions, job_id)
    assert row is not None and row.audio_path is not None
    audio = Path(row.audio_path)
    assert audio.exists()

    # when it is deleted
    response = await client.delete(f"/v1/jobs/{job_id}")

    # then it is gone: 204, then 404, no row, no outbox message, no file
    assert response.status_code == 204
    assert response.content == b""
    assert_error(await client.get(f"/v1/jobs/{job_id}"), 404, "job_not_found")
    assert await job_row(sessions, job_id) is None
    async with sessions() as session:
        outbox = await session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.job_id == uuid.UUID(job_id))
        )
    assert outbox == 0
    assert not audio.exists()
    assert_error(await client.delete(f"/v1/jobs/{job_id}"), 404, "job_not_found")


# --- documentation and liveness -----------------------------------------------------------


async def test_the_openapi_document_lists_every_endpoint(client: Client) -> None:
    # given the running API
    # when its OpenAPI document is read
    response = await client.get("/schema/openapi.json")

    # then every path of the contract is in it
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"post", "get"} <= set(paths["/v1/jobs"])
    assert {"get", "delete"} <= set(paths["/v1/jobs/{job_id}"])
    assert "get" in paths["/v1/jobs/{job_id}/transcript"]
    assert "post" in paths["/v1/jobs/{job_id}/cancel"]
    assert "get" in paths["/healthz"]
    # and both submit bodies are described, so the docs page can send them
    body = paths["/v1/jobs"]["post"]["requestBody"]["content"]
    assert body["multipart/form-data"]["schema"]["required"] == ["file"]
    assert body["application/json"]["schema"]["required"] == ["audio_url"]


@pytest.mark.parametrize("path", ["/schema", "/schema/swagger"])
async def test_the_docs_pages_are_html(client: Client, path: str) -> None:
    # given the running API
    # when a docs page is opened
    response = await client.get(path)

    # then it is an HTML page
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text.lower()


async def test_healthz_answers_while_the_process_is_up(client: Client) -> None:
    # given the running API
    # when liveness is probed
    response = await client.get("/healthz")

    # then it answers ok
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# --- bad input leaves nothing behind ------------------------------------------------------


@pytest.fixture
async def unchanged(sessions: Sessions, settings: Settings) -> AsyncIterator[None]:
    """Fails the test unless it left no job, no outbox row and no audio file behind."""
    before = await footprint(sessions, settings)
    yield
    assert await footprint(sessions, settings) == before


@pytest.mark.usefixtures("unchanged")
async def test_a_file_that_is_not_audio_is_invalid_audio(client: Client) -> None:
    # given text bytes declared as WAV
    # when they are uploaded
    response = await upload(client, b"these are meeting notes, not audio\n")

    # then it is 422 invalid_audio
    assert_error(response, 422, "invalid_audio")


@pytest.mark.usefixtures("unchanged")
async def test_an_empty_file_is_refused(client: Client) -> None:
    # given a file with no bytes
    # when it is uploaded
    # then it is 422 empty_file
    assert_error(await upload(client, b""), 422, "empty_file")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("content_type", ["text/plain", "image/png", "application/json"])
async def test_a_file_declared_as_not_audio_is_an_unsupported_media_type(
    client: Client, speech: bytes, content_type: str
) -> None:
    # given real audio declared with a type that can't hold audio
    # when it is uploaded
    response = await upload(client, speech, content_type=content_type)

    # then it is 415
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "headers", [{"content-type": "text/plain"}, {"content-type": "application/xml"}, {}]
)
async def test_a_body_neither_multipart_nor_json_is_an_unsupported_media_type(
    client: Client, headers: dict[str, str]
) -> None:
    # given a body of another (or no) type
    # when it is posted
    response = await client.post("/v1/jobs", content=f"audio_url={AUDIO_URL}", headers=headers)

    # then it is 415
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b'{"audio_url": ', 400, "bad_request"),
        (b"not json", 400, "bad_request"),
        (b"", 400, "bad_request"),
        (b'{"audio_url": "https://example.com/a.mp3", "speed": 2}', 422, "validation_error"),
        (b'{"language": "en"}', 422, "validation_error"),
        (b'{"audio_url": 42}', 422, "validation_error"),
        (
            b'{"audio_url": "https://example.com/a", "word_timestamps": "yes"}',
            422,
            "validation_error",
        ),
        (b'["https://example.com/a.mp3"]', 422, "validation_error"),
    ],
    ids=[
        "truncated",
        "not-json",
        "empty",
        "unknown-field",
        "no-url",
        "url-not-text",
        "flag-not-bool",
        "array",
    ],
)
async def test_a_json_body_that_is_not_a_submission_is_refused(
    client: Client, content: bytes, status: int, code: str
) -> None:
    # given a JSON body that is malformed (400) or of the wrong shape (422, like bad options)
    # when it is posted
    response = await client.post(
        "/v1/jobs", content=content, headers={"content-type": "application/json"}
    )

    # then it is refused with that status and code
    assert_error(response, status, code)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "url",
    [
        "ftp://x",
        "not a url",
        "http://",
        "file:///etc/passwd",
        "https://exa mple.com/a",
        "https://[::1/a",
        "https://example.com:99999/a",
        "https://example.com/a\x00b",
        "http://xn--zz.com/a",
        "http://ex\u00e4mple..com/a",
    ],
)
async def test_an_audio_url_that_is_not_http_is_an_invalid_url(client: Client, url: str) -> None:
    # given a URL Steno can't fetch
    # when it is submitted
    response = await client.post("/v1/jobs", json={"audio_url": url})

    # then it is 422 invalid_url
    assert_error(response, 422, "invalid_url")


@pytest.mark.usefixtures("unchanged")
async def test_a_multipart_body_without_a_file_is_a_validation_error(client: Client) -> None:
    # given a form with options but no audio
    # when it is posted
    response = await client.post(
        "/v1/jobs", files={"language": (None, "en")}, data={"model": "tiny.en"}
    )

    # then it is 422
    assert_error(response, 422, "validation_error")


@pytest.mark.usefixtures("unchanged")
async def test_a_multipart_body_without_a_boundary_is_a_bad_request(
    client: Client, speech: bytes
) -> None:
    # given a multipart content type that does not name its boundary
    # when a body is posted with it
    response = await client.post(
        "/v1/jobs", content=speech, headers={"content-type": "multipart/form-data"}
    )

    # then it is 400
    assert_error(response, 400, "bad_request")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "part_headers",
    [
        b'Content-Disposition: form-data; name="file"; filename="a\x00.wav"\r\n'
        b"Content-Type: audio/wav",
        b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\x00",
    ],
    ids=["filename", "content-type"],
)
async def test_a_nul_in_a_part_header_is_a_bad_request(
    client: Client, speech: bytes, part_headers: bytes
) -> None:
    # given real audio whose part headers carry a NUL (PostgreSQL text can't store one)
    content = b"--b\r\n" + part_headers + b"\r\n\r\n" + speech + b"\r\n--b--\r\n"

    # when it is uploaded
    response = await client.post(
        "/v1/jobs", content=content, headers={"content-type": "multipart/form-data; boundary=b"}
    )

    # then it is 400, not a database error
    assert_error(response, 400, "bad_request")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("after_the_audio", "detail"),
    [
        ([b'Content-Disposition: form-data; name="\xe5\x90\x8d\xe5\x89\x8d"'], "ASCII"),
        ([b'Content-Disposition: form-data; name="\xff"'], "UTF-8"),
        ([b'Content-Disposition: form-data; name="f%d"' % i for i in range(16)], "16 parts"),
    ],
    ids=["name-above-latin-1", "name-not-utf-8", "seventeen-parts"],
)
async def test_a_malformed_multipart_body_is_a_bad_request(
    client: Client, speech: bytes, after_the_audio: list[bytes], detail: str
) -> None:
    # given real audio followed by parts that break the form's rules (once a 500)
    audio = b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n'
    audio += b"Content-Type: audio/wav\r\n\r\n" + speech
    parts = [audio] + [headers + b"\r\n\r\nx" for headers in after_the_audio]
    content = b"".join(b"--b\r\n" + part + b"\r\n" for part in parts) + b"--b--\r\n"

    # when it is uploaded
    response = await client.post(
        "/v1/jobs", content=content, headers={"content-type": "multipart/form-data; boundary=b"}
    )

    # then it is 400 with a detail that names the rule, and nothing is kept
    assert_error(response, 400, "bad_request")
    assert detail in response.json()["detail"]


@pytest.mark.usefixtures("unchanged")
async def test_an_upload_cut_short_is_a_bad_request(client: Client, speech: bytes) -> None:
    # given a valid upload of real audio that stops halfway through the audio
    content, content_type = _multipart(speech)

    # when it is sent
    response = await client.post(
        "/v1/jobs", content=content[: len(content) // 2], headers={"content-type": content_type}
    )

    # then it is 400, not a job for half of the audio
    assert_error(response, 400, "bad_request")
    assert "ended before" in response.json()["detail"]


def _multipart(data: bytes) -> tuple[bytes, str]:
    """A multipart body carrying ``data`` as the file, and its content type."""
    request = httpx.Request(
        "POST", "http://steno/v1/jobs", files={"file": ("big.wav", data, "audio/wav")}
    )
    return request.read(), request.headers["content-type"]


@pytest.fixture(scope="module")
async def small_uploads(
    settings: Settings, api_key: str
) -> AsyncIterator[tuple[Client, RecordingPublisher]]:
    """The API with a 4 KiB upload limit."""
    small = dataclasses.replace(settings, max_upload_bytes=4096)
    async with steno_client(small, api_key) as pair:
        yield pair


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "size", [4097, 100 * 1024], ids=["one-byte-over", "beyond-the-announced-limit"]
)
@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "no-content-length"])
async def test_an_upload_over_the_limit_is_payload_too_large(
    small_uploads: tuple[Client, RecordingPublisher], size: int, announced: bool
) -> None:
    # given an upload larger than the limit, with or without a Content-Length announcing it
    client, publisher = small_uploads
    content, content_type = _multipart(b"\0" * size)
    request = client.build_request(
        "POST", "/v1/jobs", content=content, headers={"content-type": content_type}
    )
    if not announced:
        del request.headers["content-length"]

    # when it is sent
    response = await client.send(request)

    # then it is 413 and nothing is published
    assert_error(response, 413, "payload_too_large")
    assert publisher.messages == []


async def test_an_upload_of_exactly_the_limit_is_not_refused_for_its_size(
    small_uploads: tuple[Client, RecordingPublisher],
) -> None:
    # given a file of exactly the limit (not audio, so it fails later, on probing)
    client, _ = small_uploads
    content, content_type = _multipart(b"\0" * 4096)

    # when it is uploaded
    response = await client.post(
        "/v1/jobs", content=content, headers={"content-type": content_type}
    )

    # then it passes the size check and is judged as audio
    assert_error(response, 422, "invalid_audio")


@pytest.mark.usefixtures("unchanged")
async def test_audio_longer_than_the_limit_is_refused(
    settings: Settings, api_key: str, speech: bytes, speech_seconds: float
) -> None:
    # given an API that accepts one second of audio, and longer speech
    assert speech_seconds > 1.5
    short = dataclasses.replace(settings, max_audio_seconds=1.0)

    # when the speech is uploaded
    async with steno_client(short, api_key) as (client, publisher):
        response = await upload(client, speech)

    # then it is 422 audio_too_long and nothing is published
    assert_error(response, 422, "audio_too_long")
    assert publisher.messages == []


@pytest.mark.usefixtures("unchanged")
async def test_many_form_fields_beside_the_file_are_payload_too_large(
    client: Client, speech: bytes
) -> None:
    # given real audio sent with a great many large form fields
    fields = {f"field{i}": "x" * 60_000 for i in range(20)}

    # when it is uploaded
    response = await client.post(
        "/v1/jobs", files={"file": ("a.wav", speech, "audio/wav")}, data=fields
    )

    # then it is refused before the fields fill memory
    assert_error(response, 413, "payload_too_large")


# --- the web page ------------------------------------------------------------------------


async def test_the_page_and_its_assets_are_served_but_not_the_package(client: Client) -> None:
    # given the API with its web page
    # when the page, its assets and the package's Python source are asked for
    page = await client.get("/")
    script = await client.get("/static/app.js")
    source = await client.get("/static/__init__.py")

    # then the page and its assets come back, the source does not
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert script.status_code == 200 and b"/v1/jobs" in script.content
    assert source.status_code == 404
