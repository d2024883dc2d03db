"""The transactional outbox: a broker outage at submit time loses no job.

The relay sweep (beat → worker-io) publishes whatever the fast path after commit could not;
``publish_pending`` marks what went out and leaves what failed for the next sweep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.app import create_app
from service.core.db.models import Job, OutboxMessage, Transcript
from service.core.outbox import add_message, publish_pending
from service.core.routing import TRANSCRIBE
from service.core.settings import Settings
from tests.audio import speak, word_error_rate
from tests.conftest import WorkerProcess, bearer, free_port, make_key, wait_for_job

Sessions = async_sessionmaker[AsyncSession]

SENTENCE = "Please send the quarterly report to the finance team before the end of the week."
# Longer than the sweep's task expiry (two sweep periods): a sweep sent before the pause is gone.
PAUSE_SETTLE_SECONDS = 3.0


@contextmanager
def _relay_paused(beat: WorkerProcess) -> Iterator[None]:
    """Freeze beat so no relay sweep runs: the outbox shows what the fast path alone did."""
    os.kill(beat.pid, signal.SIGSTOP)
    try:
        time.sleep(PAUSE_SETTLE_SECONDS)
        yield
    finally:
        os.kill(beat.pid, signal.SIGCONT)


async def _outbox_rows(sessions: Sessions, job_id: uuid.UUID) -> list[OutboxMessage]:
    async with sessions() as session:
        query = select(OutboxMessage).where(OutboxMessage.job_id == job_id)
        return list((await session.scalars(query)).all())


async def test_a_job_submitted_while_the_broker_is_down_is_relayed_later(
    settings: Settings,
    workers: dict[str, WorkerProcess],
    sessions: Sessions,
    api: AsyncTestClient[Any],
    tmp_path: Path,
    api_key: str,
) -> None:
    # given an API whose broker is a port nothing listens on, and a spoken file
    dead = dataclasses.replace(
        settings,
        broker_url=f"redis://127.0.0.1:{free_port()}/0",
        publish_timeout_seconds=0.5,
    )
    audio = speak(SENTENCE, tmp_path / "outbox.wav")
    # A key of its own owner: no other test's jobs take this owner's fair share (a held
    # message is not published at all, and this test is about the publish that fails).
    key = await asyncio.to_thread(make_key, settings, "outbox")

    with _relay_paused(workers["beat"]):
        # when the file is submitted
        async with AsyncTestClient(create_app(dead), timeout=60) as client:
            client.headers.update(bearer(key))
            started = time.monotonic()
            response = await client.post(
                "/v1/jobs", files={"file": ("outbox.wav", audio.read_bytes(), "audio/wav")}
            )
            elapsed = time.monotonic() - started

        # then it is accepted all the same: the job and its unpublished message are stored
        assert response.status_code == 202, response.text
        assert elapsed < 30.0, f"submit took {elapsed:.1f} s with the broker down"
        job_id = uuid.UUID(response.json()["id"])
        async with sessions() as session:
            job = await session.get(Job, job_id)
            assert job is not None
            assert job.status == "queued"
        [message] = await _outbox_rows(sessions, job_id)
        assert message.task_name == TRANSCRIBE.name
        assert message.args == [str(job_id)]
        assert message.published_at is None
        assert message.publish_attempts == 1

    # when the relay sweeps again (against the live broker)
    async with AsyncTestClient(create_app(settings), timeout=60) as owner_client:
        owner_client.headers.update(bearer(key))
        job_view = await wait_for_job(owner_client, str(job_id), timeout=180.0)

    # then the job was transcribed: the relay published its message
    assert job_view["status"] == "completed", job_view
    [message] = await _outbox_rows(sessions, job_id)
    assert message.published_at is not None
    async with sessions() as session:
        transcript = await session.get(Transcript, job_id)
    assert transcript is not None
    # Loose: this test is about durability; accuracy is tested elsewhere.
    assert word_error_rate(SENTENCE, transcript.text) <= 0.5, transcript.text


class RecordingPublisher:
    """Stands in for the broker: remembers what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, list[Any], float | None]] = []

    def publish(
        self,
        task_name: str,
        queue: str,
        args: list[Any],
        time_limit: float | None,
        enqueued_at: float | None = None,
    ) -> None:
        self.sent.append((task_name, queue, args, time_limit))


class BrokenPublisher:
    """A broker that refuses every message."""

    def __init__(self) -> None:
        self.calls = 0

    def publish(
        self,
        task_name: str,
        queue: str,
        args: list[Any],
        time_limit: float | None,
        enqueued_at: float | None = None,
    ) -> None:
        self.calls += 1
        raise ConnectionError("the broker is down")


async def _stage(sessions: Sessions, count: int) -> list[int]:
    """Outbox messages only this test publishes.

    They are dated an hour ahead, so the live relay sweep (which takes only rows older than
    its grace period) never touches them while the test runs.
    """
    ids = []
    async with sessions() as session, session.begin():
        for _ in range(count):
            ids.append(await add_message(session, TRANSCRIBE, [str(uuid.uuid4())], time_limit=42.0))
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids))
            .values(created_at=func.now() + timedelta(hours=1))
        )
    return ids


async def _state(sessions: Sessions, ids: list[int]) -> list[tuple[bool, int]]:
    """(published, publish_attempts) per message, in id order."""
    async with sessions() as session:
        query = select(OutboxMessage).where(OutboxMessage.id.in_(ids)).order_by(OutboxMessage.id)
        rows = (await session.scalars(query)).all()
        return [(row.published_at is not None, row.publish_attempts) for row in rows]


async def test_publish_pending_publishes_each_message_once(sessions: Sessions) -> None:
    # given two unpublished messages
    ids = await _stage(sessions, 2)
    publisher = RecordingPublisher()

    # when the outbox is published twice
    first = await publish_pending(sessions, publisher, ids=ids)
    second = await publish_pending(sessions, publisher, ids=ids)

    # then both went out once, in order, and are marked published
    assert (first, second) == (2, 0)
    async with sessions() as session:
        query = select(OutboxMessage.args).where(OutboxMessage.id.in_(ids))
        args = [list(a) for a in (await session.scalars(query.order_by(OutboxMessage.id))).all()]
    assert publisher.sent == [(TRANSCRIBE.name, TRANSCRIBE.queue, a, 42.0) for a in args]
    assert await _state(sessions, ids) == [(True, 0), (True, 0)]


async def test_a_failed_publish_leaves_the_message_for_the_next_sweep(sessions: Sessions) -> None:
    # given two unpublished messages and a broker that refuses everything
    ids = await _stage(sessions, 2)
    broken = BrokenPublisher()

    # when the outbox is published
    sent = await publish_pending(sessions, broken, ids=ids)

    # then nothing is marked published; the first failure counted and stopped the batch
    assert sent == 0
    assert broken.calls == 1
    assert await _state(sessions, ids) == [(False, 1), (False, 0)]

    # when it fails again, the count grows
    assert await publish_pending(sessions, broken, ids=ids) == 0
    assert await _state(sessions, ids) == [(False, 2), (False, 0)]

    # when the broker is back, both go out
    publisher = RecordingPublisher()
    assert await publish_pending(sessions, publisher, ids=ids) == 2
    assert len(publisher.sent) == 2
    assert await _state(sessions, ids) == [(True, 2), (True, 0)]
