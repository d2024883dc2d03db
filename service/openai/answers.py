"""The answer to an OpenAI audio request once its job ended: OpenAI's shapes, exactly.

``json`` is ``{"text", "usage"}`` (``usage`` only for transcriptions, as OpenAI's
``Transcription`` has it and ``Translation`` does not); ``verbose_json`` has ``task``,
``language`` (its English name), ``duration``, ``text``, and ``segments`` (by default, or
when ``timestamp_granularities[]`` has ``segment``) and ``words`` (when it has ``word``);
``text``, ``srt`` and ``vtt`` are Steno's renderings, which already match OpenAI's.
A job that failed, was cancelled or deleted answers an OpenAI error naming the job.
"""

from __future__ import annotations

import math

import msgspec
from litestar import Response

from service.core.db.models import Job
from service.core.states import JobStatus
from service.core.transcript import Transcript
from service.jobs.formats import TranscriptFormat, language_name, render
from service.openai.errors import JOB_ID_HEADER, NO_RETRY, ErrorBody, error_payload, openai_error
from service.openai.schemas import (
    TRANSCRIBE,
    AudioRequest,
    DiarizedAnswer,
    DiarizedSegment,
    DiarizedUsage,
    Segment,
    TextAnswer,
    Usage,
    VerboseAnswer,
    Word,
)

# A job that failed on these codes failed because of the audio sent: a client error.
_AUDIO_CODES = frozenset({"invalid_audio", "empty_file", "audio_too_long"})


def _number(value: float | None) -> float:
    # OpenAI's typed clients declare the statistics as required numbers: never null or NaN.
    return value if value is not None and math.isfinite(value) else 0.0


def _seconds(value: float) -> float:
    return value if math.isfinite(value) and value > 0 else 0.0


def _usage(transcript: Transcript, request: AudioRequest) -> Usage | None:
    if request.task != TRANSCRIBE:
        return None
    return Usage(seconds=math.ceil(_seconds(transcript.duration)))


def answer_body(transcript: Transcript, request: AudioRequest) -> tuple[bytes, str]:
    """The body and media type of a completed job's answer in the asked format."""
    fmt = request.response_format
    if request.diarized_json:
        return msgspec.json.encode(diarized(transcript)), "application/json"
    if fmt is TranscriptFormat.JSON:
        body = TextAnswer(text=transcript.text, usage=_usage(transcript, request))
        return msgspec.json.encode(body), "application/json"
    if fmt is TranscriptFormat.VERBOSE_JSON:
        return msgspec.json.encode(verbose(transcript, request)), "application/json"
    return render(transcript, fmt)


def verbose(transcript: Transcript, request: AudioRequest) -> VerboseAnswer:
    """OpenAI's ``verbose_json`` of a transcript, with what the request's granularities ask."""
    words = None
    if request.with_words:
        words = [
            Word(word=w.word.strip(), start=_seconds(w.start), end=_seconds(w.end))
            for segment in transcript.segments
            for w in segment.words or ()
        ]
    segments = None
    if request.with_segments:
        segments = [
            Segment(
                id=s.id,
                seek=0,
                start=_seconds(s.start),
                end=_seconds(s.end),
                text=s.text,
                tokens=list(s.tokens or ()),
                temperature=_number(s.temperature),
                avg_logprob=_number(s.avg_logprob),
                compression_ratio=_number(s.compression_ratio),
                no_speech_prob=_number(s.no_speech_prob),
            )
            for s in transcript.segments
        ]
    return VerboseAnswer(
        task=request.task,
        language=language_name(transcript.language),
        duration=_seconds(transcript.duration),
        text=transcript.text,
        words=words,
        segments=segments,
        usage=_usage(transcript, request),
    )


def diarized(transcript: Transcript) -> DiarizedAnswer:
    """OpenAI's ``diarized_json``: each segment with its speaker.

    A known speaker keeps its name; anonymous ones (``SPEAKER_1``, ...) are lettered ``A``,
    ``B``, ... in order of first appearance as OpenAI labels them (skipping a letter a known
    speaker is named). A segment without a speaker (no speech found) is ``A``'s neighbour:
    it takes the label of the segment before it, or the first label.
    """
    names = {s.speaker for s in transcript.segments if s.speaker}
    anonymous = [
        s.speaker for s in transcript.segments if s.speaker and s.speaker.startswith("SPEAKER_")
    ]
    letters = (chr(code) for code in range(ord("A"), ord("Z") + 1))
    labels: dict[str, str] = {}
    for speaker in dict.fromkeys(anonymous):
        letter = next((x for x in letters if x not in names), speaker)
        labels[speaker] = letter
    segments: list[DiarizedSegment] = []
    previous = ""
    for s in transcript.segments:
        label = labels.get(s.speaker or "", s.speaker or previous)
        previous = label
        segments.append(
            DiarizedSegment(
                id=f"seg_{s.id}",
                start=_seconds(s.start),
                end=_seconds(s.end),
                text=s.text,
                speaker=label,
            )
        )
    first = next((seg.speaker for seg in segments if seg.speaker), "A")
    for seg in segments:
        if not seg.speaker:
            seg.speaker = first
    duration = _seconds(transcript.duration)
    return DiarizedAnswer(
        task=TRANSCRIBE,
        duration=duration,
        text=transcript.text,
        segments=segments,
        usage=DiarizedUsage(seconds=duration),
    )


def completed_answer(job_id: str, transcript: Transcript, request: AudioRequest) -> Response[bytes]:
    """200 with the transcript in the asked format, naming the job."""
    body, media_type = answer_body(transcript, request)
    return Response(body, media_type=media_type, headers={JOB_ID_HEADER: job_id})


def ended_without_text(job_id: str, job: Job | None) -> tuple[int, ErrorBody]:
    """The status and OpenAI error of a job that ended without a transcript.

    A job that failed on its audio is 400; one that failed otherwise is 500; a cancelled
    job is 409 ``job_cancelled``; a deleted one (``job`` None) 404 ``job_not_found``.
    """
    if job is None:
        return 404, error_payload(404, f"job {job_id} was deleted", code="job_not_found")
    if job.status == JobStatus.cancelled:
        message = f"job {job_id} was cancelled"
        return 409, error_payload(409, message, code="job_cancelled")
    code = job.error_code or "transcription_failed"
    status = 400 if code in _AUDIO_CODES else 500
    detail = job.error_detail or "the transcription failed"
    return status, error_payload(status, f"job {job_id} failed: {detail}", code=code)


def unfinished_error(job_id: str, waited: float) -> tuple[int, ErrorBody]:
    """504: the job did not end within the wait; it goes on, and the client can poll it."""
    message = (
        f"job {job_id} did not finish within {waited:g} s; it goes on: follow it at "
        f"GET /v1/jobs/{job_id} (its transcript at /v1/jobs/{job_id}/transcript)"
    )
    return 504, error_payload(504, message, code="job_not_finished")


def job_error(job_id: str, status: int, body: ErrorBody) -> Response[ErrorBody]:
    """An error answer about an existing job: names it, and tells clients not to resend."""
    detail = body.error
    return openai_error(
        status,
        detail.message,
        code=detail.code,
        param=detail.param,
        headers={JOB_ID_HEADER: job_id, **NO_RETRY},
    )
