"""The OpenAPI document's error side, security and media types, read from the app itself.

The fuzzing test (tests/integration/test_openapi.py) checks the document against a running
API; these check the table in ``service.openapi`` against the code that raises the errors.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest

import service.openapi
from service.app import create_app
from service.core.errors import StenoError
from service.http_errors import HTTP_STATUS
from service.jobs.formats import MEDIA_TYPES
from service.jobs.schemas import ErrorBody
from service.openai import errors as openai_errors
from service.openapi import OPENAI_ERROR
from service.openapi_errors import BEARER, ERRORS, OPENAI_PREFIX

OPEN_PATHS = {"/healthz", "/readyz"}
# Besides /v1, the Prometheus scrape needs an (admin) key.
KEYED_PATHS = {"/metrics"}
# Codes that no domain error carries: the database handler's.
OTHER_CODES = {"database_unavailable": 503}
# On the OpenAI routes: the codes of a job that ended without text, or did not end in time
# (service.openai.answers), and the failure codes a worker stores on an upload's job.
OPENAI_JOB_CODES = {
    "job_not_found": 404,
    "job_cancelled": 409,
    "job_not_finished": 504,
    "transcription_failed": 500,
    "model_unavailable": 500,
    "time_limit_exceeded": 500,
    "worker_lost": 500,
    "too_many_attempts": 500,
}


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


def _openai_status_of_each_code() -> dict[str, int]:
    """The status each ``error.code`` answers with on ``/v1/audio/*``: each domain error as
    the OpenAI routes' own handler answers it, and the codes about a job."""
    found = {**OTHER_CODES, **OPENAI_JOB_CODES}
    pending = [StenoError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        exc = cls.__new__(cls)
        exc.detail, exc.retry_after = "x", 1.0
        answer = openai_errors.OPENAI_EXCEPTION_HANDLERS[StenoError](None, exc)
        found[answer.content.error.code] = answer.status_code
    return found


def _litestar_errors(node: Any) -> list[Any]:
    """Every schema of Litestar's own error shape ``{status_code, detail, extra}`` in ``node``
    (a webhook delivery's ``status_code`` alone is not one)."""
    if isinstance(node, list):
        return [found for item in node for found in _litestar_errors(item)]
    if not isinstance(node, dict):
        return []
    found = [node] if {"status_code", "extra"} <= set(node.get("properties") or {}) else []
    return found + [f for value in node.values() for f in _litestar_errors(value)]


def test_every_v1_operation_needs_a_key_and_the_probes_do_not(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"][BEARER]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for name, operation in _operations(document).items():
        path = name.split(" ", 1)[1]
        if path in OPEN_PATHS:
            assert "security" not in operation, name
            continue
        assert path.startswith("/v1/") or path in KEYED_PATHS, name
        assert operation["security"] == [{BEARER: []}], name
        assert {"401", "503"} <= set(operation["responses"]), name
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"], name


def test_every_error_is_an_error_body_with_codes_that_answer_that_status(
    document: dict[str, Any],
) -> None:
    status_of, openai_status_of = _status_of_each_code(), _openai_status_of_each_code()
    assert not _litestar_errors(document), "Litestar's own error shape is left"
    for name, operation in _operations(document).items():
        openai = name.split(" ", 1)[1].startswith(OPENAI_PREFIX)
        for status, response in operation["responses"].items():
            if int(status) < 400 or name == "GET /readyz":
                continue
            schema = response["content"]["application/json"]["schema"]
            if openai:
                # OpenAI's shape: {"error": {"message", "type", "param", "code"}}
                assert schema["allOf"][0] == {"$ref": f"#/components/schemas/{OPENAI_ERROR}"}
                codes = schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]
                statuses = openai_status_of
            else:
                assert schema["allOf"][0] == {"$ref": "#/components/schemas/ErrorBody"}, name
                codes = schema["allOf"][1]["properties"]["code"]["enum"]
                statuses = status_of
            for code in codes:
                assert statuses.get(code) == int(status), (name, status, code)
            if status == "429":
                assert "Retry-After" in response["headers"], name


def test_the_error_body_component_is_error_body(document: dict[str, Any]) -> None:
    expected = msgspec.json.schema(ErrorBody)["$defs"]["ErrorBody"]
    component = document["components"]["schemas"]["ErrorBody"]
    assert component["required"] == expected["required"]
    assert {k: v["type"] for k, v in component["properties"].items()} == {
        k: v["type"] for k, v in expected["properties"].items()
    }


def test_the_openai_error_component_is_openai_s_error_body(document: dict[str, Any]) -> None:
    defs = msgspec.json.schema(openai_errors.ErrorBody)["$defs"]
    component = document["components"]["schemas"][OPENAI_ERROR]
    assert component["required"] == defs["ErrorBody"]["required"] == ["error"]
    detail = component["properties"]["error"]
    assert detail["required"] == defs["ErrorDetail"]["required"]
    assert set(detail["properties"]) == set(defs["ErrorDetail"]["properties"])


def test_every_v1_route_of_the_app_has_an_entry_in_the_error_table() -> None:
    # Every route the app serves under /v1 (or behind the key: /metrics), method by method:
    # a new feature's route can't answer errors the document does not know.
    app = create_app()
    served = {
        f"{method} {path}"
        for route in app.routes
        if route.path.startswith("/v1/") or route.path in KEYED_PATHS
        for method in getattr(route, "methods", ())
        if method not in {"OPTIONS", "HEAD"}
        # Litestar's path converters (`{job_id:str}`) are not in the document's paths.
        for path in [re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)]
    }
    assert served, "no /v1 route found"
    assert served <= set(ERRORS), sorted(served - set(ERRORS))


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
