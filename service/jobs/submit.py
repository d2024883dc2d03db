"""Accepting a job: validate the options, store the audio, commit job + outbox together.

The job row and its first task message are committed in one transaction, so a broker
outage at submit time loses nothing: the message waits in the outbox for the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core import transitions
from service.core.audio import content_type_accepted, probe_audio
from service.core.db.models import Job
from service.core.egress import EgressClient
from service.core.errors import InvalidUrl, UnsupportedMediaType, UnsupportedModel, ValidationFailed
from service.core.outbox import add_message
from service.core.routing import next_task
from service.core.settings import Settings
from service.core.storage import incoming_path
from service.jobs.formats import LANGUAGE_NAMES
from service.jobs.schemas import SubmitUrl
from service.jobs.uploads import ReceivedUpload, receive_upload
from service.jobs.urlcheck import check_url_readable

MAX_PROMPT_CHARS = 2000
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_LANGUAGE_BY_NAME = {name.lower(): code for code, name in LANGUAGE_NAMES.items()}


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Validated transcription options of one job."""

    model: str
    language: str | None
    word_timestamps: bool
    initial_prompt: str | None
    # Whisper's task (transcribe, or translate into English) and sampling temperature (None:
    # Whisper's fallback schedule); only the OpenAI-compatible routes set them.
    task: str = "transcribe"
    temperature: float | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """A committed job and the outbox message to publish right after the commit."""

    job: Job
    outbox_id: int


def parse_options(
    settings: Settings,
    *,
    model: str | None,
    language: str | None,
    word_timestamps: bool | str | None,
    initial_prompt: str | None,
) -> JobOptions:
    """Check the options a client sent; raises ``ValidationFailed``/``UnsupportedModel``."""
    chosen = (model or "").strip() or settings.whisper_model
    if chosen not in settings.models:
        raise UnsupportedModel(
            f"model {chosen!r} is not served here; choose one of: {', '.join(settings.models)}"
        )
    code = _language(language)
    if code is not None and chosen.endswith(".en") and code != "en":
        raise ValidationFailed(f"model {chosen!r} is English-only; it can't transcribe {code!r}")
    if isinstance(word_timestamps, str):
        flag = word_timestamps.strip().lower()
        if flag not in _TRUE | _FALSE:
            raise ValidationFailed("word_timestamps must be true or false")
        words = flag in _TRUE
    else:
        words = bool(word_timestamps)
    prompt = (initial_prompt or "").strip() or None
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise ValidationFailed(f"initial_prompt is longer than {MAX_PROMPT_CHARS} characters")
    if prompt is not None and "\x00" in prompt:
        raise ValidationFailed("initial_prompt may not contain NUL characters")
    return JobOptions(model=chosen, language=code, word_timestamps=words, initial_prompt=prompt)


def _language(value: str | None) -> str | None:
    text = (value or "").strip().lower()
    if not text or text == "auto":
        return None
    if text in LANGUAGE_NAMES:
        return text
    if text in _LANGUAGE_BY_NAME:
        return _LANGUAGE_BY_NAME[text]
    raise ValidationFailed(f"language {value!r} is not one Whisper knows (use a code like 'en')")


def check_audio_url(url: str) -> str:
    """An absolute http(s) URL with a host; raises ``InvalidUrl`` otherwise."""
    text = url.strip()
    try:
        # urlsplit and .port raise ValueError on a broken IPv6 host or an out-of-range port.
        parts = urlsplit(text)
        hostname, _ = parts.hostname, parts.port
    except ValueError as exc:
        raise InvalidUrl(f"audio_url is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not hostname:
        raise InvalidUrl("audio_url must be an absolute http:// or https:// URL")
    # Control characters (NUL above all, which PostgreSQL text can't store) never belong in a URL.
    if re.search(r"[\s\x00-\x1f\x7f]", text) or len(text) > 4096:
        raise InvalidUrl("audio_url is not a valid URL")
    try:
        # What the fetcher will parse: catches hosts IDNA refuses (e.g. "xn--zz.com").
        _ = httpx.URL(text).host
    except (httpx.InvalidURL, ValueError) as exc:
        raise InvalidUrl(f"audio_url is not a valid URL: {exc}") from exc
    return text


async def accept_upload(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    body: AsyncIterator[bytes],
    content_type: str,
    *,
    owner: str,
    read_options: Callable[[ReceivedUpload], JobOptions] | None = None,
) -> Accepted:
    """Receive, check and enqueue an uploaded file; nothing is left behind on failure.

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
            )
        )
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
        )
        enqueue = asyncio.ensure_future(_enqueue(sessionmaker, settings, new))
        try:
            return await asyncio.shield(enqueue)
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


def _succeeded(future: asyncio.Future[Accepted] | None) -> bool:
    return (
        future is not None
        and future.done()
        and not future.cancelled()
        and future.exception() is None
    )


async def accept_url(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    request: SubmitUrl,
    http: EgressClient,
    *,
    owner: str,
) -> Accepted:
    """Enqueue a job whose audio an IO worker will fetch from ``audio_url``.

    A URL the egress refuses as written (scheme, credentials, a forbidden address in any
    spelling) is ``UrlForbidden`` at once. Unless ``STENO_URL_CHECK_TIMEOUT_SECONDS`` is 0,
    the URL must then answer (see ``service.jobs.urlcheck``; its host name is resolved and
    checked there), so an unreadable or forbidden URL is a 4xx rather than a failed job.
    """
    url = check_audio_url(request.audio_url)
    http.policy.check_url(url)
    options = parse_options(
        settings,
        model=request.model,
        language=request.language,
        word_timestamps=request.word_timestamps,
        initial_prompt=request.initial_prompt,
    )
    if settings.url_check_timeout_seconds > 0:
        await check_url_readable(http, url, max_bytes=settings.max_upload_bytes)
    new = transitions.NewJob(
        id=uuid.uuid4(), owner=owner, source="url", **dataclasses.asdict(options), audio_url=url
    )
    return await _enqueue(sessionmaker, settings, new)


async def _enqueue(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, new: transitions.NewJob
) -> Accepted:
    """Commit the job row and its first task message in one transaction."""
    task, time_limit = next_task(
        settings, has_audio=new.audio_path is not None, audio_seconds=new.audio_seconds
    )
    async with sessionmaker() as session, session.begin():
        job = await transitions.create_job(session, new)
        outbox_id = await add_message(
            session, task, [str(new.id)], job_id=new.id, time_limit=time_limit
        )
    return Accepted(job=job, outbox_id=outbox_id)
