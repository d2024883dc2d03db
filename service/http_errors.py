"""How a domain error answers over HTTP: its status and the JSON body ``{code, detail}``."""

from __future__ import annotations

import logging
import math
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from sqlalchemy.exc import OperationalError

from service.core.db.engine import database_unreachable
from service.core.errors import (
    AudioGone,
    AudioTooLong,
    AudioTooShort,
    BadRequest,
    EmptyFile,
    Forbidden,
    IdempotencyKeyReused,
    InvalidAudio,
    InvalidUrl,
    JobAlreadyFinished,
    JobNotCompleted,
    JobNotFound,
    JobNotRetryable,
    KeyNotFound,
    NoWebhookEvent,
    PayloadTooLarge,
    RateLimited,
    SpeakerExists,
    SpeakerNotFound,
    StenoError,
    Unauthorized,
    UnsupportedMediaType,
    UnsupportedModel,
    UrlForbidden,
    UrlUnreadable,
    ValidationFailed,
)
from service.jobs.schemas import ErrorBody

log = logging.getLogger("steno.api")

# The HTTP status of each domain error; a StenoError not listed is a 500.
HTTP_STATUS: dict[type[StenoError], int] = {
    BadRequest: 400,
    JobNotFound: 404,
    KeyNotFound: 404,
    JobAlreadyFinished: 409,
    JobNotCompleted: 409,
    JobNotRetryable: 409,
    AudioGone: 409,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    AudioTooLong: 422,
    AudioTooShort: 422,
    SpeakerNotFound: 404,
    SpeakerExists: 409,
    EmptyFile: 422,
    InvalidAudio: 422,
    InvalidUrl: 422,
    UnsupportedModel: 422,
    UrlForbidden: 422,
    UrlUnreadable: 422,
    ValidationFailed: 422,
    Unauthorized: 401,
    Forbidden: 403,
    RateLimited: 429,
    IdempotencyKeyReused: 422,
    NoWebhookEvent: 409,
}
# Sent with every 401: how to authenticate.
WWW_AUTHENTICATE = 'Bearer realm="steno"'


def status_of(exc: StenoError) -> int:
    """The HTTP status that ``exc`` answers with (its closest listed class decides)."""
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> Response[ErrorBody]:
    """The JSON error body every failure answers with."""
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": WWW_AUTHENTICATE}
    return Response(ErrorBody(code=code, detail=detail), status_code=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
}


def _steno_error(_: Request[Any, Any, Any], exc: StenoError) -> Response[ErrorBody]:
    headers = None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    return error_response(status_of(exc), exc.code, exc.detail, headers)


def _validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorBody]:
    problems = "; ".join(
        f"{e.get('key', '?')}: {e.get('message', '')}"
        for e in (exc.extra if isinstance(exc.extra, list) else [])
        if isinstance(e, dict)
    )
    return error_response(422, "validation_error", problems or exc.detail)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    status = exc.status_code
    # Litestar's own headers stay: a 405 names the allowed methods in ``Allow``.
    return error_response(
        status, _HTTP_CODES.get(status, f"http_{status}"), exc.detail, exc.headers or None
    )


def _database_down(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.warning("database unavailable: %s", exc)
    return error_response(
        503, "database_unavailable", "PostgreSQL is not answering; try again shortly"
    )


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    if database_unreachable(exc):
        return _database_down(request, exc)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "an internal error occurred; it has been logged")


# Every error a request can raise, mapped to ``{code, detail}`` here and nowhere else.
EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    StenoError: _steno_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    OperationalError: _database_down,
    Exception: _internal_error,
}
