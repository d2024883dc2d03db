"""Retention: which finished jobs' audio, which finished jobs, and which files are due to go.

Beat's retention sweep (``workers/io/retention.py``) calls these in bounded batches. Only
final jobs are touched, and each batch's rows are locked with ``SKIP LOCKED``, so a re-run
holding a row is simply left for the next sweep. A file is deleted only after the row change
that stops anything pointing at it has committed: a crash in between leaves a file that no
job needs (``leftover_files`` finds it later), never a job that points at a missing file.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, false, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.db.models import IdempotencyKey, Job, OutboxMessage
from service.core.states import FINAL

# Rows one statement changes at most.
BATCH = 500
# A file with no job row is kept at least this long: an upload is written before its row.
ORPHAN_GRACE_SECONDS = 3600.0
# Files one sweep looks at, at most (the rest wait for the next sweep).
SCAN_LIMIT = 5000
# A published outbox row is never read again; it is kept this long to tell what was sent.
PUBLISHED_OUTBOX_KEEP_SECONDS = 86400.0


@dataclass(frozen=True, slots=True)
class Expired:
    """A job whose audio (or the whole job) was just removed from PostgreSQL."""

    job_id: uuid.UUID
    audio_path: str | None


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file in the audio folder named after a job (``<job id>.*``)."""

    path: Path
    mtime: float


def _finished_before(seconds: float) -> Any:
    return and_(
        Job.status.in_(FINAL),
        Job.finished_at.is_not(None),
        Job.finished_at < func.now() - timedelta(seconds=seconds),
    )


async def expire_audio(
    session: AsyncSession, *, older_than: float, limit: int = BATCH
) -> list[Expired]:
    """Set ``audio_path`` NULL on up to ``limit`` jobs that finished ``older_than`` seconds ago.

    Returns each job with the path it had: the caller deletes those files once its
    transaction committed. The job and its transcript stay; a re-run of an upload job then
    answers ``audio_gone``, a URL job is fetched again.
    """
    picked = (
        select(Job.id, Job.audio_path)
        .where(_finished_before(older_than), Job.audio_path.is_not(None))
        .order_by(Job.finished_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("picked")
    )
    rows = (
        await session.execute(
            update(Job)
            .where(Job.id == picked.c.id)
            .values(audio_path=None, updated_at=func.now())
            .returning(Job.id, picked.c.audio_path)
        )
    ).all()
    return [Expired(row[0], row[1]) for row in rows]


async def expire_jobs(
    session: AsyncSession, *, older_than: float, limit: int = BATCH
) -> list[Expired]:
    """Delete up to ``limit`` jobs that finished ``older_than`` seconds ago.

    Their transcript, events and outbox rows go with them (``ON DELETE CASCADE``). Returns
    each job with its audio path: the caller deletes its files once the transaction committed.
    """
    picked = (
        select(Job.id)
        .where(_finished_before(older_than))
        .order_by(Job.finished_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    rows = (
        await session.execute(
            delete(Job).where(Job.id.in_(picked)).returning(Job.id, Job.audio_path)
        )
    ).all()
    return [Expired(row.id, row.audio_path) for row in rows]


async def expire_published_outbox(
    session: AsyncSession, *, older_than: float, limit: int = BATCH
) -> list[int]:
    """Delete up to ``limit`` outbox rows published ``older_than`` seconds ago; returns their
    ids. Unpublished and held rows are never touched (the relay still owes them)."""
    picked = (
        select(OutboxMessage.id)
        .where(
            OutboxMessage.published_at.is_not(None),
            OutboxMessage.published_at < func.now() - timedelta(seconds=older_than),
        )
        .order_by(OutboxMessage.published_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    deleted = await session.scalars(
        delete(OutboxMessage).where(OutboxMessage.id.in_(picked)).returning(OutboxMessage.id)
    )
    return list(deleted)


async def expire_idempotency_keys(
    session: AsyncSession, *, older_than: float, limit: int = BATCH
) -> list[str]:
    """Delete up to ``limit`` ``Idempotency-Key`` rows made ``older_than`` seconds ago (past
    their TTL, they answer nothing: a new request with the key takes the row over); returns
    their keys."""
    picked = (
        select(IdempotencyKey.owner, IdempotencyKey.key)
        .where(IdempotencyKey.created_at < func.now() - timedelta(seconds=older_than))
        .order_by(IdempotencyKey.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("picked")
    )
    deleted = await session.scalars(
        delete(IdempotencyKey)
        .where(IdempotencyKey.owner == picked.c.owner, IdempotencyKey.key == picked.c.key)
        .returning(IdempotencyKey.key)
    )
    return list(deleted)


def stored_files(
    audio_dir: Path, *, older_than: float, limit: int = SCAN_LIMIT
) -> dict[uuid.UUID, list[StoredFile]]:
    """Files ``<job id>.*`` in ``audio_dir`` last written more than ``older_than`` seconds ago.

    A job's files are all written before it finishes, so a job whose audio is due has only
    files this old: younger ones need no look at the database. Other names are ignored.
    """
    cutoff = time.time() - older_than
    found: dict[uuid.UUID, list[StoredFile]] = {}
    count = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(audio_dir) as entries:
        for entry in entries:
            stem, dot, _ = entry.name.partition(".")
            if not dot:
                continue
            try:
                job_id = uuid.UUID(stem)
                if not entry.is_file(follow_symlinks=False):
                    continue
                mtime = entry.stat(follow_symlinks=False).st_mtime
            except (ValueError, FileNotFoundError):
                continue
            if mtime < cutoff:
                found.setdefault(job_id, []).append(StoredFile(Path(entry.path), mtime))
                count += 1
                if count >= limit:
                    break
    return found


async def leftover_files(
    session: AsyncSession,
    found: Mapping[uuid.UUID, list[StoredFile]],
    *,
    audio_older_than: float,
    orphan_after: float,
) -> list[Path]:
    """The files among ``found`` that no job needs any more.

    That is a file whose job has no row and that was last written ``orphan_after`` seconds
    ago (a crash mid-upload, or after deleting a job's row), and a file of a final job whose
    audio is due (``audio_older_than`` > 0) other than the job's ``audio_path`` (a partial
    download, or audio a crash left behind after ``expire_audio``). An active job's files,
    and the file ``audio_path`` names, are never listed.
    """
    audio_due: Any = false()
    if audio_older_than > 0:
        audio_due = _finished_before(audio_older_than)
    orphan_before = time.time() - orphan_after
    ids = list(found)
    rows: dict[uuid.UUID, Any] = {}
    for start in range(0, len(ids), BATCH):
        result = await session.execute(
            select(Job.id, Job.audio_path, audio_due.label("audio_due")).where(
                Job.id.in_(ids[start : start + BATCH])
            )
        )
        rows.update((row.id, row) for row in result)
    leftovers = []
    for job_id, files in found.items():
        row = rows.get(job_id)
        for file in files:
            if row is None:
                gone = file.mtime < orphan_before
            else:
                kept = Path(row.audio_path).name if row.audio_path else None
                gone = bool(row.audio_due) and file.path.name != kept
            if gone:
                leftovers.append(file.path)
    return leftovers


def delete_files(paths: Iterable[Path | str | None]) -> int:
    """Delete the files that exist among ``paths``; returns how many it deleted."""
    deleted = 0
    for path in paths:
        if path:
            with contextlib.suppress(FileNotFoundError):
                Path(path).unlink()
                deleted += 1
    return deleted
