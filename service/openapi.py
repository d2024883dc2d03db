"""What ``/schema/openapi.json`` says beyond what Litestar infers from the route handlers.

Litestar documents each handler's success response from its signature, and gives every
handler with parameters a 400 of its own exception shape ``{status_code, detail, extra}``.
Steno answers every error as ``{code, detail}`` (``service.http_errors``), and which errors an
operation can answer is only known from the services it calls. So the error side of the
document is written here, in one table, ``ERRORS`` (operation -> status -> codes and when),
and ``describe_api`` applies it to the generated document when the app is built
(``create_app``): it drops Litestar's error responses, adds ours (each an ``ErrorBody`` whose
``code`` is one of the listed codes), the headers that go with them (``WWW-Authenticate``,
``Retry-After``), and what Litestar can't express for a success: the transcript's four media
types, the events of the ``text/event-stream``, and the ``Location`` and links of a new job.

The OpenAI-compatible routes (``/v1/audio/*``, ``service.openai``) answer errors in OpenAI's
shape, ``{"error": {"message", "type", "param", "code"}}``: their entries in ``ERRORS`` are
the same kind of ``Refusal`` (``code`` is ``error.code`` there), written as an
``OpenAIError``, and their form and answers are described here too (``_describe_openai``).

Post-processing the generated document (rather than ``responses=`` on every handler) keeps
the table in one readable place, and can do what ``ResponseSpec`` can't: remove Litestar's
400, and give one status several media types. The security requirement is declared the
Litestar way, on each router that holds the key middleware (``V1_SECURITY``), with the
scheme in ``OpenAPIConfig.components`` (``openapi_config``); every operation that declares
it also answers the key middleware's errors (``KEY_ERRORS``).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    Link,
    OpenAPI,
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
    SecurityRequirement,
    SecurityScheme,
)

from service.auth.controllers import NewKey
from service.core.events.schemas import Event
from service.core.events.stream import POSITION_PATTERN
from service.jobs.formats import MEDIA_TYPES
from service.jobs.schemas import ErrorBody

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
_OPENAI_AUDIO: dict[int, Refusal] = {
    400: refuse(
        "the form or the audio can't be used: not multipart/form-data, a malformed body, no "
        "`file` part, a bad field (`param` names it), a file that is not audio, empty, that "
        "ffmpeg can't decode or over STENO_MAX_AUDIO_SECONDS (also when the job failed on it)",
        "validation_error",
        "bad_request",
        "unsupported_media_type",
        "empty_file",
        "invalid_audio",
        "audio_too_long",
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
            "options, ...) or no `file` part, a bad `Idempotency-Key`, a model this "
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
    "GET /metrics": {403: _ADMIN_ONLY},
    "POST /v1/audio/transcriptions": _OPENAI_AUDIO,
    "POST /v1/audio/translations": _OPENAI_AUDIO,
}

# Request bodies that are msgspec Structs with ``forbid_unknown_fields``.
CLOSED_BODIES = (NewKey,)

# The headers some errors come with.
ERROR_HEADERS: dict[int, dict[str, OpenAPIHeader]] = {
    401: {
        "WWW-Authenticate": OpenAPIHeader(
            required=True,
            schema=Schema(type=OpenAPIType.STRING, examples=['Bearer realm="steno"']),
            description="how to authenticate",
        )
    },
    429: {
        "Retry-After": OpenAPIHeader(
            required=True,
            schema=Schema(type=OpenAPIType.INTEGER, minimum=1),
            description="seconds to wait before trying again",
        )
    },
}

_ERROR_BODY = Schema(
    type=OpenAPIType.OBJECT,
    required=["code", "detail"],
    properties={
        "code": Schema(
            type=OpenAPIType.STRING,
            description="stable and machine-readable: part of the API contract",
        ),
        "detail": Schema(type=OpenAPIType.STRING, description="for people; may change"),
    },
    description="Every error response: a stable machine code and a human explanation.",
)
_ERROR_REF = Reference(ref=f"#/components/schemas/{ErrorBody.__name__}")
# OpenAI's error object (``service.openai.errors.ErrorBody``), a component of its own.
OPENAI_ERROR = "OpenAIError"
_OPENAI_ERROR_BODY = Schema(
    type=OpenAPIType.OBJECT,
    required=["error"],
    properties={
        "error": Schema(
            type=OpenAPIType.OBJECT,
            required=["message", "type", "param", "code"],
            properties={
                "message": Schema(type=OpenAPIType.STRING, description="for people"),
                "type": Schema(
                    type=OpenAPIType.STRING,
                    enum=["invalid_request_error", "requests", "server_error"],
                ),
                "param": Schema(
                    type=[OpenAPIType.STRING, OpenAPIType.NULL],
                    description="the form field at fault, if one is",
                ),
                "code": Schema(
                    type=[OpenAPIType.STRING, OpenAPIType.NULL],
                    description="stable and machine-readable (Steno's code, or OpenAI's)",
                ),
            },
        )
    },
    description="Every error of the OpenAI-compatible routes, in OpenAI's shape.",
)
_OPENAI_ERROR_REF = Reference(ref=f"#/components/schemas/{OPENAI_ERROR}")
_JOB_ID_HEADER = "Steno-Job-Id"

_EVENT_KINDS = sorted(str(kind.__struct_config__.tag) for kind in typing.get_args(Event))
# Schemathesis and Open API 3.1 read an event stream's ``schema`` as the shape of one event.
_EVENT = Schema(
    type=OpenAPIType.OBJECT,
    required=["event", "data", "id"],
    properties={
        "event": Schema(type=OpenAPIType.STRING, enum=_EVENT_KINDS),
        "data": Schema(
            type=OpenAPIType.STRING,
            content_media_type="application/json",
            description="the event as JSON, its `kind` repeated",
        ),
        "id": Schema(
            type=OpenAPIType.STRING,
            pattern=r"^[0-9]+-[0-9]+$",
            description="send it back as `Last-Event-ID` to resume after this event",
        ),
    },
    description="One Server-Sent Event (`: heartbeat` comments come between them).",
)

# What Position.parse reads back (an event's id, or a bare ms); empty = from the start.
_RESUME = Schema(type=OpenAPIType.STRING, pattern=f"^({POSITION_PATTERN.strip('^$')})?$")

_TRANSCRIPT_JSON = Schema(
    type=OpenAPIType.OBJECT,
    required=["text"],
    properties={
        "text": Schema(type=OpenAPIType.STRING),
        "task": Schema(type=OpenAPIType.STRING),
        "language": Schema(type=OpenAPIType.STRING),
        "duration": Schema(type=OpenAPIType.NUMBER),
        "segments": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT)),
        "words": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT)),
    },
    description="`json`: `{text}`; `verbose_json`: OpenAI's verbose shape with segments",
)

# Where a new job's answer leads: (operation, its path parameters from the 202 answer).
_JOB_LINKS = {
    "GetJob": "GET /v1/jobs/{job_id}",
    "GetTranscript": "GET /v1/jobs/{job_id}/transcript",
    "FollowEvents": "GET /v1/jobs/{job_id}/events",
    "CancelJob": "POST /v1/jobs/{job_id}/cancel",
    "DeleteJob": "DELETE /v1/jobs/{job_id}",
    "RetryJob": "POST /v1/jobs/{job_id}/retry",
    "GetWebhooks": "GET /v1/jobs/{job_id}/webhooks",
    "RedeliverWebhook": "POST /v1/jobs/{job_id}/webhooks/redeliver",
}


def openapi_config() -> OpenAPIConfig:
    """The document's metadata, renderers and the bearer security scheme."""
    return OpenAPIConfig(
        title="Steno",
        version="0.1.0",
        description="Audio in, transcripts out, as durable background jobs.",
        path="/schema",
        render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        components=Components(security_schemes=SECURITY_SCHEMES),
    )


