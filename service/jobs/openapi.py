"""The OpenAPI description of ``POST /v1/jobs``, whose body the handler streams itself.

Litestar documents a request body from a typed ``data`` parameter; the submit handler reads
the raw stream instead (so uploads never sit in memory), so its two body shapes are
described here.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar.enums import ParamType
from litestar.openapi.spec import (
    Example,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
)

_URL_EXAMPLE = {"audio_url": "https://media.example.com/talks/keynote.mp3", "language": "en"}
# Each option: its JSON type (a form sends every field as text) and what it means.
_OPTIONS: dict[str, tuple[OpenAPIType, str]] = {
    "language": (
        OpenAPIType.STRING,
        "Whisper language code (e.g. en) or name; empty or `auto` = detect",
    ),
    "model": (
        OpenAPIType.STRING,
        "a model served here (STENO_WHISPER_MODEL, STENO_EXTRA_MODELS); empty = the first",
    ),
    "word_timestamps": (OpenAPIType.BOOLEAN, "add per-word times"),
    "initial_prompt": (OpenAPIType.STRING, "text to prime the decoder"),
    "webhook_url": (
        OpenAPIType.STRING,
        "POSTed job.completed/failed/cancelled, signed (Standard Webhooks)",
    ),
    "dedupe": (
        OpenAPIType.BOOLEAN,
        "answer 200 with a completed job of the same audio and options, if any",
    ),
    "priority": (OpenAPIType.STRING, "the GPU lane: high, normal (default) or low"),
    "diarize": (OpenAPIType.BOOLEAN, "label who spoke when (SPEAKER_1, SPEAKER_2, ...)"),
    "num_speakers": (OpenAPIType.INTEGER, "with diarize: exactly this many speakers (1-10)"),
    "min_speakers": (OpenAPIType.INTEGER, "with diarize: at least this many speakers"),
    "max_speakers": (OpenAPIType.INTEGER, "with diarize: at most this many speakers"),
    "known_speakers": (
        OpenAPIType.ARRAY,
        "names of speakers enrolled with POST /v1/speakers, labelled by name (implies "
        "diarize; 422 unknown_speaker for a name not enrolled); in a form, repeat the field "
        "or separate names with commas",
    ),
}


def _option(name: str, *, json: bool) -> Schema:
    # In JSON the text and number options may be null; in a form every field is text.
    kind, description = _OPTIONS[name]
    if not json:
        return Schema(type=OpenAPIType.STRING, description=description)
    if kind == OpenAPIType.BOOLEAN:
        return Schema(type=kind, description=description)
    if kind == OpenAPIType.ARRAY:
        return Schema(
            type=[kind, OpenAPIType.NULL],
            items=Schema(type=OpenAPIType.STRING),
            description=description,
        )
    return Schema(type=[kind, OpenAPIType.NULL], description=description)


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
