"""create_app(): route handlers, plugins, lifespan; nothing else."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from redis.asyncio import Redis

from service.auth.controllers import KeyController
from service.auth.guards import provide_principal
from service.auth.limits import StreamSlots
from service.auth.middleware import bearer_auth
from service.core.broker import CeleryPublisher, GuardedPublisher, make_producer_app
from service.core.db.engine import make_engine, make_read_pool, make_sessionmaker
from service.core.egress import EgressClient
from service.core.exporter import record_family
from service.core.logs import configure_logging
from service.core.settings import Settings, load_settings
from service.events.controllers import EventController
from service.events.hub import EventHub
from service.events.response import StenoLitestar
from service.health.controllers import HealthController, WorkerCensus
from service.http_errors import EXCEPTION_HANDLERS
from service.jobs.controllers import JobController
from service.openai import openai_router
from service.openapi import describe_api, openapi_config
from service.openapi_errors import V1_SECURITY
from service.ops.backlog import Estimator
from service.ops.controllers import OpsController
from service.ops.requests import record_response, request_timer
from service.speakers.controllers import SpeakerController
from service.web import web_routes
from service.webhooks.controllers import WebhookController

# The API's /v1 controllers: each is served behind the API-key middleware.
V1_CONTROLLERS = [
    JobController,
    EventController,
    KeyController,
    WebhookController,
    OpsController,
    SpeakerController,
]


_heap_frozen = False


def _freeze_startup_heap() -> None:
    """Move what startup made (modules, the app, its pools) out of the collector's way.

    It lives as long as the process, yet every full collection walked it: about half the
    objects with 1,000 event streams open, and a pause of about 170 ms for every stream's
    next event. Done once per process (tests start many apps in one), after a collection
    so that no garbage is frozen.
    """
    global _heap_frozen
    if not _heap_frozen:
        _heap_frozen = True
        gc.collect()
        gc.freeze()


def create_app(settings: Settings | None = None) -> Litestar:
    """The Steno API; resources are made in the lifespan and handed out as dependencies."""
    settings = settings or load_settings()
    configure_logging(settings, "api")

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # This process's series join the other API processes' (served at /metrics).
        record_family(settings, "api", settings.port)
        engine = make_engine(settings)
        redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        producer = make_producer_app(settings)
        app.state.engine = engine
        app.state.sessions = make_sessionmaker(engine)
        app.state.read_pool = await make_read_pool(settings)
        app.state.redis = redis
        app.state.publisher = GuardedPublisher(CeleryPublisher(producer))
        app.state.census = WorkerCensus(producer)
        check_seconds = settings.url_check_timeout_seconds or 5.0
        app.state.http = EgressClient.from_settings(
            settings,
            deadline=check_seconds,
            timeout=httpx.Timeout(check_seconds),
            user_agent="steno/0.1 (+audio url check)",
        )
        app.state.estimator = Estimator(
            app.state.census, fallback_concurrency=settings.gpu_task_slots
        )
        app.state.stream_slots = StreamSlots(
            redis,
            limit=settings.sse_max_streams_per_key,
            # The hub renews a stream's slot at every heartbeat; one whose process died frees it.
            lease_seconds=3 * settings.sse_heartbeat_seconds + 10,
        )
        # The hub's XREAD blocks, so it has a connection of its own.
        hub_redis = Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=2)
        app.state.hub = EventHub(
            hub_redis,
            send_timeout=settings.sse_send_timeout_seconds,
            stream_slots=app.state.stream_slots,
            read_pool=app.state.read_pool,
        )
        app.state.hub.start()
        _freeze_startup_heap()
        try:
            yield
        finally:
            await app.state.hub.stop()
            await hub_redis.aclose()
            await app.state.http.aclose()
            await redis.aclose()
            await app.state.read_pool.close()
            await engine.dispose()
            producer.close()

    def from_state(name: str) -> Provide:
        def provide(state: State) -> Any:
            return state[name]

        return Provide(provide, sync_to_thread=False)

    # StenoLitestar: event streams write their bodies past Litestar's send wrappers.
    app = StenoLitestar(
        route_handlers=[
            # /v1/audio/*: OpenAI's API, behind the same keys, answering errors in its shape.
            openai_router(),
            # Everything else under /v1 needs a key; the page, probes and the schema stay open.
            Router(
                path="/",
                route_handlers=V1_CONTROLLERS,
                middleware=[bearer_auth()],
                security=V1_SECURITY,
            ),
            HealthController,
            *web_routes(),
        ],
        lifespan=[lifespan],
        # HTTP request counts and latency by route (service.ops.requests); logging is ours.
        middleware=[request_timer],
        before_send=[record_response],
        logging_config=None,
        dependencies={
            "settings": Provide(lambda: settings, sync_to_thread=False),
            "sessions": from_state("sessions"),
            "engine": from_state("engine"),
            "read_pool": from_state("read_pool"),
            "redis": from_state("redis"),
            "publisher": from_state("publisher"),
            "census": from_state("census"),
            "estimator": from_state("estimator"),
            "http": from_state("http"),
            "hub": from_state("hub"),
            "stream_slots": from_state("stream_slots"),
            "principal": Provide(provide_principal, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=openapi_config(),
    )
    # The generated document, completed with what the API really answers (service.openapi).
    describe_api(app.openapi_schema)
    return app
