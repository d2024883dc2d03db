"""What the webhook endpoints answer, as msgspec Structs (never ORM rows)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from service.core.db.models import WebhookDelivery, WebhookEvent
from service.core.egress import redact


class SigningSecret(msgspec.Struct):
    """The key's signing secret (``whsec_…``, for ``standardwebhooks.Webhook``)."""

    secret: str


class RotatedSecret(msgspec.Struct):
    """A new signing secret; deliveries carry the old one's signature too until then."""

    secret: str
    previous_valid_until: datetime


class EventView(msgspec.Struct):
    """A webhook event: one job outcome, delivered (or still tried) under one ``webhook_id``.

    ``state`` is ``pending`` (``next_attempt_at`` says when), ``delivered`` or ``failed``
    (its attempts ran out, or the URL is forbidden); ``url`` is shown without its query.
    """

    webhook_id: str
    type: str
    state: str
    attempts: int
    url: str
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None

    @classmethod
    def from_row(cls, event: WebhookEvent) -> EventView:
        """The view of one event row."""
        return cls(
            webhook_id=event.webhook_id,
            type=event.type,
            state=event.state,
            attempts=event.attempts,
            url=redact(event.url),
            created_at=event.created_at,
            next_attempt_at=event.next_attempt_at if event.state == "pending" else None,
            delivered_at=event.delivered_at,
        )


class DeliveryView(msgspec.Struct):
    """One attempt: the receiver's status code (None: no answer), latency and error."""

    webhook_id: str
    attempt: int
    status_code: int | None
    latency_ms: float | None
    error: str | None
    at: datetime

    @classmethod
    def from_row(cls, delivery: WebhookDelivery, webhook_id: str) -> DeliveryView:
        """The view of one delivery row of the event ``webhook_id``."""
        return cls(
            webhook_id=webhook_id,
            attempt=delivery.attempt,
            status_code=delivery.status_code,
            latency_ms=round(delivery.latency_ms, 1) if delivery.latency_ms is not None else None,
            error=delivery.error,
            at=delivery.created_at,
        )


class WebhookLog(msgspec.Struct):
    """``GET /v1/jobs/{id}/webhooks``: the job's events and every attempt, oldest first."""

    events: list[EventView]
    deliveries: list[DeliveryView]
