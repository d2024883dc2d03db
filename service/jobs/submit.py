"""Accepting a job: validate the options, store the audio, commit job + outbox together.

The job row and its first task message are committed in one transaction, so a broker
outage at submit time loses nothing: the message waits in the outbox for the relay. A submit
may instead be answered with a job that exists (``service.jobs.reuse``: an Idempotency-Key
seen before, or ``dedupe``); then nothing is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core import transitions
from service.core.audio import content_type_accepted, probe_audio
from service.core.db.models import Job
from service.core.egress import EgressClient, EgressPolicy
from service.core.errors import UnsupportedMediaType, ValidationFailed
from service.core.fairness import stage_next_task
from service.core.settings import Settings
from service.core.storage import incoming_path
from service.jobs import reuse
from service.jobs.options import (
    JobOptions,
    check_audio_url,
    parse_flag,
    parse_options,
    parse_priority,
)
from service.jobs.schemas import SubmitUrl
from service.jobs.uploads import ReceivedUpload, receive_upload
from service.jobs.urlcheck import check_url_readable
from service.speakers.services import resolve_known
from service.webhooks.urls import check_webhook_url

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A committed job and the outbox message to publish right after the commit; or, when
    ``reused`` (``replayed``, ``deduplicated``), a job that existed and nothing to publish."""

    job: Job
    outbox_id: int | None
    reused: str | None = None


def _digestible(options: JobOptions) -> dict[str, Any]:
    # Without diarization the options digest stays what it was before the option existed, so
    # dedupe still finds jobs completed earlier.
    fields = dataclasses.asdict(options)
    if fields["diarization"] is None:
        del fields["diarization"]
    return fields


async def _submission(
    settings: Settings,
    options: JobOptions,
    policy: EgressPolicy,
    *,
    owner: str,
    key_id: uuid.UUID | None,
    idempotency_key: str | None,
    webhook_url: str | None,
    dedupe: bool | str | None,
    audio_sha256: str | None = None,
    audio_url: str | None = None,
) -> reuse.Submission:
    """Check the webhook URL and the dedupe flag; fingerprint the request."""
    webhook = await check_webhook_url(webhook_url, policy)
    if webhook is not None and key_id is None:
        raise ValidationFailed("webhook_url needs an API key to sign its deliveries with")
    flag = parse_flag(dedupe, "dedupe")
    fingerprint = reuse.digest(
        {
            "audio": audio_sha256 or audio_url,
            "options": _digestible(options),
            "webhook_url": webhook,
            "dedupe": flag,
        }
    )
    return reuse.Submission(
        owner=owner,
        key_id=key_id,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        options_digest=reuse.digest(_digestible(options)),
        webhook_url=webhook,
        dedupe=flag,
        audio_sha256=audio_sha256,
        audio_url=audio_url,
    )


async def accept_upload(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    body: AsyncIterator[bytes],
    content_type: str,
    *,
    owner: str,
    read_options: Callable[[ReceivedUpload], JobOptions] | None = None,
    key_id: uuid.UUID | None = None,
    idempotency_key: str | None = None,
) -> Accepted:
    """Receive, check and enqueue an uploaded file; nothing is left behind on failure, or
    when an existing job answers the submit (see ``service.jobs.reuse``).

    ``read_options`` turns the form's fields into the job's options (it raises what a bad
    field deserves); by default Steno's own fields are read (see ``parse_options``).
    """
    job_id = uuid.uuid4()
    settings.audio_dir.mkdir(parents=True, exist_ok=True)
    path = incoming_path(settings.audio_dir, job_id)
    upload = await receive_upload(
        body, content_type, dest=path, max_bytes=settings.max_upload_bytes
    )
    enqueue: asyncio.Future[Accepted] | None = None
    try:
        if not content_type_accepted(upload.content_type):
            raise UnsupportedMediaType(
                f"the file's content type {upload.content_type!r} is not audio"
            )
        fields = upload.fields
        options = (
            read_options(upload)
            if read_options is not None
            else parse_options(
                settings,
                model=fields.get("model"),
                language=fields.get("language"),
                word_timestamps=fields.get("word_timestamps"),
                initial_prompt=fields.get("initial_prompt"),
                diarize=fields.get("diarize"),
                num_speakers=fields.get("num_speakers"),
                min_speakers=fields.get("min_speakers"),
                max_speakers=fields.get("max_speakers"),
                known_speakers=_form_names(upload.values),
            )
        )
        options = await _with_speakers(sessionmaker, options, owner)
        submit = await _submission(
            settings,
            options,
            EgressPolicy.from_settings(settings),
            owner=owner,
            key_id=key_id,
            idempotency_key=idempotency_key,
            webhook_url=fields.get("webhook_url"),
            dedupe=fields.get("dedupe"),
            audio_sha256=upload.sha256,
        )
        existing = await _existing(sessionmaker, settings, submit)
        if existing is not None:
            Path(path).unlink(missing_ok=True)
            return existing
        priority = parse_priority(fields.get("priority"))
        info = await probe_audio(path, max_seconds=settings.max_audio_seconds)
        new = transitions.NewJob(
            id=job_id,
            owner=owner,
            source="upload",
            **dataclasses.asdict(options),
            audio_path=str(path),
            filename=upload.filename,
            content_type=upload.content_type,
            audio_bytes=upload.size,
            audio_seconds=info.duration,
            priority=priority,
            **_recorded(submit),
        )
        enqueue = asyncio.ensure_future(_enqueue(sessionmaker, settings, new, submit))
        try:
            accepted = await asyncio.shield(enqueue)
        except asyncio.CancelledError:
            # The client went away during the commit: let the commit finish (even through
            # further cancellations), so the audio is removed only if no job row was written.
            while not enqueue.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([enqueue])
            raise
    except BaseException:
        if not _succeeded(enqueue):
            with contextlib.suppress(FileNotFoundError):
                Path(path).unlink()
        raise
    if accepted.reused is not None:
        Path(path).unlink(missing_ok=True)  # a concurrent submit with the key made the job
    return accepted


