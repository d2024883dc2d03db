"""What the OpenAPI document says of ``POST /v1/speakers`` beyond what Litestar infers:
its multipart form, and links from the speaker it made to reading and deleting it."""

from __future__ import annotations

from litestar.openapi.spec import (
    Link,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)

_SPEAKER_FORM = Schema(
    type=OpenAPIType.OBJECT,
    required=["name", "file"],
    properties={
        "name": Schema(
            type=OpenAPIType.STRING,
            min_length=1,
            max_length=64,
            description="letters, digits, spaces and _ - . ' (starting with a letter or "
            "digit), not SPEAKER_<n>",
        ),
        "file": Schema(
            type=OpenAPIType.STRING,
            format=OpenAPIFormat.BINARY,
            description="2 to 60 s of the speaker's voice, any format ffmpeg decodes",
        ),
    },
)


def describe_enrolment(operations: dict[str, Operation]) -> None:
    """``POST /v1/speakers``: its form, and links to the speaker it made."""
    enrol = operations["POST /v1/speakers"]
    enrol.request_body = RequestBody(
        required=True, content={"multipart/form-data": OpenAPIMediaType(schema=_SPEAKER_FORM)}
    )
    created = (enrol.responses or {})["201"]
    assert isinstance(created, OpenAPIResponse)
    created.links = {
        name: Link(
            operation_id=operations[target].operation_id,
            parameters={"name": "$response.body#/name"},
            description=description,
        )
        for name, target, description in (
            ("GetSpeaker", "GET /v1/speakers/{name}", "the new speaker"),
            ("DeleteSpeaker", "DELETE /v1/speakers/{name}", "delete the new speaker"),
        )
    }
