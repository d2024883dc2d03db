"""The diarization step of a GPU job: after Whisper, label the transcript's speakers; no Celery.

Runs inside the transcription's claim and lease: progress is reported under the ``diarizing``
stage with fenced writes, so a cancelled or fenced-out job stops here like it does in Whisper.
The models load on the first diarize job a child gets and stay for the child's life.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from service.core import transitions
from service.core.events import schemas as events
from service.core.transcript import Transcript
from workers.gpu.runtime import GpuRuntime

__all__ = ["diarization_models", "diarize_transcript"]

log = logging.getLogger(__name__)

# One set per child (keyed by device): loaded when the first diarize job arrives.
_MODELS: dict[str, Any] = {}


def diarization_models(device: str) -> Any:
    """The child's ``DiarizationModels`` on ``device``, loaded (and checksum-verified) once."""
    from workers.gpu.diarize.models import load_models

    if device not in _MODELS:
        started = time.perf_counter()
        _MODELS[device] = load_models(device)
        log.info("loaded diarization models on %s in %.1f s", device, time.perf_counter() - started)
    return _MODELS[device]


def diarize_transcript(
    runtime: GpuRuntime,
    claim: transitions.Claim,
    transcript: Transcript,
    report: Callable[[str, float], None],
) -> Transcript:
    """``transcript`` with speakers on its segments (and words when the client asked for them).

    ``report(stage, percent)`` records progress with a fenced write and raises when the claim
    is gone. Publishes a ``speakers`` event with the final segments.
    """
    from workers.gpu.decode import load_audio
    from workers.gpu.diarize.assign import assign_speakers
    from workers.gpu.diarize.turns import SpeakerCount, find_turns

    options = claim.diarization or {}
    job_id = str(claim.job_id)
    duration = claim.audio_seconds or transcript.duration or None
    last = 0.0

    def progress(fraction: float) -> None:
        nonlocal last
        percent = round(min(99.0, 100.0 * fraction), 1)
        runtime.emit(
            events.Progress(
                job_id=job_id, stage="diarizing", percent=percent, audio_seconds=duration
            )
        )
        now = time.monotonic()
        if now - last >= 1.0:
            last = now
            report("diarizing", percent)

    progress(0.0)
    models = diarization_models(runtime.device)
    audio = load_audio(Path(str(claim.audio_path)))
    count = SpeakerCount(
        exact=options.get("num_speakers"),
        minimum=options.get("min_speakers") or 1,
        maximum=options.get("max_speakers") or 10,
    )
    started = time.perf_counter()
    turns = find_turns(models, audio, count, on_progress=progress)
    labelled = assign_speakers(transcript, turns)
    if not claim.word_timestamps:
        # Words were decoded only to place speaker changes; the client didn't ask for them.
        labelled = msgspec.structs.replace(
            labelled,
            segments=[msgspec.structs.replace(s, words=None) for s in labelled.segments],
        )
    log.info(
        "job %s: diarized %.1f s of audio in %.1f s: %d speakers",
        job_id,
        len(audio) / 16_000,
        time.perf_counter() - started,
        len({s.speaker for s in labelled.segments if s.speaker}),
    )
    runtime.emit(
        events.Speakers(
            job_id=job_id,
            segments=[
                events.SpeakerSegment(
                    id=s.id, start=s.start, end=s.end, text=s.text, speaker=s.speaker
                )
                for s in labelled.segments
            ],
        )
    )
    return labelled
