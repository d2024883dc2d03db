"""Steno's Prometheus series, and how a process records them (once per committed transition).

Every series is defined here, for the API and the workers alike. A process that serves an
exporter first calls ``write_to(folder)``: its series then live in files in that folder
(prometheus_client's multiprocess mode), so the granian workers of one API, or the prefork
children of one GPU worker, add up in one scrape (``service.core.exporter`` reads them).

A transition's counter is recorded by whichever process made the transition, once its
transaction commits (``on_commit``): a rolled-back or fenced-out write counts nothing, and a
committed one counts once, wherever it ran.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

__all__ = [
    "Series",
    "count_claim",
    "count_finished",
    "count_submitted",
    "observe_stage",
    "observe_transcription",
    "on_commit",
    "series",
    "write_to",
]

log = logging.getLogger(__name__)

# Submit → final takes seconds (a short upload) to hours (a backlog of long audio).
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
# Processing seconds per audio second: tiny.en on a GPU is about 0.01, on 2 CPU cores 0.1-0.3.
RTF_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Series:
    """Every series Steno records (names as Prometheus shows them, ``_total`` added to counters)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # This process's own values (``registry.get_sample_value``); a scrape reads the files.
        self.registry = registry
        self.jobs_submitted = Counter(
            "steno_jobs_submitted",
            "Jobs accepted (committed) by the API, by source (upload, url).",
            ["source"],
            registry=registry,
        )
        self.jobs_finished = Counter(
            "steno_jobs_finished",
            "Jobs that reached a final state (completed, failed, cancelled), counted where "
            "the final UPDATE committed.",
            ["status"],
            registry=registry,
        )
        self.job_attempts = Counter(
            "steno_job_attempts",
            "Claims of a job by a GPU worker (each one bumps the job's attempts).",
            registry=registry,
        )
        self.job_duration = Histogram(
            "steno_job_duration_seconds",
            "Submit to final state, by final status.",
            ["status"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.stage_duration = Histogram(
            "steno_stage_duration_seconds",
            "Time in each stage: queued (submit to first claim), fetch (download and probe "
            "of an audio_url), transcribe (Whisper, in a completed attempt).",
            ["stage"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.realtime_factor = Histogram(
            "steno_transcribe_realtime_factor",
            "Transcription seconds per second of audio, per completed job.",
            buckets=RTF_BUCKETS,
            registry=registry,
        )
        self.sse_streams = Gauge(
            "steno_sse_streams",
            "Server-Sent Event streams open now.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.http_requests = Counter(
            "steno_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "steno_http_request_duration_seconds",
            "Time to the first byte of the answer, by method and route template.",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )


_series: Series | None = None
_folder: Path | None = None


def series() -> Series:
    """This process's series, made on first use (after ``write_to``, if the process calls it)."""
    global _series
    if _series is None:
        _series = Series(CollectorRegistry(auto_describe=True))
    return _series


def write_to(folder: Path) -> bool:
    """Keep this process's series in files in ``folder`` from now on (multiprocess mode).

    Returns False when they already are. Call it before the process records anything, and
    before it forks children (they inherit it and write files of their own, by pid).
    """
    global _series, _folder
    if _folder == folder:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    # prometheus_client reads the folder from the environment when it opens a file, and picks
    # its value class when a series is made: both are set here, before any series exists.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    values.ValueClass = values.MultiProcessValue()
    _folder, _series = folder, None
    return True


# -- recorded once a transaction commits ------------------------------------------------

_PENDING = "steno_metrics_on_commit"


def on_commit(session: AsyncSession, record: Callable[[], None]) -> None:
    """Run ``record`` once ``session``'s transaction commits; never if it rolls back."""
    session.sync_session.info.setdefault(_PENDING, []).append(record)


def _run_pending(session: Session) -> None:
    for record in session.info.pop(_PENDING, ()):
        try:
            record()
        except Exception:  # a metric must never cost a transition
            log.warning("a metric was not recorded", exc_info=True)


def _drop_pending(session: Session, transaction: SessionTransaction) -> None:
    # After a commit the list is gone already; after a rollback what it held never happened.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


if not event.contains(Session, "after_commit", _run_pending):
    event.listen(Session, "after_commit", _run_pending)
    event.listen(Session, "after_transaction_end", _drop_pending)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def count_submitted(session: AsyncSession, source: str) -> None:
    """A job was created in this transaction."""
    on_commit(session, lambda: series().jobs_submitted.labels(source).inc())


def count_claim(
    session: AsyncSession, attempt: int, created_at: datetime, started_at: datetime | None
) -> None:
    """A job was claimed in this transaction; the first claim ends its ``queued`` stage."""

    def record() -> None:
        s = series()
        s.job_attempts.inc()
        waited = _seconds(created_at, started_at)
        if attempt == 1 and waited is not None:
            s.stage_duration.labels("queued").observe(waited)

    on_commit(session, record)


def count_finished(session: AsyncSession, status: str, rows: Iterable[Any]) -> None:
    """Jobs reached final ``status`` in this transaction; ``rows`` have ``created_at`` and
    ``finished_at``."""
    durations = [_seconds(row.created_at, row.finished_at) for row in rows]
    if not durations:
        return

    def record() -> None:
        s = series()
        s.jobs_finished.labels(status).inc(len(durations))
        for seconds in durations:
            if seconds is not None:
                s.job_duration.labels(status).observe(seconds)

    on_commit(session, record)


def observe_stage(stage: str, seconds: float) -> None:
    """A stage of a job took ``seconds`` (call it after the stage's work was committed)."""
    series().stage_duration.labels(stage).observe(max(0.0, seconds))


def observe_transcription(seconds: float, audio_seconds: float) -> None:
    """A completed transcription: its stage time and its real-time factor."""
    observe_stage("transcribe", seconds)
    if audio_seconds > 0:
        series().realtime_factor.observe(seconds / audio_seconds)
