"""The OpenAPI document's error side, security and media types, read from the app itself.

The fuzzing test (tests/integration/test_openapi.py) checks the document against a running
API; these check the table in ``service.openapi`` against the code that raises the errors.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

import service.openapi
from service.app import create_app
from service.core.errors import StenoError
from service.http_errors import HTTP_STATUS
from service.jobs.formats import MEDIA_TYPES
from service.jobs.schemas import ErrorBody
from service.openapi import BEARER

OPEN_PATHS = {"/healthz", "/readyz"}
# Codes that no domain error carries: the database handler's.
OTHER_CODES = {"database_unavailable": 503}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The document as ``/schema/openapi.json`` serves it."""
    schema: dict[str, Any] = create_app().openapi_schema.to_schema()
    return schema


def _operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "delete", "patch"}
    }


def _status_of_each_code() -> dict[str, int]:
    """The status each error code answers with, from the classes and ``HTTP_STATUS``."""
    found = dict(OTHER_CODES)
    pending = [StenoError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        status = next((HTTP_STATUS[c] for c in cls.__mro__ if c in HTTP_STATUS), None)
        if status is not None:
            found[cls.code] = status
    return found


def test_every_v1_operation_needs_a_key_and_the_probes_do_not(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"][BEARER]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for name, operation in _operations(document).items():
        path = name.split(" ", 1)[1]
        if path in OPEN_PATHS:
            assert "security" not in operation, name
            continue
        assert path.startswith("/v1/"), name
        assert operation["security"] == [{BEARER: []}], name
        assert {"401", "503"} <= set(operation["responses"]), name
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"], name


def test_every_error_is_an_error_body_with_codes_that_answer_that_status(
    document: dict[str, Any],
) -> None:
    status_of = _status_of_each_code()
    assert '"status_code"' not in json.dumps(document), "Litestar's own error shape is left"
    for name, operation in _operations(document).items():
        for status, response in operation["responses"].items():
            if int(status) < 400 or name == "GET /readyz":
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema["allOf"][0] == {"$ref": "#/components/schemas/ErrorBody"}, name
            for code in schema["allOf"][1]["properties"]["code"]["enum"]:
                assert status_of.get(code) == int(status), (name, status, code)
            if status == "429":
                assert "Retry-After" in response["headers"], name


def test_the_error_body_component_is_error_body(document: dict[str, Any]) -> None:
    expected = msgspec.json.schema(ErrorBody)["$defs"]["ErrorBody"]
    component = document["components"]["schemas"]["ErrorBody"]
    assert component["required"] == expected["required"]
    assert {k: v["type"] for k, v in component["properties"].items()} == {
        k: v["type"] for k, v in expected["properties"].items()
    }


def test_the_transcript_and_events_have_their_media_types(document: dict[str, Any]) -> None:
    operations = _operations(document)
    transcript = operations["GET /v1/jobs/{job_id}/transcript"]["responses"]["200"]["content"]
    assert set(transcript) == {media.split(";")[0] for media in MEDIA_TYPES.values()}
    events = operations["GET /v1/jobs/{job_id}/events"]["responses"]["200"]["content"]
    assert set(events) == {"text/event-stream"}
    new_job = operations["POST /v1/jobs"]["responses"]["202"]
    assert "Location" in new_job["headers"] and "GetJob" in new_job["links"]


def test_an_error_table_naming_no_operation_stops_the_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a table entry for a route the API does not have (a typo, or a route renamed)
    errors = {**service.openapi.ERRORS, "GET /v1/jobz": {}}
    monkeypatch.setattr(service.openapi, "ERRORS", errors)

    # when the app is built, then it refuses to start with a wrong document
    with pytest.raises(LookupError, match="/v1/jobz"):
        create_app()
