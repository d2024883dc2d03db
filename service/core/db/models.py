"""The tables Steno keeps in PostgreSQL, the source of truth.

The schema itself is created only by Alembic (``migrations/``); these classes describe it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, REAL, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of Steno's tables."""


class Job(Base):
    """One transcription job; ``attempts`` is the fencing token of the current claim."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'completed', 'failed', 'cancelled')",
            name="jobs_status_valid",
        ),
        CheckConstraint("source IN ('upload', 'url')", name="jobs_source_valid"),
        CheckConstraint("task IN ('transcribe', 'translate')", name="jobs_task_valid"),
        # Listing pages newest first by (created_at, id), one owner's jobs at a time.
        Index("ix_jobs_owner_created_at", "owner", "created_at", "id"),
        # The retention sweep: the oldest finished jobs, and those that still hold audio.
        Index(
            "ix_jobs_finished_at", "finished_at", postgresql_where=text("finished_at IS NOT NULL")
        ),
        Index(
            "ix_jobs_finished_with_audio",
            "finished_at",
            postgresql_where=text("finished_at IS NOT NULL AND audio_path IS NOT NULL"),
        ),
        # dedupe=true looks for a completed job of the owner with the same audio.
        Index(
            "ix_jobs_dedupe",
            "owner",
            "audio_sha256",
            postgresql_where=text("status = 'completed' AND audio_sha256 IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    # Who may see the job: the owner of the API key that submitted it.
    owner: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    source: Mapped[str] = mapped_column(String(8), nullable=False)
    audio_url: Mapped[str | None] = mapped_column(Text)
    audio_path: Mapped[str | None] = mapped_column(Text)
    filename: Mapped[str | None] = mapped_column(Text)
    content_type: Mapped[str | None] = mapped_column(Text)
    audio_bytes: Mapped[int | None] = mapped_column(BigInteger)
    audio_seconds: Mapped[float | None] = mapped_column(Float)
    language: Mapped[str | None] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(Text, nullable=False)
    word_timestamps: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    initial_prompt: Mapped[str | None] = mapped_column(Text)
    # Whisper's task: transcribe, or translate into English (multilingual models only).
    task: Mapped[str] = mapped_column(
        String(16), nullable=False, default="transcribe", server_default="transcribe"
    )
    # Sampling temperature a client asked for; None keeps Whisper's fallback schedule.
    temperature: Mapped[float | None] = mapped_column(Float)
    # Speaker diarization asked for (count bounds, known voice prints); None: not diarized.
    diarization: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    progress_stage: Mapped[str | None] = mapped_column(String(32))
    progress_percent: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # ``attempts`` at the latest re-run: the cap counts claims since then, while ``attempts``
    # (the fencing token) never goes down.
    attempts_base: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )
    worker: Mapped[str | None] = mapped_column(Text)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Where the job's outcome is POSTed, signed with the secret of the key that submitted it
    # (a trigger records the event with the final status: see ``service.core.webhooks``).
    webhook_url: Mapped[str | None] = mapped_column(Text)
    webhook_key_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    # Content dedupe: the audio's SHA-256 (at upload or fetch) and a digest of the options.
    audio_sha256: Mapped[str | None] = mapped_column(String(64))
    options_digest: Mapped[str | None] = mapped_column(String(64))
    # The GPU lane the job's transcription goes to (service.core.routing.Priority).
    priority: Mapped[str] = mapped_column(
        String(8), nullable=False, default="normal", server_default="normal"
    )


class Transcript(Base):
    """The transcript of a completed job, written in the same transaction as its final status."""

    __tablename__ = "transcripts"

    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    text: Mapped[str] = mapped_column(Text, nullable=False)
    language: Mapped[str] = mapped_column(String(16), nullable=False)
    duration: Mapped[float] = mapped_column(Float, nullable=False)
    segments: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class OutboxMessage(Base):
    """A task message committed with the change that caused it; the relay publishes it."""

    __tablename__ = "outbox"
    __table_args__ = (
        # The relay's sweep only ever looks at what is still unpublished.
        Index("ix_outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),
        # Fairness: the held rows, per lane and owner, oldest first.
        Index("ix_outbox_held", "queue", "owner", "id", postgresql_where=text("held")),
        # Retention: published rows, oldest first (service.core.retention).
        Index(
            "ix_outbox_published",
            "published_at",
            postgresql_where=text("published_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    task_name: Mapped[str] = mapped_column(Text, nullable=False)
    queue: Mapped[str] = mapped_column(Text, nullable=False)
    args: Mapped[list[Any]] = mapped_column(JSONB, nullable=False)
    # Hard time limit for the task, in seconds (scaled to the audio's duration).
    time_limit: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    publish_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Per-owner fairness (service.core.fairness): whose job the message moves on, and whether
    # it waits here until the owner has room in its lane (the relay never publishes a held row).
    owner: Mapped[str | None] = mapped_column(String(64))
    held: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=text("false")
    )


class JobEvent(Base):
    """A progress milestone (started, completed, failed, cancelled) kept beyond Redis.

    ``stream_ms``-``stream_seq`` is the event's position: the Redis Stream entry id it got,
    which is also its SSE ``id:``, so a client resumes across Redis and PostgreSQL alike.
    """

    __tablename__ = "job_events"
    __table_args__ = (
        UniqueConstraint("job_id", "stream_ms", "stream_seq", name="uq_job_events_position"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    )
    stream_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)
    stream_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class ApiKey(Base):
    """An API key: its lookup prefix and a hash of the whole key, never the key itself."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False, unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    # Jobs belong to an owner; each key has its own unless created to share another's.
    owner: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookSecret(Base):
    """An API key's webhook signing secret (sealed, see ``service.core.webhooks.secrets``),
    and the one it replaced, still signed with for a grace period after ``rotated_at``."""

    __tablename__ = "webhook_secrets"

    key_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    secret: Mapped[str] = mapped_column(Text, nullable=False)
    previous_secret: Mapped[str | None] = mapped_column(Text)
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class WebhookEvent(Base):
    """One job outcome to announce: inserted by a trigger in the transaction of the final
    status UPDATE, then delivered (and retried on its own schedule) by the IO pool.

    ``job`` is the job row as that UPDATE left it; ``body`` the exact bytes sent, fixed at
    the first attempt. ``attempts`` fences deliveries: a handler claims attempt n + 1 only
    while ``attempts`` is still n.
    """

    __tablename__ = "webhook_events"
    __table_args__ = (
        CheckConstraint(
            "state IN ('pending', 'delivered', 'failed')", name="webhook_events_state_valid"
        ),
        # The relay's dispatch only looks at what is still to be sent.
        Index(
            "ix_webhook_events_due",
            "next_attempt_at",
            postgresql_where=text("state = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True
    )
    key_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    type: Mapped[str] = mapped_column(String(32), nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    job: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    body: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), nullable=False, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # Attempts made before the latest redelivery: the retry cap counts from here.
    round_start: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class WebhookDelivery(Base):
    """One delivery attempt of a webhook event: the receiver's status code, latency, error."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("webhook_events.id", ondelete="CASCADE"), nullable=False, index=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    )
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class IdempotencyKey(Base):
    """An ``Idempotency-Key`` an owner submitted with, the request's fingerprint and its job.

    The primary key makes two concurrent submits with one key create one job: the second
    INSERT waits for the first transaction and then conflicts.
    """

    __tablename__ = "idempotency_keys"
    # Retention: keys past their TTL, oldest first (service.core.retention).
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class Speaker(Base):
    """A known speaker of an owner: a short clip of their voice and, once a GPU child has
    computed it (at the first diarized job that names the speaker), its voice print."""

    __tablename__ = "speakers"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_speakers_owner_name"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), nullable=False)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    clip_path: Mapped[str] = mapped_column(Text, nullable=False)
    clip_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    # The L2-normalised speaker-encoder embedding of the clip; NULL until first computed.
    voice_print: Mapped[list[float] | None] = mapped_column(ARRAY(REAL))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
