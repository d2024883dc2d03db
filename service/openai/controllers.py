"""``POST /v1/audio/transcriptions`` and ``/translations``: OpenAI's audio API as Steno jobs.

Each request is a normal Steno job (the same queue, retries, progress events, SSE and
cancel); the answer waits for it, up to ``STENO_OPENAI_WAIT_SECONDS``, and every answer
about a job names it in ``Steno-Job-Id``. A job that has not ended by then answers 504
``job_not_finished`` and goes on; so does one whose client went away: it is never cancelled.
While it waits, a request holds one of its key's ``STENO_SSE_MAX_STREAMS_PER_KEY`` slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from litestar import Controller, Request, Response, Router, post
from litestar.di import NamedDependency
from litestar.types import Receive
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.auth.keys import Principal
from service.auth.limits import StreamSlots, check_submit_rate
from service.auth.middleware import bearer_auth
from service.core.broker import Publisher
from service.core.errors import PayloadTooLarge
from service.core.outbox import publish_pending
from service.core.settings import Settings
from service.core.states import JobStatus
from service.events.hub import EventHub
from service.events.response import EventStream
from service.jobs import queries
from service.jobs.options import JobOptions
from service.jobs.submit import Accepted, accept_upload
from service.jobs.uploads import ReceivedUpload
from service.openai import answers
from service.openai.errors import (
    JOB_ID_HEADER,
    OPENAI_EXCEPTION_HANDLERS,
    ErrorBody,
    InvalidParameter,
)
from service.openai.schemas import TRANSCRIBE, TRANSLATE, AudioRequest, TextDone, read_request
from service.openai.stream import Ended, Expired, Heartbeat, Step, follow_job, text_events
from service.openapi_errors import V1_SECURITY

log = logging.getLogger(__name__)

# Room for the form fields beside the file when refusing a body by its announced length.
FIELDS_ALLOWANCE = 64 * 1024


@dataclass(frozen=True, slots=True)
class _Serving:
    """What one request needs from the app, gathered by its handler."""

    request: Request[Any, Any, Any]
    sessions: async_sessionmaker[AsyncSession]
    settings: Settings
    publisher: Publisher
    principal: Principal
    redis: Redis
    hub: EventHub
    stream_slots: StreamSlots


class AudioController(Controller):
    """OpenAI-compatible speech to text, for OpenAI's clients with a Steno key."""

    path = "/v1/audio"
    tags = ["openai"]  # noqa: RUF012 - declared by Litestar as an instance attribute

    @post(
        "/transcriptions",
        status_code=200,
        request_max_body_size=None,
        summary="Transcribe audio (OpenAI-compatible)",
        description=(
            "OpenAI's `multipart/form-data` form: `file`, `model` (`whisper-1` is Steno's "
            "default model), `language`, `prompt`, `response_format` (json, text, srt, "
            "verbose_json, vtt, diarized_json), `temperature`, `timestamp_granularities[]` "
            "(word, segment), `known_speaker_names[]` (speakers enrolled with "
            "`POST /v1/speakers`), `stream` (OpenAI's `transcript.text.delta`/`done` events). "
            "Waits for the job; "
            "every answer about a job has a `Steno-Job-Id` header; 504 `job_not_finished` "
            'after `STENO_OPENAI_WAIT_SECONDS`. Errors are OpenAI\'s `{"error": {...}}`.'
        ),
    )
    async def transcriptions(
        self,
        request: Request[Any, Any, Any],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        settings: NamedDependency[Settings],
        publisher: NamedDependency[Publisher],
        principal: NamedDependency[Principal],
        redis: NamedDependency[Redis],
        hub: NamedDependency[EventHub],
        stream_slots: NamedDependency[StreamSlots],
    ) -> Response[Any]:
        """Transcribe the uploaded audio as a Steno job and answer as OpenAI does."""
        serving = _Serving(
            request, sessions, settings, publisher, principal, redis, hub, stream_slots
        )
        return await _serve(serving, task=TRANSCRIBE)

    @post(
        "/translations",
        status_code=200,
        request_max_body_size=None,
        summary="Translate audio into English (OpenAI-compatible)",
        description=(
            "As `/v1/audio/transcriptions`, into English text, with a multilingual model "
            "(an English-only model, named `*.en`, is 400). `language`, when sent, names the "
            "spoken language."
        ),
    )
    async def translations(
        self,
        request: Request[Any, Any, Any],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        settings: NamedDependency[Settings],
        publisher: NamedDependency[Publisher],
        principal: NamedDependency[Principal],
        redis: NamedDependency[Redis],
        hub: NamedDependency[EventHub],
        stream_slots: NamedDependency[StreamSlots],
    ) -> Response[Any]:
        """Translate the uploaded audio into English as a Steno job; answer as OpenAI does."""
        serving = _Serving(
            request, sessions, settings, publisher, principal, redis, hub, stream_slots
        )
        return await _serve(serving, task=TRANSLATE)


def openai_router() -> Router:
    """The OpenAI-compatible routes, behind the key middleware, answering errors as OpenAI."""
    return Router(
        path="/",
        route_handlers=[AudioController],
        middleware=[bearer_auth()],
        security=V1_SECURITY,
        exception_handlers=OPENAI_EXCEPTION_HANDLERS,
    )


