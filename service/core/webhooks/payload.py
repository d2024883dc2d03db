"""A webhook event's body (the job as the API shows it) and its Standard Webhooks headers.

The body is ``{"type", "timestamp", "data"}``: ``type`` is ``job.completed``,
``job.failed`` or ``job.cancelled``, ``timestamp`` when the job reached that state, and
``data`` the job exactly as ``GET /v1/jobs/{id}`` shows it (``service.jobs.schemas.JobView``,
built here from the row the trigger saved, since the core can't import the API; a test holds
the two equal). Headers follow the Standard Webhooks specification: ``webhook-id`` (the
same on every attempt of one event), ``webhook-timestamp`` (this attempt, Unix seconds) and
``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` per secret,
space-separated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from standardwebhooks import Webhook

from service.core.speakers import diarization_view

USER_AGENT = "steno-webhooks/0.1"


def job_view(job: Mapping[str, Any]) -> dict[str, Any]:
    """``JobView`` of a job row snapshot (``to_jsonb`` of a ``jobs`` row)."""
    percent = float(job.get("progress_percent") or 0.0)
    seconds = job.get("audio_seconds")
    done = seconds * percent / 100 if seconds is not None else None
    return {
        "id": job["id"],
        "status": job["status"],
        "progress": {
            "stage": job.get("progress_stage"),
            "percent": round(percent, 1),
            "audio_seconds_done": round(done, 2) if done is not None else None,
            # Only a running job has an ETA; events are about finished ones.
            "eta_seconds": None,
        },
        "error": {"code": job["error_code"], "detail": job.get("error_detail") or ""}
        if job.get("error_code")
        else None,
        "attempts": job["attempts"],
        "created_at": _time(job.get("created_at")),
        "started_at": _time(job.get("started_at")),
        "finished_at": _time(job.get("finished_at")),
        "audio_seconds": seconds,
        "language": job.get("language"),
        "model": job["model"],
        "word_timestamps": job["word_timestamps"],
        "source": job["source"],
        "filename": job.get("filename"),
        "audio_url": job.get("audio_url"),
        "webhook_url": job.get("webhook_url"),
        "priority": job.get("priority") or "normal",
        **diarization_view(job.get("diarization")),
    }


def _time(value: str | None) -> datetime | None:
    # PostgreSQL writes the session's offset; the API shows UTC.
    return None if value is None else datetime.fromisoformat(value).astimezone(UTC)


def event_body(event_type: str, at: datetime, job: Mapping[str, Any]) -> str:
    """The JSON body of an event (sent byte for byte alike on every attempt)."""
    payload = {"type": event_type, "timestamp": at.astimezone(UTC), "data": job_view(job)}
    return msgspec.json.encode(payload).decode()


def signed_headers(
    webhook_id: str, body: str, secrets: Sequence[str], *, timestamp: int
) -> dict[str, str]:
    """The request headers of one attempt, signed with each of ``secrets``."""
    when = datetime.fromtimestamp(timestamp, UTC)
    signatures = " ".join(Webhook(secret).sign(webhook_id, when, body) for secret in secrets)
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures,
    }