def _form_names(values: dict[str, list[str]]) -> list[str] | None:
    """``known_speakers`` of a form: the field repeated and/or comma-separated (also spelled
    ``known_speakers[]``, as clients that send lists in brackets do)."""
    names = [*values.get("known_speakers", []), *values.get("known_speakers[]", [])]
    return names or None


async def _with_speakers(
    sessionmaker: async_sessionmaker[AsyncSession], options: JobOptions, owner: str
) -> JobOptions:
    """The options with the known speakers they name resolved to the owner's speakers
    (``UnknownSpeaker`` when one is not enrolled), before anything is stored."""
    if not (options.diarization or {}).get("known_speakers"):
        return options
    diarization = await resolve_known(sessionmaker, options.diarization, owner=owner)
    return dataclasses.replace(options, diarization=diarization)


def _succeeded(future: asyncio.Future[Accepted] | None) -> bool:
    """Whether the job row that points at the upload was committed."""
    return (
        future is not None
        and future.done()
        and not future.cancelled()
        and future.exception() is None
        and future.result().reused is None
    )


def _recorded(submit: reuse.Submission) -> dict[str, Any]:
    """The NewJob fields a submission adds beside the options."""
    return {
        "webhook_url": submit.webhook_url,
        "webhook_key_id": submit.key_id if submit.webhook_url else None,
        "audio_sha256": submit.audio_sha256,
        "options_digest": submit.options_digest,
    }


async def accept_url(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    request: SubmitUrl,
    http: EgressClient,
    *,
    owner: str,
    key_id: uuid.UUID | None = None,
    idempotency_key: str | None = None,
) -> Accepted:
    """Enqueue a job whose audio an IO worker will fetch from ``audio_url``.

    A URL the egress refuses as written (scheme, credentials, a forbidden address in any
    spelling) is ``UrlForbidden`` at once. Unless ``STENO_URL_CHECK_TIMEOUT_SECONDS`` is 0,
    the URL must then answer (see ``service.jobs.urlcheck``; its host name is resolved and
    checked there), so an unreadable or forbidden URL is a 4xx rather than a failed job.
    """
    url = check_audio_url(request.audio_url)
    http.policy.check_url(url)
    priority = parse_priority(request.priority)
    options = parse_options(
        settings,
        model=request.model,
        language=request.language,
        word_timestamps=request.word_timestamps,
        initial_prompt=request.initial_prompt,
        diarize=None if isinstance(request.diarize, msgspec.UnsetType) else request.diarize,
        num_speakers=request.num_speakers,
        min_speakers=request.min_speakers,
        max_speakers=request.max_speakers,
        known_speakers=request.known_speakers,
    )
    options = await _with_speakers(sessionmaker, options, owner)
    submit = await _submission(
        settings,
        options,
        http.policy,
        owner=owner,
        key_id=key_id,
        idempotency_key=idempotency_key,
        webhook_url=request.webhook_url,
        dedupe=request.dedupe,
        audio_url=url,
    )
    existing = await _existing(sessionmaker, settings, submit)
    if existing is not None:
        return existing
    if settings.url_check_timeout_seconds > 0:
        await check_url_readable(http, url, max_bytes=settings.max_upload_bytes)
    new = transitions.NewJob(
        id=uuid.uuid4(),
        owner=owner,
        source="url",
        **dataclasses.asdict(options),
        audio_url=url,
        priority=priority,
        **_recorded(submit),
    )
    return await _enqueue(sessionmaker, settings, new, submit)


async def _existing(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    submit: reuse.Submission,
) -> Accepted | None:
    found = await reuse.existing_job(sessionmaker, submit, settings.idempotency_ttl_seconds)
    return None if found is None else Accepted(job=found[0], outbox_id=None, reused=found[1])


async def _enqueue(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    new: transitions.NewJob,
    submit: reuse.Submission | None = None,
) -> Accepted:
    """Commit the job row, its first task message and its Idempotency-Key in one
    transaction; when a concurrent submit committed the key first, answer with its job."""
    key = submit.idempotency_key if submit is not None else None
    for _ in range(3):
        try:
            async with sessionmaker() as session, session.begin():
                job = await transitions.create_job(session, new)
                if submit is not None and key is not None:
                    remembered = await reuse.remember(
                        session,
                        owner=submit.owner,
                        key=key,
                        fingerprint=submit.fingerprint,
                        job_id=new.id,
                        ttl_seconds=settings.idempotency_ttl_seconds,
                    )
                    if not remembered:
                        raise reuse.KeyTaken()
                # Held instead of sent when the owner's fair share of its lane is taken.
                outbox_id = await stage_next_task(
                    session,
                    settings,
                    new.id,
                    owner=new.owner,
                    priority=new.priority,
                    has_audio=new.audio_path is not None,
                    audio_seconds=new.audio_seconds,
                )
            return Accepted(job=job, outbox_id=outbox_id)
        except reuse.KeyTaken:
            assert submit is not None
            log.info("Idempotency-Key %r: a concurrent submit made the job first", key)
            existing = await _existing(
                sessionmaker, settings, dataclasses.replace(submit, dedupe=False)
            )
            if existing is not None:
                return existing
            # The other submit's job was deleted in between: its key went with it; try again.
    raise RuntimeError(f"Idempotency-Key {key!r} kept changing hands")
