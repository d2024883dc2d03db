"""HTTP endpoints of webhooks: the key's signing secret and rotation, a job's deliveries,
and redelivery of a job's last event."""

from __future__ import annotations

from litestar import Controller, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.auth.keys import Principal
from service.core.broker import Publisher
from service.core.db.models import WebhookDelivery, WebhookEvent
from service.core.errors import NoWebhookEvent
from service.core.outbox import publish_pending
from service.core.settings import Settings
from service.core.webhooks import SecretBox, current_secret, redeliver_last, rotate_secret
from service.jobs import queries
from service.jobs.controllers import parse_job_id
from service.webhooks.schemas import (
    DeliveryView,
    EventView,
    RotatedSecret,
    SigningSecret,
    WebhookLog,
)

# A secret in a response must not sit in a cache on the way.
NO_STORE = {"Cache-Control": "no-store"}


class WebhookController(Controller):
    """Signing secrets per API key; each job's webhook events, deliveries and redelivery."""

    path = "/v1"
    tags = ["webhooks"]  # noqa: RUF012 - declared by Litestar as an instance attribute

    @get("/webhooks/secret", summary="The signing secret of this API key")
    async def secret(
        self,
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        settings: NamedDependency[Settings],
        principal: NamedDependency[Principal],
    ) -> Response[SigningSecret]:
        """The secret deliveries of this key's jobs are signed with (made on first use)."""
        async with sessions() as session, session.begin():
            secret = await current_secret(
                session, principal.key_id, SecretBox.from_settings(settings)
            )
        return Response(SigningSecret(secret=secret), headers=NO_STORE)

    @post("/webhooks/secret/rotate", status_code=200, summary="Rotate the signing secret")
    async def rotate(
        self,
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        settings: NamedDependency[Settings],
        principal: NamedDependency[Principal],
    ) -> Response[RotatedSecret]:
        """A new secret; until ``previous_valid_until`` deliveries carry both signatures."""
        async with sessions() as session, session.begin():
            rotation = await rotate_secret(
                session,
                principal.key_id,
                SecretBox.from_settings(settings),
                grace_seconds=settings.webhook_secret_grace_seconds,
            )
        body = RotatedSecret(
            secret=rotation.secret, previous_valid_until=rotation.previous_valid_until
        )
        return Response(body, headers=NO_STORE)

    @get("/jobs/{job_id:str}/webhooks", summary="A job's webhook events and deliveries")
    async def deliveries(
        self,
        job_id: FromPath[str],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        principal: NamedDependency[Principal],
    ) -> WebhookLog:
        """Every event of the job and every delivery attempt, oldest first."""
        async with sessions() as session:
            job = await queries.get_job(session, parse_job_id(job_id), owner=principal.owner)
            events = list(
                await session.scalars(
                    select(WebhookEvent)
                    .where(WebhookEvent.job_id == job.id)
                    .order_by(WebhookEvent.id)
                )
            )
            attempts = await session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.job_id == job.id)
                .order_by(WebhookDelivery.id)
            )
            ids = {event.id: event.webhook_id for event in events}
            return WebhookLog(
                events=[EventView.from_row(event) for event in events],
                deliveries=[DeliveryView.from_row(d, ids[d.event_id]) for d in attempts],
            )

    @post(
        "/jobs/{job_id:str}/webhooks/redeliver",
        status_code=202,
        summary="Send the job's last webhook event again (same webhook-id)",
    )
    async def redeliver(
        self,
        job_id: FromPath[str],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        settings: NamedDependency[Settings],
        publisher: NamedDependency[Publisher],
        principal: NamedDependency[Principal],
    ) -> Response[EventView]:
        """Make the last event pending again with a fresh run of attempts; 409
        ``no_webhook_event`` when the job has none (not finished, or no ``webhook_url``)."""
        async with sessions() as session, session.begin():
            job = await queries.get_job(session, parse_job_id(job_id), owner=principal.owner)
            staged = await redeliver_last(session, job.id, settings)
            if staged is None:
                raise NoWebhookEvent(f"job {job.id} has no webhook event to deliver again")
            event, outbox_id = staged
            view = EventView.from_row(event)
        return Response(
            view,
            status_code=202,
            background=BackgroundTask(publish_pending, sessions, publisher, ids=[outbox_id]),
        )
