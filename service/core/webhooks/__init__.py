"""Signed webhooks per job: what the API and the IO pool share (events, secrets, payloads).

How an outcome becomes exactly one event: a PostgreSQL trigger on ``jobs`` (migration
``0007_webhooks``) inserts a ``webhook_events`` row in the same transaction as the UPDATE
that moves a job with a ``webhook_url`` into ``completed``, ``failed`` or ``cancelled``. Every
path to a final state (``complete_job``, ``fail_job``, ``fail_fetch``, ``cancel_job``, the
attempt cap in ``claim_job`` and in ``reap_expired_leases``, and any added later) is such an
UPDATE, and each is conditional, so a task that runs twice can't finish a job twice: the
second UPDATE matches no row and the trigger never fires. Nothing at the call sites can
forget to record an event, and no event exists for an UPDATE that rolled back.

The events table is the delivery schedule: the relay sweep dispatches due events through
the outbox (``events.stage_delivery``); a delivery claims its attempt with a fenced UPDATE,
sends through the egress (no redirects followed), and records the attempt and the next
time (exponential backoff with jitter) in one transaction. A worker killed mid-delivery
leaves the event due again once its lease lapses, so no event is lost; a receiver may see
an event twice, always with the same ``webhook-id``.
"""

from service.core.webhooks.events import (
    ClaimedEvent,
    Outcome,
    claim_event,
    delivery_lease,
    dispatch_due,
    record_attempt,
    redeliver_last,
    retry_delay,
    stage_delivery,
    store_body,
)
from service.core.webhooks.payload import event_body, job_view, signed_headers
from service.core.webhooks.secrets import (
    SecretBox,
    current_secret,
    new_secret,
    rotate_secret,
    signing_secrets,
)

__all__ = [
    "ClaimedEvent",
    "Outcome",
    "SecretBox",
    "claim_event",
    "current_secret",
    "delivery_lease",
    "dispatch_due",
    "event_body",
    "job_view",
    "new_secret",
    "record_attempt",
    "redeliver_last",
    "retry_delay",
    "rotate_secret",
    "signed_headers",
    "signing_secrets",
    "stage_delivery",
    "store_body",
]