def describe_api(document: OpenAPI) -> None:
    """Write the error answers of ``ERRORS`` (and the success details above) into the
    generated ``document``; raises ``LookupError`` when the table names an operation the
    app does not have, so the table can't drift from the routes unnoticed."""
    operations = _operations(document)
    unknown = sorted(set(ERRORS) - set(operations))
    if unknown:
        raise LookupError(f"ERRORS names operations the API does not have: {unknown}")
    schemas = document.components.schemas
    schemas[ErrorBody.__name__] = _ERROR_BODY
    schemas[OPENAI_ERROR] = _OPENAI_ERROR_BODY
    for struct in CLOSED_BODIES:
        # msgspec refuses their unknown fields (422); Litestar's schema does not say so.
        schemas[struct.__name__].additional_properties = False
    for name, operation in operations.items():
        _, path = name.split(" ", 1)
        openai = path.startswith(OPENAI_PREFIX)
        errors = ERRORS.get(name, {})
        if operation.security:  # behind the key middleware
            errors = {**(OPENAI_V1_ERRORS if openai else V1_ERRORS), **errors}
        responses = {
            status: response
            for status, response in (operation.responses or {}).items()
            if int(status) < 400
        }
        for status, refusal in sorted(errors.items()):
            responses[str(status)] = _error_response(
                refusal, ERROR_HEADERS.get(status), openai=openai
            )
        operation.responses = responses
    _describe_successes(operations)


