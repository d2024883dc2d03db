"""The HTTP contract of ``/v1/speakers`` and of ``known_speakers`` on submit.

The app runs in process on the test database, with a publisher that only records messages:
no job made here reaches a worker. Each test's owner is its own, so speakers never collide.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import uuid
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.app import create_app
from service.auth.keys import create_key
from service.core.db.models import Job, Speaker
from service.core.settings import Settings
from tests.conftest import bearer

Sessions = async_sessionmaker[AsyncSession]
Client = AsyncTestClient[Any]
OWNER_PREFIX = "speakers-"


class RecordingPublisher:
    """Stands in for the broker: keeps the task names it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def publish(self, task_name: str, queue: str, args: list[Any], *_: Any, **__: Any) -> None:
        self.sent.append(task_name)


def tone(path: Path, seconds: float) -> Path:
    """A 16 kHz mono WAV of a 220 Hz tone (enrolment only measures it: no voice needed)."""
    rate = 16_000
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        samples = (
            int(8000 * math.sin(2 * math.pi * 220 * n / rate)) for n in range(int(rate * seconds))
        )
        out.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("speaker-clips")
    return {
        name: tone(folder / f"{name}.wav", seconds).read_bytes()
        for name, seconds in (("good", 3.0), ("short", 1.0), ("long", 61.0))
    }


@pytest.fixture
def owner_key(sessions: Sessions) -> Callable[[], Awaitable[str]]:
    """Makes a key of a new owner of its own."""

    async def make() -> str:
        async with sessions() as session, session.begin():
            key, _ = await create_key(
                session, name="speakers", owner=f"{OWNER_PREFIX}{uuid.uuid4().hex[:8]}"
            )
        return key

    return make


@pytest.fixture(scope="module")
async def app(settings: Settings, sessions: Sessions) -> AsyncIterator[Client]:
    offline = dataclasses.replace(settings, url_check_timeout_seconds=0)
    async with AsyncTestClient(create_app(offline), timeout=60) as client:
        client.app.state.publisher = RecordingPublisher()
        yield client
    # The jobs made here stay queued (nothing was sent): end them so no worker picks them up.
    async with sessions() as session, session.begin():
        await session.execute(
            update(Job)
            .where(Job.owner.startswith(OWNER_PREFIX), Job.status == "queued")
            .values(status="cancelled", finished_at=func.now(), progress_stage="cancelled")
        )


async def _enrol(
    app: Client,
    key: str,
    name: str | None,
    clip: bytes,
    content_type: str = "audio/wav",
) -> Any:
    data = {"name": name} if name is not None else {}
    return await app.post(
        "/v1/speakers",
        headers=bearer(key),
        data=data,
        files={"file": ("clip.wav", clip, content_type)},
    )


def _clips_on_disk(settings: Settings) -> set[str]:
    folder = settings.audio_dir / "speakers"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


async def test_a_speaker_is_enrolled_listed_read_and_deleted_with_its_clip(
    app: Client,
    sessions: Sessions,
    owner_key: Callable[[], Awaitable[str]],
    clips: dict[str, bytes],
    settings: Settings,
) -> None:
    key = await owner_key()
    # Given a 3 s clip enrolled under a name with a space
    created = await _enrol(app, key, " Ada Lovelace ", clips["good"])
    assert created.status_code == 201, created.text
    view = created.json()
    assert view["name"] == "Ada Lovelace" and view["voice_print_ready"] is False
    assert abs(view["clip_seconds"] - 3.0) < 0.05
    assert created.headers["location"] == "/v1/speakers/Ada%20Lovelace"
    # then it is listed and readable, and its clip is stored
    listed = (await app.get("/v1/speakers", headers=bearer(key))).json()
    assert [s["name"] for s in listed["items"]] == ["Ada Lovelace"]
    read = await app.get("/v1/speakers/Ada%20Lovelace", headers=bearer(key))
    assert read.status_code == 200 and read.json() == view
    async with sessions() as session:
        speaker = await session.scalar(select(Speaker).where(Speaker.name == "Ada Lovelace"))
    assert speaker is not None and Path(speaker.clip_path).is_file()
    # when it is deleted
    deleted = await app.delete("/v1/speakers/Ada%20Lovelace", headers=bearer(key))
    # then it and its clip are gone
    assert deleted.status_code == 204
    assert not Path(speaker.clip_path).exists()
    gone = await app.get("/v1/speakers/Ada%20Lovelace", headers=bearer(key))
    assert gone.status_code == 404 and gone.json()["code"] == "speaker_not_found"
    again = await app.delete("/v1/speakers/Ada%20Lovelace", headers=bearer(key))
    assert again.status_code == 404 and again.json()["code"] == "speaker_not_found"
    assert (await app.get("/v1/speakers", headers=bearer(key))).json() == {"items": []}


