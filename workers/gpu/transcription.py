"""A transcription job on a GPU child: claim, load the model, transcribe, store; no Celery import.

The flow runs on the child's main thread and reaches the database, the event stream and the
lease through its ``GpuRuntime``. Every write after the claim presents the claim's fencing
token, and the transcript with the final status is committed only if that claim still holds.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.core import logs, metrics, transitions
from service.core.db.engine import database_unreachable
from service.core.events import schemas as events
from service.core.transcript import Transcript, TranscriptSegment
from workers.gpu import faults
from workers.gpu.runtime import GpuRuntime

__all__ = [
    "AudioUnreadable",
    "ClaimLost",
    "JobHeld",
    "ModelUnavailable",
    "WorkerUnfit",
    "run_transcription",
]

log = logging.getLogger(__name__)

# Progress writes are throttled: a row update per segment would be noise on long audio.
PROGRESS_INTERVAL_SECONDS = 1.0


class JobHeld(Exception):
    """Another live worker holds the job; try again once its lease may have run out."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"job held by a live worker for up to {seconds:.0f} s more")
        self.seconds = seconds


class WorkerUnfit(Exception):
    """This worker can't transcribe now (device or model won't load): not the job's fault."""


class ModelUnavailable(Exception):
    """The job's model failed to load on every attempt it was given."""


class ClaimLost(Exception):
    """The job was cancelled, deleted or claimed by another worker while we transcribed."""


class AudioUnreadable(Exception):
    """ffmpeg could not decode the stored audio: retrying would not help."""


def run_transcription(
    runtime: GpuRuntime,
    job_id: str,
    *,
    worker: str,
    on_claimed: Callable[[], None] | None = None,
) -> str:
    """Transcribe one job end to end; returns ``completed``, ``failed``, ``skipped`` or
    ``abandoned`` (the job was cancelled or deleted mid-way: Whisper stops between windows).

    ``skipped`` means the message was a duplicate or came late (the job is finished,
    cancelled or deleted): nothing is transcribed. Raises ``JobHeld`` when a live worker
    holds the job (the caller retries after the lease: if that worker died, the job is
    claimed again). The transcript and the final status are committed in one transaction,
    only if this claim still holds the job. ``on_claimed`` runs once the job is claimed (the
    job has left its lane's queue: the caller sends the owner's next held job).
    """
    job_uuid = uuid.UUID(job_id)
    claim = runtime.write(
        transitions.claim_job,
        job_uuid,
        worker=worker,
        lease_seconds=runtime.settings.lease_seconds,
        max_attempts=runtime.settings.max_attempts,
    )
    if claim is None:
        remaining = runtime.write(transitions.lease_remaining, job_uuid)
        if remaining is not None:
            log.info("job %s: held by a live worker; retrying in %.0f s", job_id, remaining)
            raise JobHeld(remaining)
        log.info("job %s: nothing to do (duplicate, finished or cancelled)", job_id)
        return "skipped"
    logs.bind(attempt=claim.token)
    log.info("job %s: claimed (attempt %d) on %s pid %d", job_id, claim.token, worker, os.getpid())
    runtime.emit(events.Started(job_id=job_id, attempt=claim.token, worker=worker))
    if on_claimed is not None:
        on_claimed()
    try:
        if not claim.audio_path or not Path(claim.audio_path).is_file():
            raise AudioUnreadable("the job's audio file is missing")
        with runtime.lease_kept(claim):
            faults.checkpoint(runtime.settings, "claimed", claim)
            model = _load_or_release(runtime, claim)
            began = time.monotonic()
            transcript = _transcribe(runtime, claim, model)
            busy = time.monotonic() - began
            if claim.diarization is not None:
                transcript = _diarize(runtime, claim, transcript)
        completed = runtime.write(transitions.complete_job, claim, transcript)
    except ClaimLost:
        log.info("job %s: stopped early: cancelled, deleted or claimed elsewhere", job_id)
        return "abandoned"
    except WorkerUnfit:
        raise
    except ModelUnavailable as exc:
        return _fail(runtime, claim, "model_unavailable", str(exc))
    except AudioUnreadable as exc:
        return _fail(runtime, claim, "invalid_audio", str(exc))
    except Exception as exc:
        if database_unreachable(exc):
            raise  # transient: the task retries, and the lease lets the job be claimed again
        if _is_time_limit(exc):
            return _fail(runtime, claim, "time_limit_exceeded", "transcription took too long")
        log.exception("job %s: transcription failed", job_id)
        return _fail(runtime, claim, "transcription_failed", f"{type(exc).__name__}: {exc}")
    if completed:
        metrics.observe_transcription(busy, transcript.duration)
        runtime.emit(
            events.Completed(
                job_id=job_id,
                duration=transcript.duration,
                language=transcript.language,
                segments=len(transcript.segments),
            )
        )
        log.info(
            "job %s: completed, %.1f s of audio, %d segments",
            job_id,
            transcript.duration,
            len(transcript.segments),
        )
        return "completed"
    log.info("job %s: finished but no longer ours (cancelled or fenced out)", job_id)
    return "skipped"


