"""Which errors each operation can answer: the table ``service.openapi`` writes into the
document (operation -> status -> the codes and when), and the bearer security scheme.

A test (``tests/unit/test_openapi.py``) holds every /v1 route of the app to an entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import Reference, SecurityRequirement, SecurityScheme

BEARER = "apiKey"
# Every /v1 operation and /metrics need a key; /healthz, /readyz, the page and the schema
# stay open.
V1_SECURITY: list[SecurityRequirement] = [{BEARER: []}]
SECURITY_SCHEMES: dict[str, SecurityScheme | Reference] = {
    BEARER: SecurityScheme(
        type="http",
        scheme="bearer",
        bearer_format="stn_<prefix>_<secret>",
        description="An API key (`steno keys create`), sent as `Authorization: Bearer <key>`.",
    )
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """An error answer: the ``code`` values it may carry, and when it happens."""

    codes: tuple[str, ...]
    when: str


def refuse(when: str, *codes: str) -> Refusal:
    """A ``Refusal`` of ``codes`` (a shorthand that keeps the table below readable)."""
    return Refusal(codes, when)


# The key middleware runs before every keyed handler (/v1, /metrics), and reads PostgreSQL.
V1_ERRORS: dict[int, Refusal] = {
    401: refuse("no API key, or an unknown or revoked one", "unauthorized"),
    503: refuse("PostgreSQL is not answering; try again shortly", "database_unavailable"),
}
# The same, on the OpenAI-compatible routes (in OpenAI's shape and codes).
OPENAI_V1_ERRORS: dict[int, Refusal] = {
    401: refuse("no API key, or an unknown or revoked one", "invalid_api_key"),
    503: refuse("PostgreSQL is not answering; try again shortly", "database_unavailable"),
}
# Operations under this prefix answer errors in OpenAI's shape (``OpenAIError``).
OPENAI_PREFIX = "/v1/audio/"

_JOB_NOT_FOUND = refuse(
    "no job with this id for this key's owner (another owner's job looks the same)",
    "job_not_found",
)
_ADMIN_ONLY = refuse("the key is not an admin key", "forbidden")
_SPEAKER_NOT_FOUND = refuse(
    "no speaker of this name for this key's owner (another owner's looks the same)",
    "speaker_not_found",
)
_OPENAI_AUDIO: dict[int, Refusal] = {
    400: refuse(
        "the form or the audio can't be used: not multipart/form-data, a malformed body, no "
        "`file` part, a `known_speaker_names[]` name not enrolled (`unknown_speaker`), no "
        "`file` part, a bad field (`param` names it), a file that is not audio, empty, that "
        "ffmpeg can't decode or over STENO_MAX_AUDIO_SECONDS (also when the job failed on it)",
        "validation_error",
        "bad_request",
        "unsupported_media_type",
        "empty_file",
        "invalid_audio",
        "audio_too_long",
        "unknown_speaker",
    ),
    404: refuse(
        "`model` is not `whisper-1` or a model served here; or the job was deleted while "
        "the request waited for it",
        "model_not_found",
        "job_not_found",
    ),
    409: refuse("the job was cancelled while the request waited for it", "job_cancelled"),
    413: refuse("the file is over STENO_MAX_UPLOAD_BYTES", "payload_too_large"),
    429: refuse(
        "the key submitted STENO_SUBMITS_PER_MINUTE jobs in the last minute, or holds "
        "STENO_SSE_MAX_STREAMS_PER_KEY waiting requests and event streams",
        "rate_limit_exceeded",
        "too_many_streams",
    ),
    500: refuse(
        "the job failed, not because of its audio (its `error_code`)",
        "transcription_failed",
        "model_unavailable",
        "time_limit_exceeded",
        "worker_lost",
        "too_many_attempts",
    ),
    504: refuse(
        "the job did not end within STENO_OPENAI_WAIT_SECONDS; it goes on (`Steno-Job-Id`)",
        "job_not_finished",
    ),
}

# Which errors each operation answers besides ``V1_ERRORS`` (or ``OPENAI_V1_ERRORS``), and
# when. Every route of the app under /v1 has an entry (tests/unit/test_openapi.py).
ERRORS: dict[str, dict[int, Refusal]] = {
    "POST /v1/jobs": {
        400: refuse("the JSON or the multipart body is malformed", "bad_request"),
        413: refuse(
            "the file is over STENO_MAX_UPLOAD_BYTES (or the URL announces more), the JSON "
            "or the form fields beside the file over 64 KiB",
            "payload_too_large",
        ),
        415: refuse(
            "the body is neither multipart/form-data nor application/json, or the file "
            "(or what the URL serves) is not audio",
            "unsupported_media_type",
        ),
        422: refuse(
            "an option or the audio can't be used: a bad field (`priority`, the diarization "
            "options, ...) or no `file` part, a `known_speakers` name the owner has not "
            "enrolled (`unknown_speaker`), a bad `Idempotency-Key`, a model this "
            "deployment does not serve, a bad or unreadable `audio_url`, a `webhook_url` "
            "(or `audio_url`) the egress policy forbids, an empty file, something ffmpeg "
            "can't decode, audio over STENO_MAX_AUDIO_SECONDS; or an `Idempotency-Key` "
            "already used with another request",
            "validation_error",
            "unsupported_model",
            "invalid_url",
            "url_unreadable",
            "url_forbidden",
            "empty_file",
            "invalid_audio",
            "audio_too_long",
            "idempotency_key_reused",
            "unknown_speaker",
        ),
        429: refuse(
            "the key submitted STENO_SUBMITS_PER_MINUTE jobs in the last minute", "rate_limited"
        ),
    },
    "GET /v1/jobs": {
        400: refuse("`cursor` is not one this API returned", "bad_request"),
        422: refuse("`status` or `limit` is out of range", "validation_error"),
    },
    "GET /v1/jobs/{job_id}": {404: _JOB_NOT_FOUND},
    "GET /v1/jobs/{job_id}/transcript": {
        404: _JOB_NOT_FOUND,
        409: refuse("the job has not completed (yet)", "job_not_completed"),
        422: refuse("`format` is not one of the formats", "validation_error"),
    },
    "GET /v1/jobs/{job_id}/events": {
        400: refuse("`Last-Event-ID` is not an event id this API sent", "bad_request"),
        404: _JOB_NOT_FOUND,
        429: refuse(
            "the key has STENO_SSE_MAX_STREAMS_PER_KEY event streams open", "too_many_streams"
        ),
    },
    "POST /v1/jobs/{job_id}/cancel": {
        404: _JOB_NOT_FOUND,
        409: refuse("the job already completed or failed", "job_already_finished"),
    },
    "POST /v1/jobs/{job_id}/retry": {
        404: _JOB_NOT_FOUND,
        409: refuse(
            "the job is queued, running or completed (only a failed or cancelled job "
            "re-runs), or retention removed its uploaded audio",
            "job_not_retryable",
            "audio_gone",
        ),
    },
    "DELETE /v1/jobs/{job_id}": {404: _JOB_NOT_FOUND},
    "GET /v1/jobs/{job_id}/webhooks": {404: _JOB_NOT_FOUND},
    "POST /v1/jobs/{job_id}/webhooks/redeliver": {
        404: _JOB_NOT_FOUND,
        409: refuse(
            "the job has no webhook event (not finished, or no `webhook_url`)",
            "no_webhook_event",
        ),
    },
    "GET /v1/webhooks/secret": {},
    "POST /v1/webhooks/secret/rotate": {},
    "GET /v1/keys": {403: _ADMIN_ONLY},
    "POST /v1/keys": {
        400: refuse("the body is not valid JSON", "bad_request"),
        403: _ADMIN_ONLY,
        413: refuse("the body is over Litestar's 10 MB limit", "payload_too_large"),
        422: refuse("a field is missing, blank, too long or unknown", "validation_error"),
    },
    "DELETE /v1/keys/{prefix}": {
        403: _ADMIN_ONLY,
        404: refuse("no live key with this prefix", "key_not_found"),
    },
    "GET /v1/queues": {403: _ADMIN_ONLY},
    "POST /v1/speakers": {
        400: refuse("the multipart body is malformed", "bad_request"),
        409: refuse("the owner already has a speaker of this name", "speaker_exists"),
        413: refuse("the clip is over 16 MiB (or STENO_MAX_UPLOAD_BYTES)", "payload_too_large"),
        415: refuse(
            "the body is not multipart/form-data, or the file is not audio",
            "unsupported_media_type",
        ),
        422: refuse(
            "no `name` or `file`, a bad name, an empty file, one ffmpeg can't decode, or a "
            "clip under 2 s or over 60 s",
            "validation_error",
            "empty_file",
            "invalid_audio",
            "audio_too_short",
            "audio_too_long",
        ),
    },
    "GET /v1/speakers": {},
    "GET /v1/speakers/{name}": {404: _SPEAKER_NOT_FOUND},
    "DELETE /v1/speakers/{name}": {404: _SPEAKER_NOT_FOUND},
    "GET /metrics": {403: _ADMIN_ONLY},
    "POST /v1/audio/transcriptions": _OPENAI_AUDIO,
    "POST /v1/audio/translations": _OPENAI_AUDIO,
}