def _operations(document: OpenAPI) -> dict[str, Operation]:
    found: dict[str, Operation] = {}
    for path, item in (document.paths or {}).items():
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(item, method, None)
            if isinstance(operation, Operation):
                found[f"{method.upper()} {path}"] = operation
    return found


def _error_response(
    refusal: Refusal, headers: dict[str, OpenAPIHeader] | None, *, openai: bool
) -> OpenAPIResponse:
    codes = ", ".join(f"`{code}`" for code in refusal.codes)
    code = Schema(properties={"code": Schema(enum=list(refusal.codes))})
    if openai:
        schema = Schema(all_of=[_OPENAI_ERROR_REF, Schema(properties={"error": code})])
        headers = {**(headers or {}), _JOB_ID_HEADER: _job_id_header(required=False)}
    else:
        schema = Schema(all_of=[_ERROR_REF, code])
    return OpenAPIResponse(
        description=f"{codes}: {refusal.when}",
        headers=dict(headers) if headers else None,
        content={"application/json": OpenAPIMediaType(schema=schema)},
    )


def _job_id_header(*, required: bool) -> OpenAPIHeader:
    return OpenAPIHeader(
        required=required,
        schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.UUID),
        description="the job the answer is about (follow it at `/v1/jobs/{id}`)",
    )


def _location(description: str) -> OpenAPIHeader:
    return OpenAPIHeader(
        required=True,
        schema=Schema(type=OpenAPIType.STRING, examples=["/v1/jobs/{id}"]),
        description=description,
    )


def _flag_header(description: str) -> OpenAPIHeader:
    return OpenAPIHeader(
        required=False,
        schema=Schema(type=OpenAPIType.STRING, enum=["true"]),
        description=description,
    )


def _describe_successes(operations: dict[str, Operation]) -> None:
    submit = operations["POST /v1/jobs"]
    submitted = _success(submit, "202")
    submitted.headers = {"Location": _location("the new job: `/v1/jobs/{id}`")}
    assert submit.responses is not None
    submit.responses["200"] = OpenAPIResponse(
        description="an existing job answers: the `Idempotency-Key` was used with the same "
        "request (`Idempotent-Replayed`), or `dedupe` found a completed job of the same audio "
        "and options (`Steno-Deduplicated`); nothing new was made",
        headers={
            "Location": _location("the job: `/v1/jobs/{id}`"),
            "Idempotent-Replayed": _flag_header("the answer replays an `Idempotency-Key`"),
            "Steno-Deduplicated": _flag_header("the answer is a completed job's (`dedupe`)"),
        },
        content=submitted.content,
    )
    _success(operations["POST /v1/jobs/{job_id}/retry"], "202").headers = {
        "Location": _location("the job, queued again: `/v1/jobs/{id}`")
    }
    submitted.links = {
        link: Link(
            operation_id=operations[target].operation_id,
            parameters={"job_id": "$response.body#/id"},
            description=f"{target} of the new job",
        )
        for link, target in _JOB_LINKS.items()
    }
    created = _success(operations["POST /v1/keys"], "201")
    created.links = {
        "RevokeKey": Link(
            operation_id=operations["DELETE /v1/keys/{prefix}"].operation_id,
            parameters={"prefix": "$response.body#/prefix"},
            description="revoke the new key",
        )
    }
    transcript = _success(operations["GET /v1/jobs/{job_id}/transcript"], "200")
    transcript.content = {
        media_type: OpenAPIMediaType(
            schema=_TRANSCRIPT_JSON if media_type == "application/json" else _text(media_type)
        )
        for media_type in dict.fromkeys(m.split(";")[0] for m in MEDIA_TYPES.values())
    }
    _describe_events(operations["GET /v1/jobs/{job_id}/events"])
    for name, operation in operations.items():
        if name.split(" ", 1)[1].startswith(OPENAI_PREFIX):
            _describe_openai(operation)
    ready = operations["GET /readyz"]
    assert ready.responses is not None
    ready.responses["503"] = OpenAPIResponse(
        description="not ready: a check failed (each check says why)",
        content=_success(ready, "200").content,
    )


