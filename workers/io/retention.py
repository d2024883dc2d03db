"""Beat's retention sweep: delete finished jobs' audio, then finished jobs, once they are old.

Its own IO task (``io.retention_sweep``) on its own beat timer, not a step of the relay sweep:
the relay runs every few seconds and must stay quick (it re-sends lost work), while retention
may have thousands of rows and files to delete and can wait a minute. Each statement changes
at most ``retention.BATCH`` rows and the sweep stops taking new batches after
``BUDGET_SECONDS``; the next sweep goes on. Sweeps that overlap (a slow one and the next) are
harmless: rows are taken with ``SKIP LOCKED`` and a file already gone is skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from service.core import retention
from service.core.events.stream import stream_key
from service.core.settings import Settings
from service.core.storage import remove_audio

log = logging.getLogger(__name__)

# A sweep takes no new batch after this long.
BUDGET_SECONDS = 30.0

T = TypeVar("T")


async def retention_sweep(ctx: dict[str, Any]) -> dict[str, int]:
    """Apply ``STENO_RETAIN_JOBS_SECONDS`` and ``STENO_RETAIN_AUDIO_SECONDS`` (0: keep forever),
    and drop bookkeeping nothing reads any more: outbox rows published a day ago and
    ``Idempotency-Key`` rows past ``STENO_IDEMPOTENCY_TTL_SECONDS`` (always, whatever the
    retention settings).

    Returns how many jobs were deleted, how many jobs' audio was removed, how many leftover
    files (partial downloads, files of no job) went, and how many outbox and key rows went.
    """
    settings: Settings = ctx["settings"]
    deadline = time.monotonic() + BUDGET_SECONDS
    done = {"jobs": 0, "audio": 0, "files": 0, "outbox": 0, "idempotency_keys": 0}
    if settings.retain_jobs_seconds > 0:
        done["jobs"] = await _drain(
            ctx, retention.expire_jobs, settings.retain_jobs_seconds, deadline, _forget_jobs
        )
    if settings.retain_audio_seconds > 0:
        done["audio"] = await _drain(
            ctx, retention.expire_audio, settings.retain_audio_seconds, deadline, _forget_audio
        )
    windows = [w for w in (settings.retain_audio_seconds, settings.retain_jobs_seconds) if w > 0]
    if windows:
        done["files"] = await _remove_leftovers(ctx, min(windows))
    done["outbox"] = await _drain(
        ctx,
        retention.expire_published_outbox,
        retention.PUBLISHED_OUTBOX_KEEP_SECONDS,
        deadline,
    )
    done["idempotency_keys"] = await _drain(
        ctx, retention.expire_idempotency_keys, settings.idempotency_ttl_seconds, deadline
    )
    if any(done.values()):
        log.info(
            "retention: deleted %d jobs, the audio of %d jobs, %d leftover files, "
            "%d published outbox rows, %d expired idempotency keys",
            *done.values(),
        )
    return done


async def _drain(
    ctx: dict[str, Any],
    expire: Callable[..., Awaitable[list[T]]],
    older_than: float,
    deadline: float,
    forget: Callable[[dict[str, Any], list[T]], Awaitable[None]] | None = None,
) -> int:
    total = 0
    while True:
        async with ctx["sessions"]() as session, session.begin():
            expired = await expire(session, older_than=older_than, limit=retention.BATCH)
        if forget is not None:
            # Only now that the change is committed: no job points at these files any more.
            await forget(ctx, expired)
        total += len(expired)
        if len(expired) < retention.BATCH or time.monotonic() > deadline:
            return total


async def _forget_audio(ctx: dict[str, Any], expired: list[retention.Expired]) -> None:
    # Exactly the path the job had: a re-run URL job fetches under new names meanwhile.
    retention.delete_files(job.audio_path for job in expired)


async def _forget_jobs(ctx: dict[str, Any], expired: list[retention.Expired]) -> None:
    # The row is gone, so nothing can write files of these jobs any more: all of them go.
    audio_dir = ctx["settings"].audio_dir
    for job in expired:
        remove_audio(audio_dir, job.job_id, job.audio_path)
    if expired and ctx.get("redis") is not None:
        try:
            await ctx["redis"].delete(*(stream_key(job.job_id) for job in expired))
        except Exception as exc:  # the streams expire on their own
            log.warning("retention: event streams not deleted: %r", exc)


async def _remove_leftovers(ctx: dict[str, Any], older_than: float) -> int:
    settings: Settings = ctx["settings"]
    found = retention.stored_files(settings.audio_dir, older_than=older_than)
    if not found:
        return 0
    async with ctx["sessions"]() as session:
        leftovers = await retention.leftover_files(
            session,
            found,
            audio_older_than=settings.retain_audio_seconds,
            orphan_after=max(older_than, retention.ORPHAN_GRACE_SECONDS),
        )
    return retention.delete_files(leftovers)
