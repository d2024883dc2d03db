"""The diarization step of a GPU job: after Whisper, label the transcript's speakers; no Celery.

Runs inside the transcription's claim and lease: progress is reported under the ``diarizing``
stage with fenced writes, so a cancelled or fenced-out job stops here like it does in Whisper.
The models load on the first diarize job a child gets and stay for the child's life.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from service.core import speakers, transitions
from service.core.events import schemas as events
from service.core.transcript import Transcript
from workers.gpu import faults
from workers.gpu.runtime import GpuRuntime

__all__ = ["diarization_models", "diarize_transcript", "known_voice_prints"]

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
    faults.checkpoint(
        runtime.settings, "before_diarizing", claim, check_claim=lambda: report("diarizing", 0.0)
    )
    models = diarization_models(runtime.device)
    audio = load_audio(Path(str(claim.audio_path)))
    count = SpeakerCount(
        exact=options.get("num_speakers"),
        minimum=options.get("min_speakers") or 1,
        maximum=options.get("max_speakers") or 10,
    )
    started = time.perf_counter()
    known = known_voice_prints(runtime, models, options.get("speaker_ids") or ())
    turns = find_turns(models, audio, count, known=known, on_progress=progress)
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


def known_voice_prints(
    runtime: GpuRuntime, models: Any, speaker_ids: Sequence[str]
) -> dict[str, npt.NDArray[np.float32]]:
    """Name -> voice print of the job's known speakers that still exist.

    A print not computed yet is computed here from the speaker's clip with the child's
    encoder and stored for later jobs. A speaker deleted since the submit, or whose clip has
    no speech, is left out (its voice gets a ``SPEAKER_<n>`` label) rather than failing the job.
    """
    from workers.gpu.decode import load_audio
    from workers.gpu.diarize.turns import embed_voice

    prints: dict[str, npt.NDArray[np.float32]] = {}
    for speaker in runtime.write(speakers.known_speakers, list(speaker_ids)):
        voice = speaker.voice_print
        if voice is None:
            try:
                voice = embed_voice(models, load_audio(Path(speaker.clip_path)))
            except (OSError, RuntimeError, ValueError) as exc:
                log.warning("speaker %r: no voice print from its clip: %s", speaker.name, exc)
                continue
            runtime.write(speakers.store_voice_print, speaker.id, voice)
            log.info("speaker %r: voice print computed and stored", speaker.name)
        prints[speaker.name] = np.asarray(voice, dtype=np.float32)
    return prints
