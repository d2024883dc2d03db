"""HTTP endpoints of ``/v1/jobs``: thin, they parse, call the services, shape the reply."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.openapi.spec import Example
from litestar.params import FromPath, FromQuery, QueryParameter
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.auth.keys import Principal
from service.auth.limits import check_submit_rate
from service.auth.middleware import bearer_key
from service.core import rerun, transitions
from service.core.broker import Publisher
from service.core.egress import EgressClient
from service.core.errors import (
    BadRequest,
    JobNotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
from service.core.events.publish import emit
from service.core.events.schemas import Cancelled
from service.core.outbox import publish_pending
from service.core.settings import Settings
from service.core.states import JobStatus
from service.core.storage import remove_audio
from service.jobs import queries, reuse
from service.jobs.formats import TranscriptFormat, render
from service.jobs.openapi import SubmitOperation
from service.jobs.schemas import JobPage, JobView, SubmitUrl
from service.jobs.submit import Accepted, accept_upload, accept_url
from service.ops.backlog import Estimator

MAX_JSON_BYTES = 64 * 1024


def parse_job_id(job_id: str) -> uuid.UUID:
    """A job id from the path; a malformed one can't name a job, so it is a 404."""
    try:
        return uuid.UUID(job_id)
    except ValueError as exc:
        raise JobNotFound(f"no job with id {job_id!r}") from exc


