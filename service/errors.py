"""Steno's domain errors; ``service.app`` maps them to HTTP in one place.

Each carries a stable ``code`` (part of the API contract) and the HTTP status it means.
"""

from __future__ import annotations


class StenoError(Exception):
    """Base of every error a client may see: a stable code and a human detail."""

    code = "internal_error"
    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(StenoError):
    """The request itself is malformed."""

    code = "bad_request"
    status_code = 400


class ValidationFailed(StenoError):
    """A field has a value Steno can't use."""

    code = "validation_error"
    status_code = 422


class JobNotFound(StenoError):
    """No job with that id (or it was deleted)."""

    code = "job_not_found"
    status_code = 404


class JobNotCompleted(StenoError):
    """The transcript was asked for before the job completed."""

    code = "job_not_completed"
    status_code = 409


class JobAlreadyFinished(StenoError):
    """The job already reached completed or failed, so it can't be cancelled."""

    code = "job_already_finished"
    status_code = 409


class UnsupportedMediaType(StenoError):
    """The request's or the upload's content type is not one Steno accepts."""

    code = "unsupported_media_type"
    status_code = 415


class PayloadTooLarge(StenoError):
    """The upload is larger than ``STENO_MAX_UPLOAD_BYTES``."""

    code = "payload_too_large"
    status_code = 413


class EmptyFile(StenoError):
    """The uploaded or fetched file has no bytes."""

    code = "empty_file"
    status_code = 422


class InvalidAudio(StenoError):
    """The file is not audio that ffmpeg can decode (or has no audio stream)."""

    code = "invalid_audio"
    status_code = 422


class AudioTooLong(StenoError):
    """The audio is longer than ``STENO_MAX_AUDIO_SECONDS``."""

    code = "audio_too_long"
    status_code = 422


class InvalidUrl(StenoError):
    """``audio_url`` is not an absolute http(s) URL."""

    code = "invalid_url"
    status_code = 422


class UrlUnreadable(StenoError):
    """``audio_url`` could not be read: unreachable, or the server answered an error."""

    code = "url_unreadable"
    status_code = 422


class UnsupportedModel(StenoError):
    """The job names a model this deployment does not serve."""

    code = "unsupported_model"
    status_code = 422


class ServiceUnavailable(StenoError):
    """A dependency Steno can't work without (PostgreSQL) is not answering."""

    code = "service_unavailable"
    status_code = 503


class TooManyStreams(StenoError):
    """The client already holds ``STENO_SSE_MAX_STREAMS_PER_CLIENT`` open event streams."""

    code = "too_many_streams"
    status_code = 429
