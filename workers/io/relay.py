"""The relay's sweep: publish what the fast path did not, and re-send lost messages.

PostgreSQL is the truth and Redis only transport, so a job must survive its message being
lost (Redis restarted with nothing on disk, or a task that gave up before claiming it),
and a running job must survive its worker (the reaper requeues it once the lease lapses).
The sweep notices through a marker key in the broker's Redis: when the key is gone, the
broker lost its queues, and every active job's task is sent again. Apart from that, jobs
whose lease ran out, or queued jobs untouched for ``STENO_REDRIVE_AFTER_SECONDS``, are sent
again too. Workers are idempotent, so a message sent twice does nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from service.core import fairness, redrive
from service.core.outbox import PUBLISH_BATCH, publish_pending
from service.core.settings import Settings
from workers.io.webhooks import dispatch_webhooks

log = logging.getLogger(__name__)

BROKER_MARKER = "steno:broker-marker"


async def relay_outbox(ctx: dict[str, Any]) -> int:
    """Re-enqueue stranded jobs, release held transcriptions within each owner's fair share
    (``service.core.fairness``), publish outbox messages older than the grace period, then
    send the webhook deliveries that are due.

    Returns how many messages went out. The grace period leaves fresh rows to the fast
    path that committed them.
    """
    settings: Settings = ctx["settings"]
    await reap_expired(ctx)
    await redrive_stranded(ctx)
    total = await fairness.release_and_publish(
        ctx["sessions"], ctx["publisher"], settings, offload=ctx["in_hub"]
    )
    while True:
        sent = await publish_pending(
            ctx["sessions"],
            ctx["publisher"],
            older_than=settings.outbox_grace_seconds,
            offload=ctx["in_hub"],
        )
        total += sent
        if sent < PUBLISH_BATCH:
            return total + await dispatch_webhooks(ctx)


async def reap_expired(ctx: dict[str, Any]) -> int:
    """The stuck-job reaper: requeue (and re-send) running jobs whose worker stopped renewing
    its lease, or fail them once they had ``STENO_MAX_ATTEMPTS`` deliveries.

    Returns how many jobs it requeued or failed. The reason is kept in the job's ``error``.
    """
    settings: Settings = ctx["settings"]
    async with ctx["sessions"]() as session, session.begin():
        requeued, failed = await redrive.reap_expired_leases(
            session, max_attempts=settings.max_attempts
        )
        ids = [await _stage(session, settings, job) for job in requeued]
    for job_id in failed:
        log.warning("job %s: its worker stopped renewing the lease; failed at the cap", job_id)
    if ids:
        log.warning("requeued %d jobs whose worker stopped renewing the lease", len(ids))
        await publish_pending(ctx["sessions"], ctx["publisher"], ids=ids, offload=ctx["in_hub"])
    return len(requeued) + len(failed)


async def redrive_stranded(ctx: dict[str, Any]) -> int:
    """Stage and publish a fresh task message for every job whose message may be lost.

    Returns how many. The broker's marker is set only after every job was re-sent, so a
    sweep that fails half-way (PostgreSQL down too) is repeated in full by the next one.
    """
    settings: Settings = ctx["settings"]
    broker = ctx["broker_redis"]
    try:
        broker_was_lost = broker is not None and not await broker.exists(BROKER_MARKER)
    except Exception:  # the broker is down: the outbox sweep still does what it can
        log.warning("could not read the broker marker; skipping the redrive", exc_info=True)
        return 0
    total, after = 0, None
    while True:
        async with ctx["sessions"]() as session, session.begin():
            stranded = await redrive.stranded_jobs(
                session,
                everything=broker_was_lost,
                queued_for=settings.redrive_after_seconds,
                lease_seconds=settings.lease_seconds,
                after=after,
            )
            ids = [await _stage(session, settings, job) for job in stranded]
        if ids:
            reason = "the broker lost its queues" if broker_was_lost else "messages look lost"
            log.warning("re-sending %d jobs' tasks: %s", len(ids), reason)
            await publish_pending(ctx["sessions"], ctx["publisher"], ids=ids, offload=ctx["in_hub"])
        total += len(ids)
        if not broker_was_lost or len(stranded) < 1000:
            break
        after = stranded[-1].job_id
    if broker_was_lost:
        await broker.set(BROKER_MARKER, str(time.time()))
    return total


async def _stage(session: Any, settings: Settings, job: redrive.Stranded) -> int:
    # Its message may be lost: re-sent at once, in its lane, never held for fairness.
    return await fairness.stage_next_task(
        session,
        settings,
        job.job_id,
        owner=job.owner,
        priority=job.priority,
        has_audio=job.has_audio,
        audio_seconds=job.audio_seconds,
        recovery=True,
    )
