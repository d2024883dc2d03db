"""The transactional outbox: task messages committed with the change that caused them.

A message is written in the same transaction as the job row it concerns; publishing
happens only after commit (fast path) and again from a periodic sweep for whatever was not
published (the broker was down, the process died in between). Workers are idempotent, so a
message published twice does no harm; a message never published would lose a job.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.broker import Publisher
from service.core.db.models import OutboxMessage
from service.core.routing import TaskRef

log = logging.getLogger(__name__)

# Messages one ``publish_pending`` call takes at most; a full batch means more may wait.
PUBLISH_BATCH = 500

# Runs a blocking call somewhere it may block and awaits its result.
Offload = Callable[..., Awaitable[Any]]


async def add_message(
    session: AsyncSession,
    task: TaskRef,
    args: list[Any],
    *,
    job_id: uuid.UUID | None = None,
    time_limit: float | None = None,
    owner: str | None = None,
    held: bool = False,
) -> int:
    """Stage a task message in the caller's transaction; returns its outbox id.

    A ``held`` message waits until ``service.core.fairness`` releases it for its ``owner``.
    """
    message = OutboxMessage(
        job_id=job_id,
        task_name=task.name,
        queue=task.queue,
        args=args,
        time_limit=time_limit,
        publish_attempts=0,
        owner=owner,
        held=held,
    )
    session.add(message)
    await session.flush()
    return message.id


async def publish_pending(
    sessionmaker: async_sessionmaker[AsyncSession],
    publisher: Publisher,
    *,
    ids: Sequence[int] | None = None,
    older_than: float = 0.0,
    limit: int = PUBLISH_BATCH,
    offload: Offload = asyncio.to_thread,
) -> int:
    """Publish unpublished messages (only ``ids`` when given) and mark them; returns how many.

    Held messages (``service.core.fairness``) are left alone until they are released.

    Rows are locked with ``SKIP LOCKED`` so the fast path and the sweep never publish the
    same row at the same moment. The first broker error stops the batch: the rest stay
    unpublished for the next sweep. ``offload`` runs the blocking publish off the event loop
    (a thread by default; the IO worker hands it to its gevent hub).
    """
    query = (
        select(OutboxMessage)
        .where(OutboxMessage.published_at.is_(None), OutboxMessage.held.is_(False))
        .order_by(OutboxMessage.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if ids is not None:
        query = query.where(OutboxMessage.id.in_(list(ids)))
    if older_than > 0:
        query = query.where(OutboxMessage.created_at < func.now() - timedelta(seconds=older_than))
    published = 0
    async with sessionmaker() as session, session.begin():
        for message in (await session.scalars(query)).all():
            try:
                await offload(
                    publisher.publish,
                    message.task_name,
                    message.queue,
                    list(message.args),
                    message.time_limit,
                    message.created_at.timestamp(),
                )
            except Exception as exc:  # the broker's errors vary by transport
                message.publish_attempts += 1
                log.warning(
                    "outbox message %s (%s) not published, will retry: %s",
                    message.id,
                    message.task_name,
                    exc,
                )
                break
            message.published_at = func.now()
            published += 1
    return published