async def _read_json(request: Request[Any, Any, Any]) -> SubmitUrl:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise PayloadTooLarge(f"a JSON body may be at most {MAX_JSON_BYTES} bytes")
    try:
        return msgspec.json.decode(bytes(body), type=SubmitUrl)
    except msgspec.ValidationError as exc:
        raise ValidationFailed(f"invalid JSON body: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc


class JobController(Controller):
    """Submit, inspect, list, cancel and delete transcription jobs; fetch transcripts."""

    path = "/v1/jobs"
    tags = ["jobs"]  # noqa: RUF012 - declared by Litestar as an instance attribute

    @post(
        "/",
        status_code=202,
        request_max_body_size=None,
        operation_class=SubmitOperation,
        summary="Submit audio for transcription",
        description=(
            "Either `multipart/form-data` with a `file` part (the audio) and optional fields "
            "`language`, `model`, `word_timestamps`, `initial_prompt`, `webhook_url`, "
            '`dedupe`; or a JSON body `{"audio_url": "https://...", ...}` with the same '
            "options. Answers 202 with the job and a `Location` header; follow it with "
            "`GET /v1/jobs/{id}`. With an `Idempotency-Key` header seen before (same request, "
            "24 h), or `dedupe=true` matching a completed job, answers 200 with that job."
        ),
    )
    async def submit(
        self,
        request: Request[Any, Any, Any],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        settings: NamedDependency[Settings],
        publisher: NamedDependency[Publisher],
        http: NamedDependency[EgressClient],
        principal: NamedDependency[Principal],
        redis: NamedDependency[Redis],
    ) -> Response[JobView]:
        """Accept a job and publish its first task after the commit (in the background)."""
        await check_submit_rate(redis, principal.key_id, settings.submits_per_minute)
        idempotency_key = reuse.parse_key(request.headers.get(reuse.HEADER))
        content_type = request.headers.get("content-type", "")
        kind = content_type.split(";", 1)[0].strip().lower()
        length = request.content_length
        if kind == "multipart/form-data":
            # Refuse early when the announced body is far too big, before reading any of it.
            if length is not None and length > settings.max_upload_bytes + MAX_JSON_BYTES:
                raise PayloadTooLarge(
                    f"the upload is larger than the limit of {settings.max_upload_bytes} bytes"
                )
            accepted = await accept_upload(
                sessions,
                settings,
                request.stream(),
                content_type,
                owner=principal.owner,
                key_id=principal.key_id,
                idempotency_key=idempotency_key,
            )
        elif kind == "application/json":
            accepted = await accept_url(
                sessions,
                settings,
                await _read_json(request),
                http,
                owner=principal.owner,
                key_id=principal.key_id,
                idempotency_key=idempotency_key,
            )
        else:
            raise UnsupportedMediaType(
                "send multipart/form-data with a 'file' part, or application/json with "
                f"'audio_url' (got {kind or 'no content type'!r})"
            )
        return _accepted_response(accepted, sessions, publisher)

    @get("/", summary="List jobs, newest first")
    async def list_jobs(
        self,
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        principal: NamedDependency[Principal],
        status: FromQuery[JobStatus | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
        cursor: FromQuery[str | None] = None,
    ) -> JobPage:
        """One page of jobs, optionally of one status; follow ``next_cursor`` for more."""
        async with sessions() as session:
            jobs, next_cursor = await queries.list_jobs(
                session, owner=principal.owner, status=status, limit=limit, cursor=cursor
            )
        return JobPage(items=[JobView.from_row(j) for j in jobs], next_cursor=next_cursor)

    # The most polled route checks its key itself, in the same query that reads the job
    # (one round trip instead of two); answers and errors are the middleware's.
    @get("/{job_id:str}", summary="Get a job", exclude_from_auth=True)
    async def get_job(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[str],
    ) -> JobView:
        """The job's status, progress (a queued job's ETA from its place in the queue), error
        and timings; the key is checked and the job read in one query."""
        # Taken from the app's state, not injected: Litestar resolves two or more dependencies
        # in an anyio task group, a fifth of this route's time under load (test_poll_route).
        read_pool: asyncpg.Pool = request.app.state.read_pool
        estimator: Estimator = request.app.state.estimator
        key = bearer_key(request.headers)
        try:
            job_uuid: uuid.UUID | None = uuid.UUID(job_id)
        except ValueError:
            job_uuid = None  # still a 401 for a bad key, else a 404 as for any unknown id
        _, job = await queries.poll_job(read_pool, key, job_uuid)
        view = JobView.from_row(job)
        if job.status == JobStatus.queued and job.has_audio:
            # The ETA needs the work ahead of it: one more query, for queued jobs only.
            view.progress.eta_seconds = await estimator.queued_eta(
                read_pool, job.id, job.created_at, job.audio_seconds
            )
        return view

    @get(
        "/{job_id:str}/transcript",
        summary="Get the transcript",
        description="`format` is one of json, verbose_json, text, srt, vtt. 409 until completed.",
        responses={},
    )
    async def transcript(
        self,
        job_id: FromPath[str],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        principal: NamedDependency[Principal],
        format: Annotated[
            TranscriptFormat,
            QueryParameter(examples=[Example(value="srt")], description="output format"),
        ] = TranscriptFormat.JSON,
    ) -> Response[bytes]:
        """The transcript rendered in the asked format."""
        async with sessions() as session:
            transcript = await queries.get_transcript(
                session, parse_job_id(job_id), owner=principal.owner
            )
        body, media_type = render(transcript, format)
        return Response(content=body, media_type=media_type)

    @post("/{job_id:str}/cancel", status_code=200, summary="Cancel a job")
    async def cancel(
        self,
        job_id: FromPath[str],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        redis: NamedDependency[Redis],
        settings: NamedDependency[Settings],
        principal: NamedDependency[Principal],
    ) -> JobView:
        """Cancel a queued or running job; 409 when it already completed or failed."""
        async with sessions() as session, session.begin():
            job, cancelled_now = await transitions.cancel_job(
                session, parse_job_id(job_id), owner=principal.owner
            )
        if cancelled_now:
            await emit(redis, sessions, settings, Cancelled(job_id=str(job.id)))
        return JobView.from_row(job)

    @delete("/{job_id:str}", status_code=204, summary="Delete a job, its audio and transcript")
    async def remove(
        self,
        job_id: FromPath[str],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        settings: NamedDependency[Settings],
        principal: NamedDependency[Principal],
    ) -> None:
        """Delete the job row (with its transcript), then every audio file of the job."""
        job_uuid = parse_job_id(job_id)
        async with sessions() as session, session.begin():
            audio_path = await transitions.delete_job(session, job_uuid, owner=principal.owner)
        await asyncio.to_thread(remove_audio, settings.audio_dir, job_uuid, audio_path)

    @post("/{job_id:str}/retry", status_code=202, summary="Re-run a failed or cancelled job")
    async def retry(
        self,
        job_id: FromPath[str],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        redis: NamedDependency[Redis],
        settings: NamedDependency[Settings],
        publisher: NamedDependency[Publisher],
        principal: NamedDependency[Principal],
    ) -> Response[JobView]:
        """Queue the job again with its audio; 409 when it is active or completed
        (``job_not_retryable``) or its uploaded audio was removed (``audio_gone``)."""
        async with sessions() as session, session.begin():
            again = await rerun.rerun_job(
                session, settings, parse_job_id(job_id), owner=principal.owner
            )
        await rerun.restart_events(redis, sessions, settings, again.job.id)
        return _accepted_response(
            Accepted(job=again.job, outbox_id=again.outbox_id), sessions, publisher
        )


def _accepted_response(
    accepted: Accepted,
    sessions: NamedDependency[async_sessionmaker[AsyncSession]],
    publisher: Publisher,
) -> Response[JobView]:
    if accepted.outbox_id is None:
        # An existing job answers (Idempotency-Key replay or dedupe): nothing was made.
        header = {"replayed": "Idempotent-Replayed", "deduplicated": "Steno-Deduplicated"}
        return Response(
            JobView.from_row(accepted.job),
            status_code=200,
            headers={
                "Location": f"/v1/jobs/{accepted.job.id}",
                header[accepted.reused or "replayed"]: "true",
            },
        )
    return Response(
        JobView.from_row(accepted.job),
        status_code=202,
        headers={"Location": f"/v1/jobs/{accepted.job.id}"},
        background=BackgroundTask(publish_pending, sessions, publisher, ids=[accepted.outbox_id]),
    )
