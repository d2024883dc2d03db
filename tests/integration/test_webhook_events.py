"""Webhook events on the real database: exactly one per job outcome, whatever path finished
the job and however often its task ran; the delivery schedule; signing secrets at rest.

The trigger of migration ``0007_webhooks`` records the event in the transaction of the final
UPDATE, so each test drives ``service.core.transitions`` the way the workers and the API do
and counts the ``webhook_events`` rows PostgreSQL holds.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks import Webhook

from service.auth.keys import create_key
from service.core import redrive, transitions, webhooks
from service.core.db.models import Job, OutboxMessage, WebhookEvent, WebhookSecret
from service.core.routing import DELIVER_WEBHOOK
from service.core.settings import Settings
from service.core.transcript import Transcript, TranscriptSegment
from tests.conftest import TEST_OWNER

Sessions = async_sessionmaker[AsyncSession]
HOOK = "https://hooks.example.com/steno"
TRANSCRIPT = Transcript(
    text="one event per outcome",
    language="en",
    duration=2.0,
    segments=[TranscriptSegment(id=0, start=0.0, end=2.0, text="one event per outcome")],
)


async def _key(sessions: Sessions) -> uuid.UUID:
    async with sessions() as session, session.begin():
        _, row = await create_key(session, name="webhook-events", owner=TEST_OWNER)
    return row.id


async def _job(
    sessions: Sessions, key_id: uuid.UUID | None, *, webhook: str | None = HOOK, url: bool = False
) -> uuid.UUID:
    job_id = uuid.uuid4()
    async with sessions() as session, session.begin():
        await transitions.create_job(
            session,
            transitions.NewJob(
                id=job_id,
                owner=TEST_OWNER,
                source="url" if url else "upload",
                model="tiny.en",
                audio_url="https://media.example.com/a.mp3" if url else None,
                audio_path=None if url else f"/nonexistent/{job_id}.wav",
                audio_seconds=None if url else 2.0,
                webhook_url=webhook,
                webhook_key_id=key_id if webhook else None,
            ),
        )
    return job_id


async def _in_tx(sessions: Sessions, step: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
    async with sessions() as session, session.begin():
        return await step(session)


async def _claim(sessions: Sessions, job_id: uuid.UUID, max_attempts: int = 3) -> Any:
    return await _in_tx(
        sessions,
        lambda s: transitions.claim_job(
            s, job_id, worker="w", lease_seconds=600, max_attempts=max_attempts
        ),
    )


async def _expire(sessions: Sessions, job_id: uuid.UUID) -> None:
    await _in_tx(
        sessions,
        lambda s: s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=func.now() - timedelta(minutes=1))
        ),
    )


async def _events(sessions: Sessions, job_id: uuid.UUID) -> list[WebhookEvent]:
    async with sessions() as session:
        query = select(WebhookEvent).where(WebhookEvent.job_id == job_id).order_by(WebhookEvent.id)
        return list(await session.scalars(query))


# Each scenario finishes a job through one code path, then repeats the work the way a
# duplicated or redelivered task would; returns the event type it must have produced.
async def _completed_twice(sessions: Sessions, job_id: uuid.UUID) -> str:
    claim = await _claim(sessions, job_id)
    assert await _in_tx(sessions, lambda s: transitions.complete_job(s, claim, TRANSCRIPT))
    assert not await _in_tx(sessions, lambda s: transitions.complete_job(s, claim, TRANSCRIPT))
    assert await _claim(sessions, job_id) is None
    return "job.completed"


async def _failed_then_completed(sessions: Sessions, job_id: uuid.UUID) -> str:
    claim = await _claim(sessions, job_id)
    fail = transitions.fail_job
    assert await _in_tx(sessions, lambda s: fail(s, job_id, code="x", detail="y", token=1))
    assert not await _in_tx(sessions, lambda s: fail(s, job_id, code="x", detail="y", token=1))
    assert not await _in_tx(sessions, lambda s: transitions.complete_job(s, claim, TRANSCRIPT))
    return "job.failed"


async def _fetch_failed_twice(sessions: Sessions, job_id: uuid.UUID) -> str:
    for expected in (True, False):
        failed = await _in_tx(
            sessions,
            lambda s: transitions.fail_fetch(s, job_id, code="url_unreadable", detail="404"),
        )
        assert failed is expected
    return "job.failed"


async def _cancelled_twice(sessions: Sessions, job_id: uuid.UUID) -> str:
    for expected in (True, False):
        _, now = await _in_tx(
            sessions, lambda s: transitions.cancel_job(s, job_id, owner=TEST_OWNER)
        )
        assert now is expected
    return "job.cancelled"


async def _cancelled_while_running(sessions: Sessions, job_id: uuid.UUID) -> str:
    claim = await _claim(sessions, job_id)
    await _in_tx(sessions, lambda s: transitions.cancel_job(s, job_id, owner=TEST_OWNER))
    assert not await _in_tx(sessions, lambda s: transitions.complete_job(s, claim, TRANSCRIPT))
    return "job.cancelled"


async def _capped_at_claim(sessions: Sessions, job_id: uuid.UUID) -> str:
    assert await _claim(sessions, job_id, max_attempts=1) is not None
    await _expire(sessions, job_id)
    for _ in range(2):  # the worker died; its message comes back twice
        assert await _claim(sessions, job_id, max_attempts=1) is None
    return "job.failed"


async def _capped_by_the_reaper(sessions: Sessions, job_id: uuid.UUID) -> str:
    assert await _claim(sessions, job_id, max_attempts=1) is not None
    await _expire(sessions, job_id)
    for expected in ([job_id], []):
        _, failed = await _in_tx(sessions, lambda s: redrive.reap_expired_leases(s, max_attempts=1))
        assert [f for f in failed if f == job_id] == expected
    return "job.failed"


SCENARIOS = {
    "complete_job": (_completed_twice, False),
    "fail_job": (_failed_then_completed, False),
    "fail_fetch": (_fetch_failed_twice, True),
    "cancel_job": (_cancelled_twice, False),
    "cancel_job running": (_cancelled_while_running, False),
    "claim_job at the cap": (_capped_at_claim, False),
    "reap_expired_leases at the cap": (_capped_by_the_reaper, False),
}


@pytest.mark.parametrize("path", list(SCENARIOS))
async def test_every_way_a_job_finishes_records_exactly_one_event(
    sessions: Sessions, path: str
) -> None:
    # given a job with a webhook_url
    scenario, url_job = SCENARIOS[path]
    key_id = await _key(sessions)
    job_id = await _job(sessions, key_id, url=url_job)

    # when it reaches a final state this way, and the work is repeated as a duplicate would
    expected = await scenario(sessions, job_id)

    # then exactly one event exists, of that outcome, pending its first delivery now
    [event] = await _events(sessions, job_id)
    assert (event.type, event.state, event.attempts, event.url) == (expected, "pending", 0, HOOK)
    assert event.key_id == key_id
    assert event.webhook_id.startswith("msg_") and len(event.webhook_id) == 36
    assert event.job["status"] == expected.removeprefix("job.")


async def test_a_job_without_a_webhook_url_records_no_event(sessions: Sessions) -> None:
    # given a job submitted without a webhook_url, when it completes
    job_id = await _job(sessions, None, webhook=None)
    await _completed_twice(sessions, job_id)

    # then no event exists
    assert await _events(sessions, job_id) == []


async def test_the_event_body_shows_the_job_as_the_api_does(
    sessions: Sessions, api: AsyncTestClient[Any]
) -> None:
    # given a completed job of the API's owner with a webhook
    job_id = await _job(sessions, await _key(sessions))
    await _completed_twice(sessions, job_id)
    [event] = await _events(sessions, job_id)

    # when its body is built from the row the trigger saved
    body = json.loads(webhooks.event_body(event.type, event.created_at, event.job))

    # then it is {type, timestamp, data} and data is exactly what GET /v1/jobs/{id} shows
    assert set(body) == {"type", "timestamp", "data"}
    assert body["type"] == "job.completed"
    assert datetime.fromisoformat(body["timestamp"]) == event.created_at
    assert body["data"] == (await api.get(f"/v1/jobs/{job_id}")).json()
    assert body["data"]["webhook_url"] == HOOK


async def _pending_event(sessions: Sessions) -> WebhookEvent:
    job_id = await _job(sessions, await _key(sessions))
    await _cancelled_twice(sessions, job_id)
    [event] = await _events(sessions, job_id)
    return event


async def test_an_attempt_is_claimed_once_and_a_failure_is_retried_later(
    sessions: Sessions, settings: Settings
) -> None:
    # given a pending event
    event = await _pending_event(sessions)

    # when two messages for its first attempt arrive
    first = await _in_tx(
        sessions, lambda s: webhooks.claim_event(s, event.id, expected=0, settings=settings)
    )
    second = await _in_tx(
        sessions, lambda s: webhooks.claim_event(s, event.id, expected=0, settings=settings)
    )

    # then one makes attempt 1 and the other does nothing
    assert first is not None and first.attempt == 1
    assert second is None

    # and when that attempt fails, the event is due again after the first backoff step
    failed = webhooks.Outcome(status_code=500, latency_ms=3.0, error="the receiver answered 500")
    state = await _in_tx(sessions, lambda s: webhooks.record_attempt(s, first, failed, settings))
    assert state == "pending"
    [row] = await _events(sessions, event.job_id)
    wait = (row.next_attempt_at - datetime.now(UTC)).total_seconds()
    assert 0 < wait <= 1.2 * settings.webhook_retry_base_seconds + 1

    # and once attempt 2 took the event (attempt 1's worker looked dead), attempt 1's late
    # outcome is stored but can't move the schedule
    retry = await _in_tx(
        sessions, lambda s: webhooks.claim_event(s, event.id, expected=1, settings=settings)
    )
    assert retry is not None and retry.attempt == 2
    late = await _in_tx(sessions, lambda s: webhooks.record_attempt(s, first, failed, settings))
    assert late == "superseded"


async def test_attempts_run_out_and_a_redelivery_starts_a_fresh_run(
    sessions: Sessions, settings: Settings
) -> None:
    # given an event allowed two attempts, both failed
    capped = dataclasses.replace(settings, webhook_max_attempts=2)
    event = await _pending_event(sessions)
    failed = webhooks.Outcome(status_code=None, latency_ms=None, error="connection refused")
    states = []
    for expected in (0, 1):
        claim = await _in_tx(
            sessions,
            lambda s, n=expected: webhooks.claim_event(s, event.id, expected=n, settings=capped),
        )
        states.append(
            await _in_tx(sessions, lambda s, c=claim: webhooks.record_attempt(s, c, failed, capped))
        )

    # then it gave up after the second
    assert states == ["pending", "failed"]

    # when it is redelivered
    staged = await _in_tx(sessions, lambda s: webhooks.redeliver_last(s, event.job_id, capped))

    # then it is pending again, keeps its id, and a message for attempt 3 is staged
    again, outbox_id = staged
    assert (again.state, again.webhook_id, again.round_start) == ("pending", event.webhook_id, 2)
    async with sessions() as session:
        message = await session.get(OutboxMessage, outbox_id)
    assert message is not None
    assert (message.task_name, message.args) == (DELIVER_WEBHOOK.name, [event.id, 2])
    claim = await _in_tx(
        sessions, lambda s: webhooks.claim_event(s, event.id, expected=2, settings=capped)
    )
    assert claim is not None and claim.attempt == 3


async def test_dispatch_sends_a_due_event_once_per_lease(
    sessions: Sessions, settings: Settings
) -> None:
    # given a due event
    event = await _pending_event(sessions)

    # when the sweep dispatches twice in a row
    first = await _in_tx(sessions, lambda s: webhooks.dispatch_due(s, settings))
    second = await _in_tx(sessions, lambda s: webhooks.dispatch_due(s, settings))

    # then the event's message was staged once; the event waits out its lease
    async with sessions() as session:
        staged = list(
            await session.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(first + second)))
        )
    mine = [m for m in staged if m.args == [event.id, 0]]
    assert len(mine) == 1
    [row] = await _events(sessions, event.job_id)
    assert row.next_attempt_at > datetime.now(UTC)


async def test_secrets_are_sealed_at_rest_and_rotation_signs_with_both(
    sessions: Sessions, settings: Settings
) -> None:
    # given a key's secret, stored through the configured box
    box = webhooks.SecretBox.from_settings(settings)
    key_id = await _key(sessions)
    old = await _in_tx(sessions, lambda s: webhooks.current_secret(s, key_id, box))
    assert old.startswith("whsec_")
    async with sessions() as session:
        stored = await session.get(WebhookSecret, key_id)
    assert stored is not None and stored.secret.startswith("fernet:")
    assert old.removeprefix("whsec_") not in stored.secret
    assert old not in repr(box)

    # when it is rotated
    rotation = await _in_tx(
        sessions, lambda s: webhooks.rotate_secret(s, key_id, box, grace_seconds=3600)
    )

    # then deliveries are signed with the new one and, during the grace period, the old one
    signing = await _in_tx(
        sessions, lambda s: webhooks.signing_secrets(s, key_id, box, grace_seconds=3600)
    )
    assert signing == [rotation.secret, old]
    headers = webhooks.signed_headers(
        "msg_x", '{"a":1}', signing, timestamp=int(datetime.now(UTC).timestamp())
    )
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, rotation.secret):
        assert Webhook(secret).verify('{"a":1}', headers) == {"a": 1}
    # and after it, with the new one only
    after = await _in_tx(
        sessions, lambda s: webhooks.signing_secrets(s, key_id, box, grace_seconds=0)
    )
    assert after == [rotation.secret]


def test_a_box_without_keys_stores_secrets_marked_plain_and_refuses_sealed_ones() -> None:
    # given a box with no key and one with a key
    plain, sealing = (
        webhooks.SecretBox(),
        webhooks.SecretBox.from_settings(Settings(webhook_secrets_key=("a" * 43 + "=",))),
    )
    secret = webhooks.new_secret()

    # then each opens what it sealed, and the keyless box refuses a sealed value by name only
    assert plain.open(plain.seal(secret)) == secret
    assert sealing.open(sealing.seal(secret)) == secret
    with pytest.raises(RuntimeError) as refused:
        plain.open(sealing.seal(secret))
    assert secret not in str(refused.value)