def _load_or_release(runtime: GpuRuntime, claim: transitions.Claim) -> Any:
    """The job's model; when it won't load, hand the job back (or fail it at the cap)."""
    try:
        return runtime.model(claim.model)
    except Exception as exc:
        log.exception("job %s: model %r would not load", claim.job_id, claim.model)
        if claim.token - claim.attempts_base >= runtime.settings.max_attempts:
            raise ModelUnavailable(
                f"model {claim.model!r} could not be loaded: {type(exc).__name__}: {exc}"
            ) from exc
        runtime.write(transitions.release_claim, claim)
        raise WorkerUnfit(f"model {claim.model!r} would not load: {exc}") from exc


def _transcribe(runtime: GpuRuntime, claim: transitions.Claim, model: Any) -> Transcript:
    from workers.gpu.whisper import transcribe

    duration = claim.audio_seconds or 0.0
    last = 0.0
    began = time.monotonic()
    job_id = str(claim.job_id)

    def on_segment(segment: TranscriptSegment) -> None:
        # As each segment is decoded: publish it and the share of audio done (the events);
        # report progress to the row now and then, and stop if the claim is gone.
        nonlocal last
        now = time.monotonic()
        done = min(segment.end, duration) if duration > 0 else segment.end
        percent = min(99.0, 100.0 * done / duration) if duration > 0 else 0.0
        runtime.emit(
            events.Segment(
                job_id=job_id,
                id=segment.id,
                start=segment.start,
                end=segment.end,
                text=segment.text,
            )
        )
        runtime.emit(
            events.Progress(
                job_id=job_id,
                stage="transcribing",
                percent=round(percent, 1),
                audio_seconds_done=round(done, 2),
                audio_seconds=duration or None,
                eta_seconds=round((now - began) * (duration - done) / done, 1)
                if duration > 0 and done > 0
                else None,
            )
        )
        if now - last >= PROGRESS_INTERVAL_SECONDS and duration > 0:
            last = now
            report(percent)

    def report(percent: float) -> None:
        try:
            held = runtime.write(
                transitions.report_progress, claim, stage="transcribing", percent=percent
            )
        except Exception as exc:
            if not database_unreachable(exc):
                raise
            # Progress is not worth losing the work for; the final write decides.
            log.warning("job %s: progress not recorded: %s", claim.job_id, exc)
            return
        if not held:
            raise ClaimLost()

    report(0.0)
    runtime.emit(
        events.Progress(
            job_id=job_id,
            stage="transcribing",
            percent=0.0,
            audio_seconds_done=0.0,
            audio_seconds=duration or None,
        )
    )
    faults.checkpoint(runtime.settings, "before_whisper", claim, check_claim=lambda: report(0.0))
    try:
        with runtime.transcribing():
            return transcribe(
                model,
                Path(str(claim.audio_path)),
                language=claim.language,
                # Diarization splits segments at speaker changes between words.
                word_timestamps=claim.word_timestamps or claim.diarization is not None,
                initial_prompt=claim.initial_prompt,
                fp16=runtime.device.startswith("cuda"),
                on_segment=on_segment,
                task=claim.task,
                temperature=claim.temperature,
            )
    except RuntimeError as exc:
        # whisper.load_audio wraps ffmpeg's failure this way.
        if "Failed to load audio" in str(exc):
            raise AudioUnreadable(str(exc).splitlines()[0]) from exc
        raise


def _diarize(runtime: GpuRuntime, claim: transitions.Claim, transcript: Transcript) -> Transcript:
    from workers.gpu.diarization import diarize_transcript

    def report(stage: str, percent: float) -> None:
        if not runtime.write(transitions.report_progress, claim, stage=stage, percent=percent):
            raise ClaimLost()

    return diarize_transcript(runtime, claim, transcript, report)


def _fail(runtime: GpuRuntime, claim: transitions.Claim, code: str, detail: str) -> str:
    if runtime.write(
        transitions.fail_job, claim.job_id, code=code, detail=detail, token=claim.token
    ):
        runtime.emit(events.Failed(job_id=str(claim.job_id), code=code, detail=detail))
    log.info("job %s: failed: %s (%s)", claim.job_id, code, detail)
    return "failed"


def _is_time_limit(exc: BaseException) -> bool:
    return type(exc).__name__ in {"SoftTimeLimitExceeded", "TimeLimitExceeded"}
