"""The OpenAPI description of ``POST /v1/jobs``, whose body the handler streams itself.

Litestar documents a request body from a typed ``data`` parameter; the submit handler reads
the raw stream instead (so uploads never sit in memory), so its two body shapes are
described here.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import (
    Example,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)

_URL_EXAMPLE = {"audio_url": "https://media.example.com/talks/keynote.mp3", "language": "en"}
_OPTIONS = {
    "language": "Whisper language code (e.g. en) or name; empty or `auto` = detect",
    "model": "a model served here (STENO_WHISPER_MODEL, STENO_EXTRA_MODELS); empty = the first",
    "word_timestamps": "add per-word times",
    "initial_prompt": "text to prime the decoder",
}


def _option(name: str, *, json: bool) -> Schema:
    # In JSON the text options may be null; in a form every field is text.
    if name == "word_timestamps":
        return Schema(type=OpenAPIType.BOOLEAN, description=_OPTIONS[name])
    kind = [OpenAPIType.STRING, OpenAPIType.NULL] if json else OpenAPIType.STRING
    return Schema(type=kind, description=_OPTIONS[name])


def _body(source: str, source_schema: Schema, *, json: bool) -> OpenAPIMediaType:
    """An object with the required audio ``source`` field and the options.

    The JSON body refuses unknown fields (``SubmitUrl``); a form's other parts are ignored.
    """
    return OpenAPIMediaType(
        schema=Schema(
            type=OpenAPIType.OBJECT,
            required=[source],
            properties={source: source_schema, **{n: _option(n, json=json) for n in _OPTIONS}},
            additional_properties=False if json else None,
        ),
        examples={"talk": Example(value=_URL_EXAMPLE)} if json else None,
    )


@dataclass
class SubmitOperation(Operation):
    """``POST /v1/jobs`` with its multipart and JSON bodies spelled out."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            content={
                "multipart/form-data": _body(
                    "file",
                    Schema(
                        type=OpenAPIType.STRING,
                        format=OpenAPIFormat.BINARY,
                        description="the audio (any format ffmpeg decodes)",
                    ),
                    json=False,
                ),
                "application/json": _body(
                    "audio_url",
                    Schema(
                        type=OpenAPIType.STRING,
                        # An IRI: a host in any script is sent IDNA-encoded.
                        format=OpenAPIFormat.IRI,
                        pattern="^https?://",
                        description="an http(s) URL an IO worker will fetch",
                    ),
                    json=True,
                ),
            },
        )
