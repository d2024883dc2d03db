"""The OpenAPI description of ``POST /v1/jobs``, whose body the handler streams itself.

Litestar documents a request body from a typed ``data`` parameter; the submit handler reads
the raw stream instead (so uploads never sit in memory), so its two body shapes are
described here.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

_OPTIONS = {
    "language": Schema(
        type=OpenAPIType.STRING, description="Whisper language code (e.g. en); empty = detect"
    ),
    "model": Schema(type=OpenAPIType.STRING, description="a model this deployment serves"),
    "word_timestamps": Schema(type=OpenAPIType.BOOLEAN, description="add per-word times"),
    "initial_prompt": Schema(type=OpenAPIType.STRING, description="text to prime the decoder"),
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
