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
)

from service.auth.controllers import NewKey
from service.core.events.schemas import Event
from service.core.events.stream import POSITION_PATTERN
from service.jobs.formats import MEDIA_TYPES
from service.jobs.schemas import ErrorBody
from service.openapi_errors import (
    ERRORS,
    OPENAI_PREFIX,
    OPENAI_V1_ERRORS,
    SECURITY_SCHEMES,
    V1_ERRORS,
    Refusal,
)
from service.speakers.openapi import describe_enrolment

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
    describe_enrolment(operations)
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
            type=OpenAPIType.STRING,
            enum=[*(str(f) for f in MEDIA_TYPES), "diarized_json"],
            description="default json; `diarized_json` (transcriptions) diarizes the job and "
            "answers OpenAI's TranscriptionDiarized",
        ),
        "known_speaker_names[]": Schema(
            type=OpenAPIType.ARRAY,
            items=Schema(type=OpenAPIType.STRING),
            description="speakers enrolled with POST /v1/speakers, labelled by name (diarizes "
            "the job); `known_speaker_references[]` is refused: enrol the voices instead",
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
