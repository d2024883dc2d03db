"""The webhook event queue in PostgreSQL: dispatch what is due, claim an attempt (fenced),
record its outcome with the next attempt's time, redeliver on request.

An event is ``pending`` until an attempt gets a 2xx (``delivered``) or its attempts run out
(``failed``). ``next_attempt_at`` is both the retry schedule and a lease: dispatching or
claiming an event pushes it ``delivery_lease`` ahead, so an event whose message was lost,
or whose worker died mid-attempt, is due again once that lapses. Retries therefore live in
PostgreSQL and survive any worker or broker crash.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, desc, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.db.models import WebhookDelivery, WebhookEvent
from service.core.outbox import add_message
from service.core.routing import DELIVER_WEBHOOK
from service.core.settings import Settings

# Events one dispatch takes at most; the next sweep takes the rest.
DISPATCH_BATCH = 500


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    """An event a delivery holds for one attempt (``attempt`` fences its writes)."""

    id: int
    webhook_id: str
    job_id: uuid.UUID
    key_id: uuid.UUID | None
    type: str
    url: str
    job: dict[str, Any]
    body: str | None
    created_at: datetime
    attempt: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt got: a status code (None when no answer came), latency and why it
    failed; ``permanent`` when retrying can't help (a forbidden address)."""

    status_code: int | None
    latency_ms: float | None
    error: str | None = None
    permanent: bool = False

    @property
    def delivered(self) -> bool:
        """A 2xx answer; anything else (3xx included: redirects are not followed) failed."""
        return self.status_code is not None and 200 <= self.status_code < 300


def delivery_lease(settings: Settings) -> float:
    """How long a dispatched or claimed event waits before it is considered lost."""
    return 2 * settings.webhook_timeout_seconds + 10.0


def retry_delay(
    attempt: int, settings: Settings, *, uniform: Callable[[float, float], float] = random.uniform
) -> float:
    """Seconds before the attempt after failed attempt ``attempt`` (1-based): base * 2^(n-1)
    up to the cap, times a jitter of 0.8-1.2 so receivers that fail together don't get
    every retry at once."""
    exponent = min(attempt - 1, 40)
    nominal = min(
        settings.webhook_retry_max_seconds, settings.webhook_retry_base_seconds * 2**exponent
    )
    return float(nominal * uniform(0.8, 1.2))


async def stage_delivery(
    session: AsyncSession, event_id: int, attempts: int, job_id: uuid.UUID, settings: Settings
) -> int:
    """Stage the message that makes attempt ``attempts + 1`` of an event; its outbox id."""
    return await add_message(
        session,
        DELIVER_WEBHOOK,
        [event_id, attempts],
        job_id=job_id,
        time_limit=delivery_lease(settings),
    )


async def dispatch_due(session: AsyncSession, settings: Settings) -> list[int]:
    """Stage a delivery for each due pending event and lease it; returns the outbox ids."""
    due = (
        select(WebhookEvent.id)
        .where(WebhookEvent.state == "pending", WebhookEvent.next_attempt_at <= func.now())
        .order_by(WebhookEvent.next_attempt_at)
        .limit(DISPATCH_BATCH)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    rows = (
        await session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id.in_(due))
            .values(next_attempt_at=_lease(settings))
            .returning(WebhookEvent.id, WebhookEvent.attempts, WebhookEvent.job_id)
        )
    ).all()
    return [
        await stage_delivery(session, row.id, row.attempts, row.job_id, settings)
        for row in sorted(rows, key=lambda row: row.id)
    ]


def _lease(settings: Settings) -> Any:
    return func.now() + timedelta(seconds=delivery_lease(settings))


async def claim_event(
    session: AsyncSession, event_id: int, *, expected: int, settings: Settings
) -> ClaimedEvent | None:
    """Take attempt ``expected + 1`` of a pending event; None when the event is delivered,
    given up, gone, or another message already took that attempt (a duplicate)."""
    row = (
        await session.execute(
            update(WebhookEvent)
            .where(
                WebhookEvent.id == event_id,
                WebhookEvent.state == "pending",
                WebhookEvent.attempts == expected,
            )
            .values(attempts=WebhookEvent.attempts + 1, next_attempt_at=_lease(settings))
            .returning(
                WebhookEvent.id,
                WebhookEvent.webhook_id,
                WebhookEvent.job_id,
                WebhookEvent.key_id,
                WebhookEvent.type,
                WebhookEvent.url,
                WebhookEvent.job,
                WebhookEvent.body,
                WebhookEvent.created_at,
                WebhookEvent.attempts,
            )
        )
    ).first()
    if row is None:
        return None
    return ClaimedEvent(
        id=row.id,
        webhook_id=row.webhook_id,
        job_id=row.job_id,
        key_id=row.key_id,
        type=row.type,
        url=row.url,
        job=row.job,
        body=row.body,
        created_at=row.created_at,
        attempt=row.attempts,
    )


async def store_body(session: AsyncSession, event_id: int, body: str) -> str:
    """Fix the event's body at its first attempt; returns the body every attempt sends."""
    stored = await session.scalar(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id)
        .values(body=func.coalesce(WebhookEvent.body, body))
        .returning(WebhookEvent.body)
    )
    return stored or body


async def record_attempt(
    session: AsyncSession, event: ClaimedEvent, outcome: Outcome, settings: Settings
) -> str:
    """Store the attempt and move the event on (delivered, failed at the cap or for good,
    or due again after ``retry_delay``); returns its state (``superseded`` when another
    attempt took the event meanwhile: the attempt is stored, the schedule left alone)."""
    session.add(
        WebhookDelivery(
            event_id=event.id,
            job_id=event.job_id,
            attempt=event.attempt,
            status_code=outcome.status_code,
            latency_ms=outcome.latency_ms,
            error=outcome.error,
        )
    )
    held = (
        WebhookEvent.id == event.id,
        WebhookEvent.state == "pending",
        WebhookEvent.attempts == event.attempt,
    )
    if outcome.delivered:
        values: dict[str, Any] = {"state": "delivered", "delivered_at": func.now()}
    else:
        spent = WebhookEvent.attempts - WebhookEvent.round_start >= settings.webhook_max_attempts
        delay = timedelta(seconds=retry_delay(event.attempt, settings))
        values = {
            "state": case((or_(literal(outcome.permanent), spent), "failed"), else_="pending"),
            "next_attempt_at": func.now() + delay,
        }
    state = await session.scalar(
        update(WebhookEvent).where(*held).values(**values).returning(WebhookEvent.state)
    )
    return state or "superseded"


async def redeliver_last(
    session: AsyncSession, job_id: uuid.UUID, settings: Settings
) -> tuple[WebhookEvent, int] | None:
    """Make the job's latest event pending again with a fresh run of attempts and stage its
    delivery; returns the event and the outbox id, or None when the job has no event."""
    latest = (
        select(WebhookEvent.id)
        .where(WebhookEvent.job_id == job_id)
        .order_by(desc(WebhookEvent.id))
        .limit(1)
        .scalar_subquery()
    )
    event = await session.scalar(
        update(WebhookEvent)
        .where(WebhookEvent.id == latest)
        .values(
            state="pending", round_start=WebhookEvent.attempts, next_attempt_at=_lease(settings)
        )
        .returning(WebhookEvent)
    )
    if event is None:
        return None
    outbox_id = await stage_delivery(session, event.id, event.attempts, job_id, settings)
    return event, outbox_id
