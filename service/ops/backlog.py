"""What waits on each queue, read from PostgreSQL at the moment it is asked, and ETAs from it.

A queued job waits on ``io`` while it is a URL job whose audio is not fetched yet (``running``
there means being fetched), and on ``gpu`` once it has audio. ETAs use the *measured*
real-time factor: the median of (finished - started) / audio seconds over the most recently
completed jobs, and the GPU pool's concurrency from the worker census. Jobs leave a queue
about in the order they were submitted, so what waits ahead of a queued job is the queued
audio submitted before it, plus what the running jobs still have to decode.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.db.models import Job
from service.core.routing import QueueName
from service.core.states import JobStatus
from service.health.controllers import WorkerCensus

__all__ = ["Backlog", "Estimator", "backlogs", "realtime_factor"]

# Completed jobs the real-time factor is the median over (the most recent ones).
RECENT_JOBS = 50


@dataclass(frozen=True, slots=True)
class Backlog:
    """One queue's jobs now: waiting (and their audio), running (and the audio they have left)."""

    queue: str
    jobs_waiting: int = 0
    audio_seconds_waiting: float = 0.0
    jobs_running: int = 0
    audio_seconds_running_left: float = 0.0


_FETCHING = and_(
    Job.status == JobStatus.queued, Job.audio_path.is_(None), Job.progress_stage == "fetching"
)


async def backlogs(session: AsyncSession) -> dict[str, Backlog]:
    """Every queue's backlog (each queue present, zeros when nothing waits)."""
    queue = case((Job.audio_path.is_(None), QueueName.IO.value), else_=QueueName.GPU.value)
    waiting = and_(Job.status == JobStatus.queued, ~_FETCHING)
    running = or_(Job.status == JobStatus.running, _FETCHING)
    left = Job.audio_seconds * (100.0 - Job.progress_percent) / 100.0
    rows = await session.execute(
        select(
            queue.label("queue"),
            func.count().filter(waiting),
            func.coalesce(func.sum(Job.audio_seconds).filter(waiting), 0.0),
            func.count().filter(running),
            func.coalesce(func.sum(left).filter(Job.status == JobStatus.running), 0.0),
        )
        .where(Job.status.in_((JobStatus.queued, JobStatus.running)))
        .group_by(queue)
    )
    found = {name.value: Backlog(name.value) for name in QueueName}
    for name, waits, audio, runs, audio_left in rows.all():
        found[name] = Backlog(name, waits, float(audio), runs, float(audio_left))
    return found


# The median processing seconds per audio second of the $1 most recently completed jobs.
_REALTIME_FACTOR = """
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY f) FROM (
  SELECT extract(epoch FROM finished_at - started_at) / audio_seconds AS f FROM jobs
  WHERE status = 'completed' AND audio_seconds > 0
    AND started_at IS NOT NULL AND finished_at IS NOT NULL
  ORDER BY finished_at DESC LIMIT $1) recent
"""

# The GPU work ahead of a queued job ($1, $2: its created_at and id): the audio queued before
# it, and what the running jobs have left to decode.
_AHEAD = """
SELECT coalesce(sum(audio_seconds) FILTER (
         WHERE status = 'queued' AND audio_path IS NOT NULL AND (created_at, id) < ($1, $2)), 0)
     + coalesce(sum(audio_seconds * (100.0 - progress_percent) / 100.0) FILTER (
         WHERE status = 'running'), 0)
FROM jobs WHERE status IN ('queued', 'running')
"""


async def realtime_factor(pool: asyncpg.Pool, *, recent: int = RECENT_JOBS) -> float | None:
    """The median processing seconds per audio second of recently completed jobs (None: none)."""
    median = await pool.fetchval(_REALTIME_FACTOR, recent)
    return None if median is None else float(median)


class Estimator:
    """ETAs from the measured real-time factor (cached ``ttl`` seconds) and the GPU pool's
    concurrency (the census's, else ``fallback_concurrency``)."""

    def __init__(self, census: WorkerCensus, *, fallback_concurrency: int, ttl: float = 30.0):
        self._census = census
        self._fallback = max(1, fallback_concurrency)
        self._ttl = ttl
        self._factor: tuple[float, float | None] | None = None

    async def factor(self, pool: asyncpg.Pool) -> float | None:
        """The real-time factor, measured at most every ``ttl`` seconds."""
        now = time.monotonic()
        if self._factor is None or now - self._factor[0] >= self._ttl:
            self._factor = (now, await realtime_factor(pool))
        return self._factor[1]

    async def queued_eta(
        self,
        pool: asyncpg.Pool,
        job_id: uuid.UUID,
        created_at: datetime,
        audio_seconds: float | None,
    ) -> float | None:
        """Seconds until a queued job with audio completes: the work ahead of it shared by the
        GPU pool, then its own (None with no measured rate)."""
        factor = await self.factor(pool)
        if factor is None:
            return None
        ahead = Backlog(
            QueueName.GPU.value,
            audio_seconds_waiting=float(await pool.fetchval(_AHEAD, created_at, job_id) or 0.0),
        )
        wait = self.wait(ahead, factor, self.gpu_slots()) or 0.0
        return round(wait + factor * (audio_seconds or 0.0), 1)

    def gpu_slots(self) -> int:
        """GPU children serving the queue, as last counted (never waits on the broker)."""
        census = self._census.peek()
        slots = census.concurrency.get(QueueName.GPU.value, 0) if census else 0
        return slots or self._fallback

    @staticmethod
    def wait(backlog: Backlog, factor: float | None, slots: int) -> float | None:
        """Seconds until a job that joins the GPU queue now starts (None: unknown)."""
        if factor is None or slots <= 0:
            return None
        work = backlog.audio_seconds_waiting + backlog.audio_seconds_running_left
        return round(factor * work / slots, 1)
