"""Test helpers for Server-Sent Events: read a job's stream with httpx."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.cli.sse import Message, MessageParser
from service.core import transitions


async def new_job(
    sessions: async_sessionmaker[AsyncSession], owner: str = "tests", **fields: Any
) -> str:
    """Insert a queued upload job (no audio needed) of ``owner`` and return its id."""
    job_id = uuid.uuid4()
    async with sessions() as session, session.begin():
        await transitions.create_job(
            session,
            transitions.NewJob(id=job_id, owner=owner, source="upload", model="tiny.en", **fields),
        )
    return str(job_id)


async def read_events(
    client: httpx.AsyncClient,
    job_id: str,
    *,
    last_event_id: str | None = None,
    timeout: float = 30.0,
    connected: asyncio.Event | None = None,
    comments: list[str] | None = None,
) -> list[Message]:
    """Every event of the stream until the server closes it (comments go to ``comments``).

    ``connected`` is set once the response headers arrived.
    """
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    messages: list[Message] = []
    parser = MessageParser()
    async with asyncio.timeout(timeout):
        async with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            if connected is not None:
                connected.set()
            async for line in response.aiter_lines():
                for message in parser.feed(line):
                    if message.comment is not None:
                        if comments is not None:
                            comments.append(message.comment)
                    else:
                        messages.append(message)
    return messages
