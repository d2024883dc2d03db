"""What clients send and what they get back, as msgspec Structs (never ORM rows)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec

from service.core.db.models import Job
from service.core.speakers import diarization_view
from service.core.states import JobStatus

if TYPE_CHECKING:
    from service.jobs.queries import JobRecord


class SubmitUrl(msgspec.Struct, forbid_unknown_fields=True):
    """JSON body of ``POST /v1/jobs``: transcribe the audio at ``audio_url``."""

    audio_url: str
    language: str | None = None
    model: str | None = None
    word_timestamps: bool = False
    initial_prompt: str | None = None
    # POSTed the job's outcome, signed (see the README's Webhooks section).
    webhook_url: str | None = None
    # Answer with a completed job of the same audio and options instead of a new one.
    dedupe: bool = False
    # The job's GPU lane: high, normal or low.
    priority: str | None = None
    # Speaker diarization: who spoke when (see the README's Diarization section).
    # Unset: off, unless known_speakers names anyone (which turns it on).
    diarize: bool | msgspec.UnsetType = msgspec.UNSET
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    # Names of the owner's enrolled speakers (POST /v1/speakers) to label by name.
    known_speakers: list[str] | None = None


class Progress(msgspec.Struct):
    """Where a job is: ``stage`` (queued, fetching, starting, transcribing, ...) and percent.

    ``percent`` is the share of the audio decoded; ``audio_seconds_done`` the same in seconds;
    ``eta_seconds`` extrapolates the time since the job started (None until there is a rate);
    for a queued job with audio (``GET /v1/jobs/{id}``) it is the estimated time until it
    completes: the GPU work queued ahead of it, then its own, at the measured real-time factor.
    The SSE stream (``/v1/jobs/{id}/events``) has the same figures per segment.
    """

    stage: str | None
    percent: float
    audio_seconds_done: float | None = None
    eta_seconds: float | None = None

    @classmethod
    def from_row(cls, job: Job | JobRecord) -> Progress:
        """The latest progress recorded on the job row."""
        percent = job.progress_percent or 0.0
        done = job.audio_seconds * percent / 100 if job.audio_seconds is not None else None
        eta = None
        if job.status == JobStatus.running and job.started_at is not None and 0 < percent < 100:
            elapsed = (datetime.now(UTC) - job.started_at).total_seconds()
            eta = round(max(0.0, elapsed * (100 - percent) / percent), 1)
        return cls(
            stage=job.progress_stage,
            percent=round(percent, 1),
            audio_seconds_done=round(done, 2) if done is not None else None,
            eta_seconds=eta,
        )


class JobError(msgspec.Struct):
    """Why a job failed: a stable code and a human detail."""

    code: str
    detail: str


class JobView(msgspec.Struct):
    """A job as the API shows it."""

    id: uuid.UUID
    status: JobStatus
    progress: Progress
    error: JobError | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    audio_seconds: float | None
    language: str | None
    model: str
    word_timestamps: bool
    source: str
    filename: str | None
    audio_url: str | None
    webhook_url: str | None = None
    priority: str = "normal"
    # Speaker diarization asked for, and the known speakers named (None when none were).
    diarize: bool = False
    known_speakers: list[str] | None = None

    @classmethod
    def from_row(cls, job: Job | JobRecord) -> JobView:
        """The view of one job row."""
        return cls(
            id=job.id,
            status=JobStatus(job.status),
            progress=Progress.from_row(job),
            error=JobError(code=job.error_code, detail=job.error_detail or "")
            if job.error_code
            else None,
            attempts=job.attempts,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            audio_seconds=job.audio_seconds,
            language=job.language,
            model=job.model,
            word_timestamps=job.word_timestamps,
            source=job.source,
            filename=job.filename,
            audio_url=job.audio_url,
            webhook_url=job.webhook_url,
            priority=job.priority,
            **diarization_view(job.diarization),
        )


class JobPage(msgspec.Struct):
    """One page of ``GET /v1/jobs``; pass ``next_cursor`` back as ``cursor`` for the next."""

    items: list[JobView]
    next_cursor: str | None


class ErrorBody(msgspec.Struct):
    """Every error response: a stable machine code and a human explanation."""

    code: str
    detail: str
