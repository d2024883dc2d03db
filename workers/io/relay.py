"""The outbox relay's sweep: publish what the fast path after commit did not."""

from __future__ import annotations

from typing import Any

from service.outbox import publish_pending
from service.settings import Settings


async def relay_outbox(ctx: dict[str, Any]) -> int:
    """Publish outbox messages older than the grace period; returns how many went out.

    The grace period leaves fresh rows to the fast path that committed them.
    """
    settings: Settings = ctx["settings"]
    total = 0
    while True:
        sent = await publish_pending(
            ctx["sessions"],
            ctx["publisher"],
            older_than=settings.outbox_grace_seconds,
            offload=ctx["in_hub"],
        )
        total += sent
        if sent < 500:
            return total