async def _serve(serving: _Serving, *, task: str) -> Response[Any]:
    settings, principal, request = serving.settings, serving.principal, serving.request
    await check_submit_rate(serving.redis, principal.key_id, settings.submits_per_minute)
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "multipart/form-data":
        raise InvalidParameter(
            "send multipart/form-data with the audio in a 'file' part", param="file"
        )
    length = request.content_length
    if length is not None and length > settings.max_upload_bytes + FIELDS_ALLOWANCE:
        raise PayloadTooLarge(
            f"the upload is larger than the limit of {settings.max_upload_bytes} bytes"
        )
    slot = await serving.stream_slots.take(principal.key_id)

    def give_back() -> None:
        serving.stream_slots.give_back_soon(principal.key_id, slot)

    try:
        asked, accepted = await _accept(serving, task)
        subscription = await serving.hub.subscribe(str(accepted.job.id))
    except BaseException:
        give_back()
        raise
    job_id = accepted.job.id
    steps = follow_job(
        job_id,
        subscription,
        sessions=serving.sessions,
        deadline=time.monotonic() + settings.openai_wait_seconds,
        heartbeat_seconds=settings.sse_heartbeat_seconds,
    )

    def renew() -> Awaitable[None]:
        return serving.stream_slots.renew(principal.key_id, slot)

    def close() -> None:
        serving.hub.unsubscribe(subscription)
        give_back()

    def expired() -> ErrorBody:
        return answers.unfinished_error(str(job_id), settings.openai_wait_seconds)[1]

    async def ended(step: Ended) -> TextDone | ErrorBody:
        return await _streamed_end(serving, job_id, step)

    try:
        await _publish(serving, accepted)
        if asked.stream:
            body = text_events(steps, ended=ended, expired=expired, on_heartbeat=renew)
            # From here the response owns the subscription and the slot: closing gives both.
            stream = EventStream(body, watchdog=serving.hub.watchdog, on_close=close)
            stream.headers[JOB_ID_HEADER] = str(job_id)
            return stream
    except BaseException:
        close()
        raise
    try:
        return await _until_disconnect(
            _wait(serving, job_id, asked, steps, renew), request.receive, job_id
        )
    finally:
        close()


async def _accept(serving: _Serving, task: str) -> tuple[AudioRequest, Accepted]:
    """Receive the upload, check OpenAI's fields and commit the job with its outbox row."""
    asked: list[AudioRequest] = []

    def read_options(upload: ReceivedUpload) -> JobOptions:
        asked.append(read_request(serving.settings, upload.values, task=task))
        return asked[-1].options

    accepted = await accept_upload(
        serving.sessions,
        serving.settings,
        serving.request.stream(),
        serving.request.headers.get("content-type", ""),
        owner=serving.principal.owner,
        read_options=read_options,
    )
    return asked[-1], accepted


async def _publish(serving: _Serving, accepted: Accepted) -> None:
    """Send the job's task now (the relay's sweep sends it if this fails)."""
    if accepted.outbox_id is None:
        return  # no new job was made: nothing to send
    try:
        await publish_pending(serving.sessions, serving.publisher, ids=[accepted.outbox_id])
    except Exception as exc:
        log.warning("job %s: publish deferred to the relay: %r", accepted.job.id, exc)


async def _wait(
    serving: _Serving,
    job_id: uuid.UUID,
    asked: AudioRequest,
    steps: AsyncGenerator[Step, None],
    renew: Callable[[], Awaitable[None]],
) -> Response[Any]:
    """The answer once the job ended, or 504 once the wait ran out."""
    async with contextlib.aclosing(steps):
        async for step in steps:
            if isinstance(step, Heartbeat):
                await renew()
            elif isinstance(step, Ended):
                job = step.job
                if job is not None and job.status == JobStatus.completed:
                    async with serving.sessions() as session:
                        transcript = await queries.get_transcript(
                            session, job_id, owner=serving.principal.owner
                        )
                    return answers.completed_answer(str(job_id), transcript, asked)
                status, body = answers.ended_without_text(str(job_id), job)
                return answers.job_error(str(job_id), status, body)
            elif isinstance(step, Expired):
                break
    status, body = answers.unfinished_error(str(job_id), serving.settings.openai_wait_seconds)
    return answers.job_error(str(job_id), status, body)


async def _streamed_end(serving: _Serving, job_id: uuid.UUID, ended: Ended) -> TextDone | ErrorBody:
    """The last event of a stream: the stored text, or the error of a job without one."""
    job = ended.job
    if job is not None and job.status == JobStatus.completed:
        async with serving.sessions() as session:
            transcript = await queries.get_transcript(
                session, job_id, owner=serving.principal.owner
            )
        return TextDone(text=transcript.text)
    return answers.ended_without_text(str(job_id), job)[1]


async def _client_gone(receive: Receive) -> None:
    """Returns when the client disconnects (the body was read: nothing else can come)."""
    message = await receive()
    while message["type"] == "http.request" and message.get("more_body"):
        message = await receive()
    if message["type"] != "http.disconnect":
        await asyncio.Event().wait()  # this server never says: wait for the answer


async def _until_disconnect(
    answer: Awaitable[Response[Any]], receive: Receive, job_id: uuid.UUID
) -> Response[Any]:
    """The answer; or, when the client leaves first, stop waiting (the job goes on)."""
    waiting = asyncio.ensure_future(answer)
    gone = asyncio.ensure_future(_client_gone(receive))
    try:
        await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiting, gone):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    if waiting.done() and not waiting.cancelled():
        return waiting.result()
    log.info("job %s: the OpenAI client went away; the job goes on", job_id)
    return Response(b"", status_code=499, headers={JOB_ID_HEADER: str(job_id)})
