"""Webhook delivery in process: the IO pool's ``deliver_webhook`` against a local receiver.

Each test finishes a job the way a worker does (the trigger records the event), then runs
delivery attempts as the worker would on each message, and checks what the receiver got
and what PostgreSQL recorded. Only the receiver (a loopback server) stands in for the world.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.auth.keys import create_key
from service.core import transitions, webhooks
from service.core.db.models import WebhookDelivery, WebhookEvent
from service.core.egress import EgressClient
from service.core.settings import Settings
from tests.conftest import TEST_OWNER
from tests.egress import RecordingNetwork
from tests.webhooks import Receiver, failing_first
from workers.io.webhooks import deliver_webhook

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver that answers 204 unless a test says otherwise."""
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
async def ctx(settings: Settings, sessions: Sessions) -> AsyncIterator[dict[str, Any]]:
    """What the IO worker's ``on_startup`` gives a delivery, on the test database."""
    client = _client(settings)
    yield {
        "settings": settings,
        "sessions": sessions,
        "webhook_http": client,
        "secret_box": webhooks.SecretBox.from_settings(settings),
    }
    await client.aclose()


def _client(settings: Settings, **options: Any) -> EgressClient:
    return EgressClient.from_settings(
        settings,
        deadline=settings.webhook_timeout_seconds,
        timeout=httpx.Timeout(settings.webhook_timeout_seconds),
        user_agent="steno-webhooks/test",
        **options,
    )


async def _finished_job(sessions: Sessions, url: str) -> tuple[WebhookEvent, uuid.UUID]:
    """A job of a new key with ``webhook_url=url``, cancelled: its one event, and the key."""
    job_id = uuid.uuid4()
    async with sessions() as session, session.begin():
        _, key = await create_key(session, name="delivery", owner=TEST_OWNER)
        await transitions.create_job(
            session,
            transitions.NewJob(
                id=job_id,
                owner=TEST_OWNER,
                source="upload",
                model="tiny.en",
                audio_path=f"/nonexistent/{job_id}.wav",
                webhook_url=url,
                webhook_key_id=key.id,
            ),
        )
    async with sessions() as session, session.begin():
        await transitions.cancel_job(session, job_id, owner=TEST_OWNER)
        # leased to this test from the start: the session's relay (running once an
        # end-to-end module started the workers) must not dispatch it to its own IO worker
        await session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.job_id == job_id)
            .values(next_attempt_at=func.now() + timedelta(hours=1))
        )
    async with sessions() as session:
        event = await session.scalar(select(WebhookEvent).where(WebhookEvent.job_id == job_id))
    assert event is not None
    return event, key.id


async def _secret(ctx: dict[str, Any], key_id: uuid.UUID) -> str:
    async with ctx["sessions"]() as session, session.begin():
        secret: str = await webhooks.current_secret(session, key_id, ctx["secret_box"])
    return secret


async def _attempts(sessions: Sessions, event_id: int) -> list[WebhookDelivery]:
    async with sessions() as session:
        query = select(WebhookDelivery).where(WebhookDelivery.event_id == event_id)
        return list(await session.scalars(query.order_by(WebhookDelivery.id)))


async def _state(sessions: Sessions, event_id: int) -> str:
    async with sessions() as session:
        event = await session.get(WebhookEvent, event_id, populate_existing=True)
        assert event is not None
        return event.state


async def test_a_delivery_is_signed_per_standard_webhooks(
    ctx: dict[str, Any], receiver: Receiver, sessions: Sessions
) -> None:
    # given a cancelled job whose webhook points at the receiver
    event, key_id = await _finished_job(sessions, receiver.url())

    # when the IO pool delivers its event
    assert await deliver_webhook(ctx, event.id, 0) == "delivered"

    # then the receiver got one POST that standardwebhooks verifies with the key's secret
    [got] = receiver.received
    payload = got.verify(await _secret(ctx, key_id))
    assert payload["type"] == "job.cancelled"
    assert payload["data"]["id"] == str(event.job_id)
    assert payload["data"]["status"] == "cancelled"
    assert got.headers["webhook-id"] == event.webhook_id
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-signature"].startswith("v1,")
    # and the attempt is recorded with the receiver's answer and a latency
    [attempt] = await _attempts(sessions, event.id)
    assert (attempt.attempt, attempt.status_code, attempt.error) == (1, 204, None)
    assert attempt.latency_ms is not None and attempt.latency_ms > 0
    assert await _state(sessions, event.id) == "delivered"


