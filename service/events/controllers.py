"""``GET /v1/jobs/{id}/events``: a job's progress as Server-Sent Events."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.auth.guards import principal_of
from service.auth.limits import StreamSlots
from service.core.errors import BadRequest
from service.core.events.stream import ORIGIN, Position
from service.core.metrics import series
from service.core.settings import Settings
from service.events.feed import job_events
from service.events.hub import EventHub
from service.events.response import EventStream
from service.jobs import queries
from service.jobs.controllers import parse_job_id


def _resume_from(request: Request[Any, Any, Any], last_event_id: str | None) -> Position:
    # The header wins: an EventSource reconnects with it, keeping the URL's query. Both are
    # checked, so a bad query is refused whether or not a header comes with it.
    given = [raw for raw in (request.headers.get("last-event-id"), last_event_id) if raw]
    positions = [_position(raw) for raw in given]
    return positions[0] if positions else ORIGIN


def _position(raw: str) -> Position:
    try:
        return Position.parse(raw)
    except ValueError as exc:
        raise BadRequest(f"Last-Event-ID {raw!r} is not an event id this API sent") from exc


class EventController(Controller):
    """Follow a job as it runs."""

    path = "/v1/jobs"
    tags = ["jobs"]  # noqa: RUF012 - declared by Litestar as an instance attribute

    @get(
        "/{job_id:str}/events",
        summary="Follow a job's progress (Server-Sent Events)",
        description=(
            "A `text/event-stream` of the job's events: `queued`, `started`, `progress` "
            "(`stage`, `percent`, `audio_seconds_done`, `audio_seconds`, `eta_seconds`), "
            "`segment` (`start`, `end`, `text`), then one of `completed`, `failed` (`code`, "
            "`detail`) or `cancelled`, after which the stream closes. Each event has an `id:`; "
            "reconnect with the `Last-Event-ID` header (or `?last_event_id=`) to get exactly "
            "the events missed. A `: heartbeat` comment comes every "
            "`STENO_SSE_HEARTBEAT_SECONDS`. 404 for an unknown job (or another key owner's), "
            "429 `too_many_streams` past `STENO_SSE_MAX_STREAMS_PER_KEY` open streams of the "
            "key."
        ),
        media_type="text/event-stream",
    )
    async def events(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[str],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        redis: NamedDependency[Redis],
        hub: NamedDependency[EventHub],
        settings: NamedDependency[Settings],
        stream_slots: NamedDependency[StreamSlots],
        last_event_id: FromQuery[str | None] = None,
    ) -> EventStream:
        """The job's event stream; 404 before it starts when the key owns no such job."""
        principal = principal_of(request)
        job_uuid = parse_job_id(job_id)
        after = _resume_from(request, last_event_id)
        async with sessions() as session:
            await queries.get_job(session, job_uuid, owner=principal.owner)
        key_id = principal.key_id
        slot = await stream_slots.take(key_id)
        body = job_events(
            job_uuid,
            after,
            hub=hub,
            client=f"key {principal.prefix}",
            sessions=sessions,
            redis=redis,
            settings=settings,
            slot=(key_id, slot),
        )
        open_streams = series().sse_streams
        open_streams.inc()

        def closed() -> None:
            open_streams.dec()
            stream_slots.give_back_soon(key_id, slot)

        return EventStream(body, watchdog=hub.watchdog, on_close=closed)