def _describe_events(operation: Operation) -> None:
    """The stream's events, and the two ways to resume it (header first, as browsers do)."""
    _success(operation, "200").content = {"text/event-stream": OpenAPIMediaType(schema=_EVENT)}
    for parameter in operation.parameters or []:
        if isinstance(parameter, Parameter) and parameter.name == "last_event_id":
            parameter.schema = _RESUME
            parameter.description = "the `id` of the last event received (if no header)"
    operation.parameters = [
        *(operation.parameters or []),
        Parameter(
            name="Last-Event-ID",
            param_in="header",
            schema=_RESUME,
            description="the `id` of the last event received; an EventSource sends it",
        ),
    ]


# OpenAI's audio form (``service.openai.schemas.read_request``); other fields are ignored.
_OPENAI_FORM = Schema(
    type=OpenAPIType.OBJECT,
    required=["file"],
    properties={
        "file": Schema(
            type=OpenAPIType.STRING,
            format=OpenAPIFormat.BINARY,
            description="the audio (any format ffmpeg decodes)",
        ),
        "model": Schema(
            type=OpenAPIType.STRING,
            description="`whisper-1` (Steno's default model) or a model served here",
        ),
        "language": Schema(type=OpenAPIType.STRING, description="the spoken language (ISO-639-1)"),
        "prompt": Schema(type=OpenAPIType.STRING, description="text to prime the decoder"),
        "response_format": Schema(
            type=OpenAPIType.STRING, enum=[str(f) for f in MEDIA_TYPES], description="default json"
        ),
        "temperature": Schema(type=OpenAPIType.NUMBER, minimum=0, maximum=1),
        "timestamp_granularities[]": Schema(
            type=OpenAPIType.ARRAY,
            items=Schema(type=OpenAPIType.STRING, enum=["word", "segment"]),
            description="with verbose_json: `words`, `segments` (the default)",
        ),
        "stream": Schema(
            type=OpenAPIType.BOOLEAN,
            description="answer OpenAI's `transcript.text.delta`/`done` events",
        ),
    },
)
_OPENAI_TEXT = Schema(
    type=OpenAPIType.OBJECT,
    required=["text"],
    properties={
        "text": Schema(type=OpenAPIType.STRING),
        "usage": Schema(type=OpenAPIType.OBJECT, description="transcriptions: `{type, seconds}`"),
        "task": Schema(type=OpenAPIType.STRING),
        "language": Schema(type=OpenAPIType.STRING),
        "duration": Schema(type=OpenAPIType.NUMBER),
        "segments": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT)),
        "words": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT)),
    },
    description="`json`: `{text, usage}`; `verbose_json`: with task, language, duration, "
    "segments and words",
)
_OPENAI_EVENT = Schema(
    type=OpenAPIType.OBJECT,
    required=["data"],
    properties={
        "data": Schema(
            type=OpenAPIType.STRING,
            description="`transcript.text.delta`/`done` as JSON, an `OpenAIError` object when "
            "the job ended without text, then `[DONE]`",
        )
    },
    description="One Server-Sent Event of OpenAI's transcription stream.",
)


def _describe_openai(operation: Operation) -> None:
    """OpenAI's form, and its answers' media types (``response_format``, ``stream``)."""
    operation.request_body = RequestBody(
        required=True, content={"multipart/form-data": OpenAPIMediaType(schema=_OPENAI_FORM)}
    )
    answer = _success(operation, "200")
    answer.description = "the job's transcript in `response_format`, or its events (`stream`)"
    answer.headers = {_JOB_ID_HEADER: _job_id_header(required=True)}
    answer.content = {
        media_type: OpenAPIMediaType(
            schema=_OPENAI_TEXT if media_type == "application/json" else _text(media_type)
        )
        for media_type in dict.fromkeys(m.split(";")[0] for m in MEDIA_TYPES.values())
    }
    answer.content["text/event-stream"] = OpenAPIMediaType(schema=_OPENAI_EVENT)


def _success(operation: Operation, status: str) -> OpenAPIResponse:
    response = (operation.responses or {})[status]
    assert isinstance(response, OpenAPIResponse)
    return response


def _text(media_type: str) -> Schema:
    return Schema(type=OpenAPIType.STRING, description=f"the transcript as {media_type}")