async def test_a_receiver_failing_with_500s_gets_the_same_event_until_it_answers(
    ctx: dict[str, Any], sessions: Sessions
) -> None:
    # given a receiver that answers 500 twice, then 204
    receiver = Receiver(answer=failing_first(2))
    try:
        event, key_id = await _finished_job(sessions, receiver.url())

        # when an attempt is made for each message the schedule sends
        states = [await deliver_webhook(ctx, event.id, attempts) for attempts in (0, 1, 2)]
    finally:
        receiver.close()

    # then the first two failed and were retried, the third delivered it
    assert states == ["pending", "pending", "delivered"]
    statuses = [(a.attempt, a.status_code) for a in await _attempts(sessions, event.id)]
    assert statuses == [(1, 500), (2, 500), (3, 204)]
    # and every attempt carried the same webhook-id and body, each one signed
    assert {r.webhook_id for r in receiver.received} == {event.webhook_id}
    assert len({r.body for r in receiver.received}) == 1
    secret = await _secret(ctx, key_id)
    assert all(r.verify(secret)["type"] == "job.cancelled" for r in receiver.received)


async def test_a_redirect_is_not_followed_and_counts_as_a_failure(
    ctx: dict[str, Any], receiver: Receiver, sessions: Sessions
) -> None:
    # given a receiver that answers 302 to another of its paths
    elsewhere = receiver.url("/elsewhere")
    receiver.answer = lambda _n, path: (
        (302, {"location": elsewhere}) if path == "/hook" else (204, {})
    )
    event, _ = await _finished_job(sessions, receiver.url())

    # when the event is delivered
    state = await deliver_webhook(ctx, event.id, 0)

    # then the 302 is the answer: a failed attempt, retried later; nothing went elsewhere
    assert state == "pending"
    [attempt] = await _attempts(sessions, event.id)
    assert attempt.status_code == 302
    assert attempt.error == f"redirect to {elsewhere} not followed"
    assert [r.path for r in receiver.received] == ["/hook"]


async def test_a_receiver_that_does_not_answer_in_time_is_a_failed_attempt(
    settings: Settings, ctx: dict[str, Any], sessions: Sessions
) -> None:
    # given a receiver slower than the delivery deadline
    receiver = Receiver(delay=1.5)
    hasty = {**ctx, "settings": _fast(settings)}
    hasty["webhook_http"] = _client(hasty["settings"])
    try:
        event, _ = await _finished_job(sessions, receiver.url())

        # when the event is delivered
        state = await deliver_webhook(hasty, event.id, 0)
    finally:
        await hasty["webhook_http"].aclose()
        receiver.close()

    # then the attempt failed without a status, and will be tried again
    assert state == "pending"
    [attempt] = await _attempts(sessions, event.id)
    assert attempt.status_code is None
    assert attempt.error == "no answer within 0.5 s"


def _fast(settings: Settings) -> Settings:
    return dataclasses.replace(settings, webhook_timeout_seconds=0.5)


async def test_a_url_the_egress_refuses_fails_the_event_without_connecting(
    settings: Settings, ctx: dict[str, Any], sessions: Sessions
) -> None:
    # given an event whose URL became forbidden (stored before a policy change, or DNS)
    network = RecordingNetwork()
    strict = {**ctx, "webhook_http": _client(settings, network=network)}
    event, _ = await _finished_job(sessions, "http://169.254.169.254/latest/meta-data/")
    try:
        # when it is delivered
        state = await deliver_webhook(strict, event.id, 0)
    finally:
        await strict["webhook_http"].aclose()

    # then it failed for good at once, and nothing was connected to
    assert state == "failed"
    [attempt] = await _attempts(sessions, event.id)
    assert attempt.error is not None and attempt.error.startswith("url_forbidden: ")
    assert network.attempts == []


async def test_a_duplicate_message_for_an_attempt_does_nothing(
    ctx: dict[str, Any], receiver: Receiver, sessions: Sessions
) -> None:
    # given an event already delivered by its first message
    event, _ = await _finished_job(sessions, receiver.url())
    assert await deliver_webhook(ctx, event.id, 0) == "delivered"

    # when the same message comes again (redelivered by the broker)
    again = await deliver_webhook(ctx, event.id, 0)

    # then nothing is sent or recorded
    assert again == "skipped"
    assert len(receiver.received) == 1
    assert len(await _attempts(sessions, event.id)) == 1
