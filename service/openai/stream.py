"""Following one job to its end through the event hub: the waits and streams of /v1/audio/*.

The hub subscription is taken before the job's task is published, so no event of the job
can be missed. Steno's own events drive everything: each ``segment`` Whisper decoded is a
``transcript.text.delta`` on a stream, and the terminal event ends the wait. The job row
is read at every heartbeat too, so a terminal event that never reached Redis still ends it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.db.models import Job
from service.core.events.schemas import Segment
from service.core.events.stream import Frame
from service.core.states import FINAL
from service.events.hub import Subscription
from service.openai.errors import ErrorBody
from service.openai.schemas import TextDelta, TextDone

HEARTBEAT = b": heartbeat\n\n"
# OpenAI's streams end with this line after the last event; its clients stop reading there.
DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class SegmentText:
    """A segment Whisper decoded (each id once, in order, even across a retried attempt)."""

    id: int
    text: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Time passed with nothing to report (a stream sends a comment; a slot is renewed)."""


@dataclass(frozen=True, slots=True)
class Ended:
    """The job reached a final state (``job`` is its row, None when it was deleted)."""

    job: Job | None


@dataclass(frozen=True, slots=True)
class Expired:
    """The wait ran out before the job ended; the job goes on."""


Step = SegmentText | Heartbeat | Ended | Expired
_segment = msgspec.json.Decoder(Segment)


async def _final_row(
    sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID
) -> tuple[bool, Job | None]:
    """Whether the job ended (finished, cancelled or deleted), and its row."""
    async with sessions() as session:
        job = await session.get(Job, job_id)
    return job is None or job.status in FINAL, job


async def follow_job(
    job_id: uuid.UUID,
    subscription: Subscription,
    *,
    sessions: async_sessionmaker[AsyncSession],
    deadline: float,
    heartbeat_seconds: float,
) -> AsyncGenerator[Step, None]:
    """The job's segments as decoded, a ``Heartbeat`` every ``heartbeat_seconds``, then
    ``Ended`` (or ``Expired`` once ``time.monotonic()`` passes ``deadline``).

    ``subscription`` is the hub's feed of the job, taken before its task was published;
    the caller gives it back.
    """
    backlog: deque[Frame] = deque()
    next_beat = time.monotonic() + heartbeat_seconds
    last_segment = -1
    while True:
        now = time.monotonic()
        if now >= deadline:
            yield Expired()
            return
        if not backlog:
            try:
                async with asyncio.timeout(min(deadline, next_beat) - now):
                    backlog.extend(await subscription.frames())
            except TimeoutError:
                if time.monotonic() < next_beat:
                    continue  # the deadline: said at the top of the loop
                next_beat += heartbeat_seconds
                yield Heartbeat()
                ended, job = await _final_row(sessions, job_id)
                if ended:
                    yield Ended(job)
                    return
                continue
        frame = backlog.popleft()
        if frame.kind == "segment":
            segment = _segment.decode(frame.data)
            if segment.id > last_segment:
                last_segment = segment.id
                yield SegmentText(segment.id, segment.text)
        elif frame.terminal:
            ended, job = await _final_row(sessions, job_id)
            if ended:
                yield Ended(job)
                return


def sse(payload: msgspec.Struct) -> bytes:
    """One ``data:`` message, as OpenAI's streams frame their events."""
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"


async def text_events(
    steps: AsyncIterator[Step],
    *,
    ended: Callable[[Ended], Awaitable[TextDone | ErrorBody]],
    expired: Callable[[], ErrorBody],
    on_heartbeat: Callable[[], Awaitable[None]],
) -> AsyncGenerator[bytes, None]:
    """OpenAI's transcription stream: a ``transcript.text.delta`` per decoded segment, then
    ``transcript.text.done`` with the stored text and ``[DONE]``; or one error event
    (``{"error": {...}}``, which OpenAI's clients raise) when the job ended without text or
    the wait ran out. The deltas put together are the text: segments joined by a space.
    """
    first = True
    async for step in steps:
        if isinstance(step, SegmentText):
            text = step.text.strip()
            if text:
                yield sse(TextDelta(delta=text if first else f" {text}"))
                first = False
        elif isinstance(step, Heartbeat):
            yield HEARTBEAT
            await on_heartbeat()
        elif isinstance(step, Ended):
            outcome = await ended(step)
            yield sse(outcome)
            if isinstance(outcome, TextDone):
                yield DONE
            return
        else:
            yield sse(expired())
            return