async def test_a_name_taken_is_409_and_leaves_no_clip(
    app: Client,
    owner_key: Callable[[], Awaitable[str]],
    clips: dict[str, bytes],
    settings: Settings,
) -> None:
    key = await owner_key()
    assert (await _enrol(app, key, "alice", clips["good"])).status_code == 201
    before = _clips_on_disk(settings)
    duplicate = await _enrol(app, key, "alice", clips["good"])
    assert duplicate.status_code == 409, duplicate.text
    assert duplicate.json()["code"] == "speaker_exists"
    assert _clips_on_disk(settings) == before


async def test_another_owners_speaker_is_404_like_an_unknown_one(
    app: Client, owner_key: Callable[[], Awaitable[str]], clips: dict[str, bytes]
) -> None:
    # Given a speaker of one owner
    mine, theirs = await owner_key(), await owner_key()
    assert (await _enrol(app, mine, "bob", clips["good"])).status_code == 201
    # then another owner can't see, list or delete it: the answers match an unknown name's
    unknown = await app.get("/v1/speakers/nobody", headers=bearer(theirs))
    for response in (
        await app.get("/v1/speakers/bob", headers=bearer(theirs)),
        await app.delete("/v1/speakers/bob", headers=bearer(theirs)),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == unknown.json()["code"] == "speaker_not_found"
    assert (await app.get("/v1/speakers", headers=bearer(theirs))).json() == {"items": []}
    # and may use the same name for a speaker of its own; the first owner's stays
    assert (await _enrol(app, theirs, "bob", clips["good"])).status_code == 201
    assert (await app.get("/v1/speakers/bob", headers=bearer(mine))).status_code == 200


@pytest.mark.parametrize(
    "name,clip,content_type,status,code",
    [
        ("SPEAKER_2", "good", "audio/wav", 422, "validation_error"),
        ("a:b", "good", "audio/wav", 422, "validation_error"),
        ("x" * 65, "good", "audio/wav", 422, "validation_error"),
        (None, "good", "audio/wav", 422, "validation_error"),
        ("carol", "short", "audio/wav", 422, "audio_too_short"),
        ("carol", "long", "audio/wav", 422, "audio_too_long"),
        ("carol", "text", "audio/wav", 422, "invalid_audio"),
        ("carol", "empty", "audio/wav", 422, "empty_file"),
        ("carol", "good", "text/plain", 415, "unsupported_media_type"),
    ],
)
async def test_a_bad_enrolment_is_refused_and_leaves_nothing(
    app: Client,
    owner_key: Callable[[], Awaitable[str]],
    clips: dict[str, bytes],
    settings: Settings,
    name: str | None,
    clip: str,
    content_type: str,
    status: int,
    code: str,
) -> None:
    key = await owner_key()
    other = {"text": b"this is not audio at all, " * 40, "empty": b""}
    body = other[clip] if clip in other else clips[clip]
    before = _clips_on_disk(settings)
    response = await _enrol(app, key, name, body, content_type)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert _clips_on_disk(settings) == before
    assert (await app.get("/v1/speakers", headers=bearer(key))).json() == {"items": []}


async def test_an_enrolment_without_a_file_or_a_form_is_refused(
    app: Client, sessions: Sessions, owner_key: Callable[[], Awaitable[str]]
) -> None:
    key = await owner_key()
    no_file = await app.post("/v1/speakers", headers=bearer(key), files={"name": (None, "x")})
    assert no_file.status_code == 422 and no_file.json()["code"] == "validation_error"
    as_json = await app.post("/v1/speakers", headers=bearer(key), json={"name": "x"})
    assert as_json.status_code == 415 and as_json.json()["code"] == "unsupported_media_type"


async def _job_count(sessions: Sessions, owner_of: str) -> int:
    async with sessions() as session:
        owner = await _owner(session, owner_of)
        return int(await session.scalar(select(func.count()).where(Job.owner == owner)) or 0)


async def _owner(session: AsyncSession, key: str) -> str:
    from service.core.db.models import ApiKey

    prefix = key.split("_")[1]
    owner = await session.scalar(select(ApiKey.owner).where(ApiKey.prefix == prefix))
    assert owner is not None
    return owner


@pytest.mark.parametrize("how", ["json", "form"])
async def test_a_job_naming_an_unknown_speaker_is_422_and_makes_nothing(
    app: Client,
    sessions: Sessions,
    owner_key: Callable[[], Awaitable[str]],
    clips: dict[str, bytes],
    how: str,
) -> None:
    # Given an owner with one speaker, and another owner's speaker of a second name
    key, other = await owner_key(), await owner_key()
    assert (await _enrol(app, key, "dana", clips["good"])).status_code == 201
    assert (await _enrol(app, other, "erin", clips["good"])).status_code == 201
    # when a job names both
    if how == "json":
        response = await app.post(
            "/v1/jobs",
            headers=bearer(key),
            json={
                "audio_url": "https://media.example.com/a.mp3",
                "known_speakers": ["dana", "erin"],
            },
        )
    else:
        response = await app.post(
            "/v1/jobs",
            headers=bearer(key),
            data={"known_speakers": "dana,erin"},
            files={"file": ("talk.wav", clips["good"], "audio/wav")},
        )
    # then it is refused naming the one it does not have, and no job exists
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "unknown_speaker"
    assert "'erin'" in response.json()["detail"] and "'dana'" not in response.json()["detail"]
    assert await _job_count(sessions, key) == 0


async def test_known_speakers_with_diarize_false_is_422(
    app: Client, owner_key: Callable[[], Awaitable[str]]
) -> None:
    key = await owner_key()
    response = await app.post(
        "/v1/jobs",
        headers=bearer(key),
        json={
            "audio_url": "https://media.example.com/a.mp3",
            "diarize": False,
            "known_speakers": ["dana"],
        },
    )
    assert response.status_code == 422 and response.json()["code"] == "validation_error"
    assert "diarize" in response.json()["detail"]


async def test_a_job_with_known_speakers_is_diarized_and_shows_them(
    app: Client,
    sessions: Sessions,
    owner_key: Callable[[], Awaitable[str]],
    clips: dict[str, bytes],
) -> None:
    # Given an owner with two speakers
    key = await owner_key()
    for name in ("fay", "gus"):
        assert (await _enrol(app, key, name, clips["good"])).status_code == 201
    # when an upload names them (the field repeated, and comma-separated), diarize unsaid
    response = await app.post(
        "/v1/jobs",
        headers=bearer(key),
        data={"known_speakers": ["gus", "fay, gus"]},
        files={"file": ("talk.wav", clips["good"], "audio/wav")},
    )
    # then the job is diarized with them, and shows them
    assert response.status_code == 202, response.text
    view = response.json()
    assert view["diarize"] is True and view["known_speakers"] == ["gus", "fay"]
    polled = (await app.get(f"/v1/jobs/{view['id']}", headers=bearer(key))).json()
    assert polled["diarize"] is True and polled["known_speakers"] == ["gus", "fay"]
    async with sessions() as session:
        job = await session.get(Job, uuid.UUID(view["id"]))
        rows = await session.execute(
            select(Speaker.name, Speaker.id).where(Speaker.owner == job.owner)
        )
        ids = {name: speaker_id for name, speaker_id in rows}
    assert job is not None and job.diarization == {
        "known_speakers": ["gus", "fay"],
        "speaker_ids": [str(ids["gus"]), str(ids["fay"])],
    }
    # and a plain job shows no speakers
    plain = await app.post(
        "/v1/jobs", headers=bearer(key), json={"audio_url": "https://media.example.com/b.mp3"}
    )
    assert plain.json()["diarize"] is False and plain.json()["known_speakers"] is None
    polled = (await app.get(f"/v1/jobs/{plain.json()['id']}", headers=bearer(key))).json()
    assert polled["diarize"] is False and polled["known_speakers"] is None


async def test_openai_known_speaker_names_are_checked_in_openais_shape(
    app: Client,
    sessions: Sessions,
    owner_key: Callable[[], Awaitable[str]],
    clips: dict[str, bytes],
) -> None:
    key = await owner_key()
    for fields, param, code in (
        ({"known_speaker_names[]": "nobody"}, "known_speaker_names", "unknown_speaker"),
        (
            {
                "known_speaker_names[]": "x",
                "known_speaker_references[]": "data:audio/wav;base64,AA",
            },
            "known_speaker_references",
            "validation_error",
        ),
    ):
        response = await app.post(
            "/v1/audio/transcriptions",
            headers=bearer(key),
            data={"response_format": "diarized_json", **fields},
            files={"file": ("talk.wav", clips["good"], "audio/wav")},
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == code
        assert response.json()["error"]["param"] == param
    assert await _job_count(sessions, key) == 0
