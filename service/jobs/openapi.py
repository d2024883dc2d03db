"""The OpenAPI description of ``POST /v1/jobs``, whose body the handler streams itself.

Litestar documents a request body from a typed ``data`` parameter; the submit handler reads
the raw stream instead (so uploads never sit in memory), so its two body shapes are
described here.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar.enums import ParamType
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
)

_OPTIONS = {
    "language": Schema(
        type=OpenAPIType.STRING, description="Whisper language code (e.g. en); empty = detect"
    ),
    "model": Schema(type=OpenAPIType.STRING, description="a model this deployment serves"),
    "word_timestamps": Schema(type=OpenAPIType.BOOLEAN, description="add per-word times"),
    "initial_prompt": Schema(type=OpenAPIType.STRING, description="text to prime the decoder"),
    "webhook_url": Schema(
        type=OpenAPIType.STRING,
        format="uri",  # type: ignore[arg-type]
        description="POSTed job.completed/failed/cancelled, signed (Standard Webhooks)",
    ),
    "dedupe": Schema(
        type=OpenAPIType.BOOLEAN,
        description="answer 200 with a completed job of the same audio and options, if any",
    ),
}


def _body(source: str, fmt: str, description: str) -> OpenAPIMediaType:
    """An object with the required audio ``source`` field (a string of ``fmt``) and the options."""
    source_schema = Schema(type=OpenAPIType.STRING, format=fmt, description=description)  # type: ignore[arg-type]
    return OpenAPIMediaType(
        schema=Schema(
            type=OpenAPIType.OBJECT,
            required=[source],
            properties={source: source_schema, **_OPTIONS},
        )
    )


@dataclass
class SubmitOperation(Operation):
    """``POST /v1/jobs`` with its multipart and JSON bodies spelled out."""

    def __post_init__(self) -> None:
        self.parameters = [
            *(self.parameters or []),
            Parameter(
                name="Idempotency-Key",
                param_in=ParamType.HEADER,
                required=False,
                schema=Schema(type=OpenAPIType.STRING, max_length=255),
                description="the same key and request within 24 h answer 200 with the same job; "
                "another request with it is 422 idempotency_key_reused",
            ),
        ]
        self.request_body = RequestBody(
            required=True,
            content={
                "multipart/form-data": _body(
                    "file", "binary", "the audio (any format ffmpeg decodes)"
                ),
                "application/json": _body(
                    "audio_url", "uri", "an http(s) URL an IO worker will fetch"
                ),
            },
        )
