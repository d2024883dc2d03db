"""A transcription job on a GPU child: claim, transcribe, store; no Celery import.

Each prefork child owns one ``GpuRuntime``: its Whisper model(s), loaded once after fork, and
a private asyncio loop (in a thread of the child) with its own database engine; the async
service functions are shared with the API. Every write after the claim presents the claim's
fencing token. While Whisper runs, the loop renews the claim's lease, so a child that dies
is noticed within ``STENO_LEASE_SECONDS`` and its redelivered message claims the job again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from service.core import transitions
from service.core.db.engine import database_unreachable, make_engine, make_sessionmaker
from service.core.events import schemas as events
from service.core.events.publish import emit
from service.core.settings import Settings
from service.core.transcript import Transcript, TranscriptSegment, TranscriptWord

if TYPE_CHECKING:
    from workers.gpu.whisper import Segment, Transcription

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

# Progress writes are throttled: a row update per segment would be noise on long audio.
PROGRESS_INTERVAL_SECONDS = 1.0
MODELS_PER_CHILD = 2


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


class GpuRuntime:
    """One GPU child's model cache and database access."""

    def __init__(self, settings: Settings, *, slot: int = 0) -> None:
        from workers.gpu.whisper import choose_device

        self.settings = settings
        self.device = choose_device(settings.whisper_device, slot=slot)
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.set_device(self.device)
        # Whisper holds the child's main thread for seconds at a time; the loop runs beside
        # it so lease renewals go on meanwhile.
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="steno-gpu-db", daemon=True
        )
        self._thread.start()
        self._engine = make_engine(settings, pool_size=2)
        self.sessions = make_sessionmaker(self._engine)
        self._redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        self._models: OrderedDict[str, Any] = OrderedDict()

    def emit(self, event: events.Event) -> None:
        """Publish a progress event from the child's main thread (in order; never raises)."""
        coro = emit(self._redis, self.sessions, self.settings, event)
        asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def transact(
        self,
        operation: Callable[Concatenate[AsyncSession, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``operation(session, *args, **kwargs)`` in one transaction, on this child's loop."""
        async with self.sessions() as session, session.begin():
            return await operation(session, *args, **kwargs)

    def write(
        self,
        operation: Callable[Concatenate[AsyncSession, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``transact`` from the child's main thread, waiting for its result."""
        coro = self.transact(operation, *args, **kwargs)
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @contextlib.contextmanager
    def lease_kept(self, claim: transitions.Claim) -> Iterator[None]:
        """Renew ``claim``'s lease every quarter lease while the block runs."""
        beat = asyncio.run_coroutine_threadsafe(self._renew(claim), self._loop)
        try:
            yield
        finally:
            beat.cancel()

    async def _renew(self, claim: transitions.Claim) -> None:
        lease = self.settings.lease_seconds
        while True:
            await asyncio.sleep(lease / 4)
            try:
                held = await self.transact(transitions.renew_lease, claim, lease_seconds=lease)
            except Exception:  # a database blip: the next beat tries again
                log.warning("job %s: lease renewal failed", claim.job_id, exc_info=True)
                continue
            if not held:
                log.info("job %s: claim lost (cancelled or fenced out)", claim.job_id)
                return

    def model(self, name: str) -> Any:
        """The named Whisper model, loaded on first use and kept (a couple per child)."""
        from workers.gpu.whisper import load_model

        if name not in self._models:
            started = time.perf_counter()
            self._models[name] = load_model(name, self.settings.models_dir, self.device)
            log.info(
                "loaded Whisper %r on %s in %.1f s",
                name,
                self.device,
                time.perf_counter() - started,
            )
            while len(self._models) > MODELS_PER_CHILD:
                self._models.popitem(last=False)
        self._models.move_to_end(name)
        return self._models[name]

    def close(self) -> None:
        """Dispose of the engine and stop the loop thread."""
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._engine.dispose(), self._loop).result(10.0)
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._redis.aclose(), self._loop).result(5.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)


def run_transcription(runtime: GpuRuntime, job_id: str, *, worker: str) -> str:
    """Transcribe one job end to end; returns ``completed``, ``failed``, ``skipped`` or
    ``abandoned`` (the job was cancelled or deleted mid-way: Whisper stops between windows).

    ``skipped`` means the message was a duplicate or came late (the job is finished,
    cancelled or deleted): nothing is transcribed. Raises ``JobHeld`` when a live worker
    holds the job (the caller retries after the lease: if that worker died, the job is
    claimed again). The transcript and the final status are committed in one transaction,
    only if this claim still holds the job.
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
    log.info("job %s: claimed (attempt %d) on %s pid %d", job_id, claim.token, worker, os.getpid())
    runtime.emit(events.Started(job_id=job_id, attempt=claim.token, worker=worker))
    try:
        if not claim.audio_path or not Path(claim.audio_path).is_file():
            raise AudioUnreadable("the job's audio file is missing")
        with runtime.lease_kept(claim):
            _crash_if_poisoned(runtime.settings, claim)
            model = _load_or_release(runtime, claim)
            result = _transcribe(runtime, claim, model)
        transcript = to_transcript(result)
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
        if claim.token >= runtime.settings.max_attempts:
            raise ModelUnavailable(
                f"model {claim.model!r} could not be loaded: {type(exc).__name__}: {exc}"
            ) from exc
        runtime.write(transitions.release_claim, claim)
        raise WorkerUnfit(f"model {claim.model!r} would not load: {exc}") from exc


def _transcribe(runtime: GpuRuntime, claim: transitions.Claim, model: Any) -> Transcription:
    from workers.gpu.whisper import transcribe

    duration = claim.audio_seconds or 0.0
    last = 0.0
    began = time.monotonic()
    job_id = str(claim.job_id)

    def on_segment(segment: Segment) -> None:
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
    _slow_down(runtime.settings.transcribe_delay_seconds, report)
    try:
        return transcribe(
            model,
            Path(str(claim.audio_path)),
            language=claim.language,
            word_timestamps=claim.word_timestamps,
            initial_prompt=claim.initial_prompt,
            fp16=runtime.device.startswith("cuda"),
            on_segment=on_segment,
        )
    except RuntimeError as exc:
        # whisper.load_audio wraps ffmpeg's failure this way.
        if "Failed to load audio" in str(exc):
            raise AudioUnreadable(str(exc).splitlines()[0]) from exc
        raise


def _crash_if_poisoned(settings: Settings, claim: transitions.Claim) -> None:
    """Fault injection (``STENO_FAULT_CRASH_MARKER``, off by default): a poison job.

    The child SIGKILLs itself like an out-of-memory kill would, after the claim, so the
    redelivery cap is exercised exactly as in production.
    """
    marker = settings.fault_crash_marker
    if marker and marker in (claim.filename or ""):
        log.error("job %s: fault injection: poison job, killing this child", claim.job_id)
        os.kill(os.getpid(), signal.SIGKILL)


def _slow_down(seconds: float, report: Callable[[float], None]) -> None:
    """Fault injection (``STENO_TRANSCRIBE_DELAY_SECONDS``, 0 by default): wait before Whisper.

    Makes jobs last long enough for the chaos suite to kill workers mid-job. The wait checks
    the claim every second like Whisper's windows do, so cancellation behaves the same.
    """
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        report(0.0)


def _fail(runtime: GpuRuntime, claim: transitions.Claim, code: str, detail: str) -> str:
    if runtime.write(
        transitions.fail_job, claim.job_id, code=code, detail=detail, token=claim.token
    ):
        runtime.emit(events.Failed(job_id=str(claim.job_id), code=code, detail=detail))
    log.info("job %s: failed: %s (%s)", claim.job_id, code, detail)
    return "failed"


def _is_time_limit(exc: BaseException) -> bool:
    return type(exc).__name__ in {"SoftTimeLimitExceeded", "TimeLimitExceeded"}


def to_transcript(result: Transcription) -> Transcript:
    """The storable transcript of a Whisper result."""
    return Transcript(
        text=result.text,
        language=result.language,
        duration=result.duration,
        segments=[
            TranscriptSegment(
                id=s.id,
                start=s.start,
                end=s.end,
                text=s.text,
                words=[
                    TranscriptWord(word=w.word, start=w.start, end=w.end, probability=w.probability)
                    for w in s.words
                ]
                if s.words is not None
                else None,
                avg_logprob=s.avg_logprob,
                no_speech_prob=s.no_speech_prob,
                temperature=s.temperature,
                compression_ratio=s.compression_ratio,
                tokens=s.tokens,
            )
            for s in result.segments
        ],
    )
