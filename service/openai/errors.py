"""How errors answer on the OpenAI-compatible routes: OpenAI's ``{"error": {...}}`` shape.

OpenAI's clients read ``{"error": {"message", "type", "param", "code"}}`` and pick their
exception class by status (400 ``BadRequestError``, 401 ``AuthenticationError``, 404
``NotFoundError``, 429 ``RateLimitError``, 5xx ``InternalServerError``). These handlers are
installed on the router that holds ``/v1/audio/*``, so they answer for the key middleware
too (a bad key is 401 in OpenAI's shape there, and Steno's ``{code, detail}`` elsewhere).
``code`` is Steno's stable code, except where OpenAI has a well-known one of its own
(``invalid_api_key``, ``model_not_found``, ``rate_limit_exceeded``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from sqlalchemy.exc import OperationalError

from service.core.db.engine import database_unreachable
from service.core.errors import (
    AudioTooLong,
    EmptyFile,
    InvalidAudio,
    RateLimited,
    StenoError,
    Unauthorized,
    UnsupportedMediaType,
    UnsupportedModel,
    ValidationFailed,
)
from service.http_errors import WWW_AUTHENTICATE, status_of

log = logging.getLogger("steno.api")

# The response header that names the job an answer is about.
JOB_ID_HEADER = "Steno-Job-Id"
# OpenAI's clients retry 409, 429 and 5xx answers by sending the request again; once a job
# exists that would transcribe the audio twice, so those answers say not to.
NO_RETRY = {"x-should-retry": "false"}


class InvalidParameter(ValidationFailed):
    """A form field of an OpenAI request has a value Steno can't use; ``param`` names it."""

    def __init__(self, detail: str, *, param: str | None) -> None:
        super().__init__(detail)
        self.param = param


class ModelNotFound(UnsupportedModel):
    """The request names a model this deployment does not serve (OpenAI answers 404)."""

    code = "model_not_found"
    param = "model"


# Where OpenAI answers differently from Steno's own routes: it calls a bad field, a bad file
# and audio it can't use all 400 (``invalid_request_error``), and an unknown model 404.
_STATUS: dict[type[StenoError], int] = {
    ValidationFailed: 400,
    UnsupportedMediaType: 400,
    EmptyFile: 400,
    InvalidAudio: 400,
    AudioTooLong: 400,
    ModelNotFound: 404,
}
_OPENAI_CODES = {"unauthorized": "invalid_api_key", "rate_limited": "rate_limit_exceeded"}
# The form field a domain error is about, when the error does not say.
_PARAMS = {"unknown_speaker": "known_speaker_names"}


class ErrorDetail(msgspec.Struct):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(msgspec.Struct):
    """Every error answer of the OpenAI-compatible routes."""

    error: ErrorDetail


def error_type(status: int) -> str:
    """OpenAI's ``type`` for an answer of this status."""
    if status == 429:
        return "requests"
    return "server_error" if status >= 500 else "invalid_request_error"


def error_payload(
    status: int, message: str, *, code: str | None, param: str | None = None
) -> ErrorBody:
    """The body of an error answer (also the ``data:`` of an error event on a stream)."""
    return ErrorBody(ErrorDetail(message=message, type=error_type(status), param=param, code=code))


def openai_error(
    status: int,
    message: str,
    *,
    code: str | None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[ErrorBody]:
    """An error answer in OpenAI's shape."""
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": WWW_AUTHENTICATE}
    return Response(
        error_payload(status, message, code=code, param=param),
        status_code=status,
        headers=headers,
    )


def openai_status(exc: StenoError) -> int:
    """The status a domain error answers with on these routes."""
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return status_of(exc)


def _steno_error(_: Request[Any, Any, Any], exc: StenoError) -> Response[ErrorBody]:
    headers = None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    code = _OPENAI_CODES.get(exc.code, exc.code)
    if isinstance(exc, Unauthorized):
        code = "invalid_api_key"
    param = getattr(exc, "param", None) or _PARAMS.get(exc.code)
    return openai_error(openai_status(exc), exc.detail, code=code, param=param, headers=headers)


def _validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorBody]:
    return openai_error(400, str(exc.detail), code="validation_error")


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    return openai_error(exc.status_code, str(exc.detail), code=f"http_{exc.status_code}")


def _database_down(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.warning("database unavailable: %s", exc)
    return openai_error(
        503, "PostgreSQL is not answering; try again shortly", code="database_unavailable"
    )


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    if database_unreachable(exc):
        return _database_down(request, exc)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return openai_error(
        500, "an internal error occurred; it has been logged", code="internal_error"
    )


# The OpenAI routes' counterpart of ``service.http_errors.EXCEPTION_HANDLERS``.
OPENAI_EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    StenoError: _steno_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    OperationalError: _database_down,
    Exception: _internal_error,
}
