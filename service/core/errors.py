"""Steno's domain errors: a stable ``code`` (part of the API contract) and a human detail.

Nothing here knows HTTP: ``service.http_errors`` maps each error to its status in one place,
and the workers store the same codes on a failed job.
"""

from __future__ import annotations


class StenoError(Exception):
    """Base of every error a client may see: a stable code and a human detail."""

    code = "internal_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(StenoError):
    """The request itself is malformed."""

    code = "bad_request"


class ValidationFailed(StenoError):
    """A field has a value Steno can't use."""

    code = "validation_error"


class JobNotFound(StenoError):
    """No job with that id (or it was deleted)."""

    code = "job_not_found"


class KeyNotFound(StenoError):
    """No live API key with that prefix."""

    code = "key_not_found"


class JobNotCompleted(StenoError):
    """The transcript was asked for before the job completed."""

    code = "job_not_completed"


class JobAlreadyFinished(StenoError):
    """The job already reached completed or failed, so it can't be cancelled."""

    code = "job_already_finished"


class JobNotRetryable(StenoError):
    """Only a failed or cancelled job can be re-run (not an active or a completed one)."""

    code = "job_not_retryable"


class AudioGone(StenoError):
    """The uploaded audio a re-run needs was deleted by retention."""

    code = "audio_gone"


class AudioTooShort(StenoError):
    """The audio is shorter than the use needs (a speaker's clip: 2 s at least)."""

    code = "audio_too_short"


class SpeakerNotFound(StenoError):
    """No stored speaker with that name for this owner (another owner's looks the same)."""

    code = "speaker_not_found"


class SpeakerExists(StenoError):
    """The owner already has a speaker of that name (delete it first to enrol it again)."""

    code = "speaker_exists"


class UnknownSpeaker(ValidationFailed):
    """A submit names a known speaker the owner has not enrolled."""

    code = "unknown_speaker"


class UnsupportedMediaType(StenoError):
    """The request's or the upload's content type is not one Steno accepts."""

    code = "unsupported_media_type"


class PayloadTooLarge(StenoError):
    """The upload is larger than ``STENO_MAX_UPLOAD_BYTES``."""

    code = "payload_too_large"


class EmptyFile(StenoError):
    """The uploaded or fetched file has no bytes."""

    code = "empty_file"


class InvalidAudio(StenoError):
    """The file is not audio that ffmpeg can decode (or has no audio stream)."""

    code = "invalid_audio"


class AudioTooLong(StenoError):
    """The audio is longer than ``STENO_MAX_AUDIO_SECONDS``."""

    code = "audio_too_long"


class InvalidUrl(StenoError):
    """``audio_url`` is not an absolute http(s) URL."""

    code = "invalid_url"


class UrlUnreadable(StenoError):
    """``audio_url`` could not be read: unreachable, or the server answered an error."""

    code = "url_unreadable"


class UrlForbidden(StenoError):
    """A URL (or a redirect) names an address Steno must not reach: private, loopback,
    link-local, metadata and the like, or a scheme or credentials it does not send."""

    code = "url_forbidden"


class UnsupportedModel(StenoError):
    """The job names a model this deployment does not serve."""

    code = "unsupported_model"


class Unauthorized(StenoError):
    """No API key, or one Steno does not know or has revoked."""

    code = "unauthorized"


class Forbidden(StenoError):
    """The key is valid but may not do this (an operator action needs an admin key)."""

    code = "forbidden"


class RateLimited(StenoError):
    """The key went past one of its limits; ``retry_after`` says when to try again."""

    code = "rate_limited"

    def __init__(self, detail: str, *, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class TooManyStreams(RateLimited):
    """The key already holds ``STENO_SSE_MAX_STREAMS_PER_KEY`` open event streams."""

    code = "too_many_streams"


class IdempotencyKeyReused(StenoError):
    """An ``Idempotency-Key`` already used by this owner with a different request."""

    code = "idempotency_key_reused"


class NoWebhookEvent(StenoError):
    """A redelivery was asked for a job that has no webhook event (yet)."""

    code = "no_webhook_event"
