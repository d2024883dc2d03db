"""create_app(): route handlers, plugins, lifespan; nothing else."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from redis.asyncio import Redis
from sqlalchemy.exc import OperationalError

from service.broker import CeleryPublisher, GuardedPublisher, make_producer_app
from service.db.engine import database_unreachable, make_engine, make_sessionmaker
from service.errors import StenoError
from service.events.controllers import EventController
from service.events.hub import EventHub
from service.health.controllers import HealthController, WorkerCensus
from service.jobs.controllers import JobController
from service.jobs.schemas import ErrorBody
from service.settings import Settings, load_settings
from service.web import web_routes

log = logging.getLogger("steno.api")

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


def _error(status: int, code: str, detail: str) -> Response[ErrorBody]:
    return Response(ErrorBody(code=code, detail=detail), status_code=status)


def _steno_error(_: Request[Any, Any, Any], exc: StenoError) -> Response[ErrorBody]:
    return _error(exc.status_code, exc.code, exc.detail)


def _validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorBody]:
    problems = "; ".join(
        f"{e.get('key', '?')}: {e.get('message', '')}"
        for e in (exc.extra if isinstance(exc.extra, list) else [])
        if isinstance(e, dict)
    )
    return _error(422, "validation_error", problems or exc.detail)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    status = exc.status_code
    return _error(status, _HTTP_CODES.get(status, f"http_{status}"), exc.detail)


def _database_down(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.warning("database unavailable: %s", exc)
    return _error(503, "database_unavailable", "PostgreSQL is not answering; try again shortly")


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    if database_unreachable(exc):
        return _database_down(request, exc)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error(500, "internal_error", "an internal error occurred; it has been logged")


def create_app(settings: Settings | None = None) -> Litestar:
    """The Steno API; resources are made in the lifespan and handed out as dependencies."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        engine = make_engine(settings)
        redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        producer = make_producer_app(settings)
        app.state.engine = engine
        app.state.sessions = make_sessionmaker(engine)
        app.state.redis = redis
        app.state.publisher = GuardedPublisher(CeleryPublisher(producer))
        app.state.census = WorkerCensus(producer)
        app.state.http = httpx.AsyncClient(
            follow_redirects=True,
            timeout=httpx.Timeout(settings.url_check_timeout_seconds or 5.0),
            headers={"user-agent": "steno/0.1 (+audio url check)"},
        )
        # The hub's XREAD blocks, so it has a connection of its own.
        hub_redis = Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=2)
        app.state.hub = EventHub(
            hub_redis,
            max_streams_per_client=settings.sse_max_streams_per_client,
            send_timeout=settings.sse_send_timeout_seconds,
        )
        app.state.hub.start()
        try:
            yield
        finally:
            await app.state.hub.stop()
            await hub_redis.aclose()
            await app.state.http.aclose()
            await redis.aclose()
            await engine.dispose()
            producer.close()

    def from_state(name: str) -> Provide:
        def provide(state: State) -> Any:
            return state[name]

        return Provide(provide, sync_to_thread=False)

    return Litestar(
        route_handlers=[JobController, EventController, HealthController, *web_routes()],
        lifespan=[lifespan],
        dependencies={
            "settings": Provide(lambda: settings, sync_to_thread=False),
            "sessions": from_state("sessions"),
            "engine": from_state("engine"),
            "redis": from_state("redis"),
            "publisher": from_state("publisher"),
            "census": from_state("census"),
            "http": from_state("http"),
            "hub": from_state("hub"),
        },
        exception_handlers={
            StenoError: _steno_error,
            ValidationException: _validation_error,
            HTTPException: _http_error,
            OperationalError: _database_down,
            Exception: _internal_error,
        },
        openapi_config=OpenAPIConfig(
            title="Steno",
            version="0.1.0",
            description="Audio in, transcripts out, as durable background jobs.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        ),
    )
