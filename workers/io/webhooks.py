"""Delivering webhook events (async, on the IO pool): claim an attempt, sign, POST, record.

``deliver_webhook(event_id, attempts)`` makes attempt ``attempts + 1`` of one event: it
claims the attempt with a fenced UPDATE (a duplicate message, or one for an attempt already
made, does nothing), fixes the body at the first attempt, signs it with the submitting key's
secret(s) (Standard Webhooks headers; the same ``webhook-id`` every time) and POSTs it
through the egress, which refuses forbidden addresses and here follows no redirect. A 2xx
delivers the event; anything else (a 3xx, a 4xx/5xx, no answer in time) is one failed
attempt, recorded with the next attempt's time. ``dispatch_webhooks`` is the relay sweep's
step that sends the messages for every due event (``service.core.webhooks.events``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from service.core import webhooks
from service.core.egress import EgressClient, redact
from service.core.errors import StenoError
from service.core.outbox import publish_pending
from service.core.settings import Settings
from service.core.webhooks import ClaimedEvent, Outcome

log = logging.getLogger(__name__)


async def deliver_webhook(ctx: dict[str, Any], event_id: int, attempts: int) -> str:
    """Make one delivery attempt of an event; returns the event's state afterwards
    (``delivered``, ``pending``, ``failed``, ``superseded``) or ``skipped``."""
    settings: Settings = ctx["settings"]
    sessions = ctx["sessions"]
    async with sessions() as session, session.begin():
        event = await webhooks.claim_event(session, event_id, expected=attempts, settings=settings)
        if event is None:
            return "skipped"
        body = event.body or await webhooks.store_body(
            session, event.id, webhooks.event_body(event.type, event.created_at, event.job)
        )
        secrets = []
        if event.key_id is not None:
            secrets = await webhooks.signing_secrets(
                session,
                event.key_id,
                ctx["secret_box"],
                grace_seconds=settings.webhook_secret_grace_seconds,
            )
    if secrets:
        outcome = await send(ctx["webhook_http"], event, body, secrets, settings)
    else:
        outcome = Outcome(None, None, "the API key that submitted the job is gone", permanent=True)
    async with sessions() as session, session.begin():
        state = await webhooks.record_attempt(session, event, outcome, settings)
    log.info(
        "webhook %s (%s, job %s) attempt %d: %s -> %s",
        event.webhook_id,
        event.type,
        event.job_id,
        event.attempt,
        outcome.status_code if outcome.error is None else outcome.error,
        state,
    )
    return state


async def send(
    client: EgressClient, event: ClaimedEvent, body: str, secrets: list[str], settings: Settings
) -> Outcome:
    """POST the signed body once; what came back, as an ``Outcome``. Never raises for what
    the receiver or the network does."""
    headers = webhooks.signed_headers(event.webhook_id, body, secrets, timestamp=int(time.time()))
    started = time.monotonic()

    def elapsed() -> float:
        return (time.monotonic() - started) * 1000

    try:
        async with client.stream(
            "POST",
            event.url,
            headers=headers,
            content=body.encode(),
            deadline=settings.webhook_timeout_seconds,
            follow_redirects=False,
        ) as response:
            status, latency = response.status_code, elapsed()
            location = response.headers.get("location")
    except StenoError as exc:  # url_forbidden, invalid_url: retrying can't help
        return Outcome(None, None, f"{exc.code}: {exc.detail}", permanent=True)
    except TimeoutError:
        return Outcome(None, elapsed(), f"no answer within {settings.webhook_timeout_seconds:g} s")
    except httpx.HTTPError as exc:
        return Outcome(None, elapsed(), f"{type(exc).__name__}: {redact(str(exc)) or 'failed'}")
    if 300 <= status < 400:
        target = redact(location) if location else "nowhere"
        return Outcome(status, latency, f"redirect to {target} not followed")
    if not 200 <= status < 300:
        return Outcome(status, latency, f"the receiver answered {status}")
    return Outcome(status, latency)


async def dispatch_webhooks(ctx: dict[str, Any]) -> int:
    """Send a delivery message for every due event (the relay sweep's step); how many."""
    async with ctx["sessions"]() as session, session.begin():
        ids = await webhooks.dispatch_due(session, ctx["settings"])
    if ids:
        await publish_pending(ctx["sessions"], ctx["publisher"], ids=ids, offload=ctx["in_hub"])
    return len(ids)
