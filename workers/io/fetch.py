"""Fetching a job's audio from its ``audio_url`` (async, on the IO pool).

Downloads through the shared egress client (every hop checked, the connection pinned to a
checked address, a total deadline) straight to disk under a byte cap, probes the file, then
records it on the job and enqueues transcription in one transaction. A URL or redirect to a
forbidden address fails the job with ``url_forbidden`` at once, without a retry. URLs appear
in logs and error details only through ``redact`` (no query: presigned signatures stay out).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from service.core import fairness, metrics, transitions
from service.core.audio import content_type_accepted, probe_audio
from service.core.egress import EgressClient, body_chunks, redact
from service.core.errors import (
    EmptyFile,
    StenoError,
    UnsupportedMediaType,
    UrlUnreadable,
)
from service.core.events import schemas as events
from service.core.events.publish import emit
from service.core.outbox import publish_pending
from service.core.settings import Settings
from service.core.storage import incoming_path
from workers.arq import Retry
from workers.retry import backoff

log = logging.getLogger(__name__)

MAX_TRIES = 4


async def fetch_audio(ctx: dict[str, Any], job_id: str) -> str:
    """Fetch, check and store the audio of a queued URL job, then hand it to the GPU queue.

    Returns what it did (``fetched``, ``skipped`` or ``failed``). Transient network errors
    raise ``Retry`` with exponential backoff up to ``MAX_TRIES``; anything the client must
    fix fails the job with a clear code.
    """
    settings: Settings = ctx["settings"]
    sessions = ctx["sessions"]
    job_uuid = uuid.UUID(job_id)
    async with sessions() as session, session.begin():
        url = await transitions.start_fetch(session, job_uuid)
    if url is None:
        return "skipped"
    began = time.monotonic()
    await _progress(ctx, job_id, "fetching")

    settings.audio_dir.mkdir(parents=True, exist_ok=True)
    # Names of this attempt's own: a duplicate message fetching at the same time can't
    # overwrite or delete the file the job ends up pointing at.
    final = incoming_path(settings.audio_dir, job_uuid).with_suffix(f".{ctx['job_id']}.audio")
    part = final.with_suffix(".part")
    try:
        try:
            content_type, size, sha256 = await _download(
                ctx["http"],
                url,
                part,
                max_bytes=settings.max_upload_bytes,
                deadline=settings.fetch_deadline,
            )
        except TimeoutError as exc:
            raise UrlUnreadable(
                f"downloading {redact(url)} took longer than {settings.fetch_deadline:.0f} s"
            ) from exc
        if not content_type_accepted(content_type):
            raise UnsupportedMediaType(f"the URL serves {content_type!r}, not audio")
        await _progress(ctx, job_id, "probing")
        info = await probe_audio(
            part, max_seconds=settings.max_audio_seconds, run=ctx["run_process"]
        )
    except StenoError as exc:
        _discard(part)
        return await _fail(ctx, job_uuid, exc)
    except Exception as exc:
        # Network trouble, a 5xx, or our own bug: try again later, then give up clearly.
        _discard(part)
        if ctx["job_try"] < MAX_TRIES:
            log.warning("job %s: fetch attempt %d failed: %r", job_id, ctx["job_try"], exc)
            raise Retry(defer=backoff(ctx["job_try"])) from exc
        detail = str(exc) or type(exc).__name__
        return await _fail(ctx, job_uuid, UrlUnreadable(f"could not fetch {redact(url)}: {detail}"))
    except BaseException:
        _discard(part)
        raise

    try:
        async with sessions() as session, session.begin():
            attached = await transitions.attach_audio(
                session,
                job_uuid,
                audio_path=str(final),
                audio_bytes=size,
                audio_seconds=info.duration,
                content_type=content_type,
                audio_sha256=sha256,
            )
            outbox_id = None
            if attached:
                outbox_id = await fairness.stage_transcription(
                    session, settings, job_uuid, audio_seconds=info.duration
                )
                # Before the commit: if the rename fails, the job is not left pointing nowhere.
                part.replace(final)
    except BaseException:
        # The commit did not happen: no job points at these files.
        _discard(part)
        _discard(final)
        raise
    if outbox_id is None:
        # Cancelled or deleted while we fetched (or a duplicate won): keep nothing.
        _discard(part)
        return "skipped"
    metrics.observe_stage("fetch", time.monotonic() - began)
    await publish_pending(sessions, ctx["publisher"], ids=[outbox_id], offload=ctx["in_hub"])
    return "fetched"


class _ServerError(Exception):
    """A 5xx or 429 answer: worth trying again later."""


async def _download(
    client: EgressClient, url: str, dest: Path, *, max_bytes: int, deadline: float
) -> tuple[str | None, int, str]:
    """Stream ``url`` to ``dest``; returns its content type, size and SHA-256 (for dedupe).
    Raises ``TimeoutError`` past ``deadline`` seconds."""
    async with client.stream("GET", url, deadline=deadline) as response:
        if response.status_code >= 500 or response.status_code == 429:
            raise _ServerError(f"the server answered {response.status_code}")
        if response.status_code >= 400:
            raise UrlUnreadable(f"the server answered {response.status_code} for {redact(url)}")
        size = 0
        digest = hashlib.sha256()
        chunks = body_chunks(response, max_bytes=max_bytes, what="the audio at the URL")
        with dest.open("wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                digest.update(chunk)
                out.write(chunk)
    if size == 0:
        raise EmptyFile("the URL served an empty file")
    return response.headers.get("content-type"), size, digest.hexdigest()


async def _fail(ctx: dict[str, Any], job_id: uuid.UUID, error: StenoError) -> str:
    log.info("job %s failed while fetching: %s %s", job_id, error.code, error.detail)
    async with ctx["sessions"]() as session, session.begin():
        failed = await transitions.fail_fetch(session, job_id, code=error.code, detail=error.detail)
    if failed:
        event = events.Failed(job_id=str(job_id), code=error.code, detail=error.detail)
        await emit(ctx["redis"], ctx["sessions"], ctx["settings"], event)
    return "failed" if failed else "skipped"


async def _progress(ctx: dict[str, Any], job_id: str, stage: str) -> None:
    event = events.Progress(job_id=job_id, stage=stage, percent=0.0)
    await emit(ctx["redis"], None, ctx["settings"], event)


def _discard(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
