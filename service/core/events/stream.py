"""Each job's Redis Stream of events: its key, bounded appends with a TTL, and reads.

Entry ids (``<ms>-<seq>``) are the events' positions and their SSE ``id:``. Milestones stored
in PostgreSQL keep the id the entry got, so positions from either store compare alike.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from redis.asyncio import Redis

from service.core.events.schemas import TERMINAL, Event, encode_event, event_kind

KEY_PREFIX = "steno:events:"
# A Redis Stream entry id, ``ms-seq``, or a bare ``ms``; at most 18 digits each, so that
# either part fits PostgreSQL's bigint (milestones are stored by position).
POSITION_PATTERN = "^[0-9]{1,18}(-[0-9]{1,18})?$"
_POSITION = re.compile(POSITION_PATTERN)


def stream_key(job_id: uuid.UUID | str) -> str:
    """The Redis key of a job's event stream."""
    return f"{KEY_PREFIX}{job_id}"


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A place in a job's event history: a Redis Stream entry id ``ms-seq``."""

    ms: int
    seq: int

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"

    @classmethod
    def parse(cls, text: str | bytes) -> Position:
        """A position from ``ms-seq`` (or a bare ``ms``); ValueError when it is neither."""
        raw = text.decode() if isinstance(text, bytes) else text
        # ASCII digits only (int() would also take "+1", "1_000", " 1" and other scripts'
        # digits), and few enough of them to compare against stored positions.
        if _POSITION.fullmatch(raw) is None:
            raise ValueError(f"not a stream position: {raw!r}")
        ms, _, seq = raw.partition("-")
        return cls(int(ms), int(seq or 0))

    @classmethod
    def now(cls) -> Position:
        """A position from this machine's clock, for an event Redis could not number."""
        return cls(int(time.time() * 1000), 0)

    def next(self) -> Position:
        """The position right after this one."""
        return Position(self.ms, self.seq + 1)


ORIGIN = Position(0, 0)


@dataclass(frozen=True)
class Frame:
    """One event ready to send: its position, kind and JSON."""

    position: Position
    kind: str
    data: bytes

    @property
    def terminal(self) -> bool:
        """Whether nothing follows this event."""
        return self.kind in TERMINAL

    @cached_property
    def sse(self) -> bytes:
        """The event as a Server-Sent Events message (built once, shared by every client)."""
        return b"id: %s\nevent: %s\ndata: %s\n\n" % (
            str(self.position).encode(),
            self.kind.encode(),
            self.data,
        )


def frame_of(entry_id: bytes | str, fields: dict[Any, Any]) -> Frame:
    """The frame of one Redis Stream entry."""
    kind = fields.get(b"kind", fields.get("kind", b""))
    data = fields.get(b"data", fields.get("data", b"{}"))
    return Frame(
        Position.parse(entry_id),
        kind.decode() if isinstance(kind, bytes) else str(kind),
        data if isinstance(data, bytes) else str(data).encode(),
    )


async def append(redis: Redis, event: Event, *, maxlen: int, ttl_seconds: int) -> Frame:
    """Append the event to its job's stream, trimmed to about ``maxlen``, expiring after
    ``ttl_seconds`` of quiet; returns the frame with the position Redis gave it."""
    key = stream_key(event.job_id)
    data = encode_event(event)
    kind = event_kind(event)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xadd(key, {"kind": kind, "data": data}, maxlen=maxlen, approximate=True)
        pipe.expire(key, ttl_seconds)
        entry_id, _ = await pipe.execute()
    return Frame(Position.parse(entry_id), kind, data)


async def read_after(redis: Redis, job_id: uuid.UUID | str, after: Position) -> list[Frame]:
    """Every entry of the job's stream after ``after`` (oldest first)."""
    entries: Any = await redis.xrange(stream_key(job_id), min=f"({after}", max="+")
    return [frame_of(entry_id, fields) for entry_id, fields in entries]


async def last_position(redis: Redis, job_id: uuid.UUID | str) -> Position:
    """The position of the stream's newest entry (``0-0`` when it has none)."""
    entries: Any = await redis.xrevrange(stream_key(job_id), max="+", min="-", count=1)
    return Position.parse(entries[0][0]) if entries else ORIGIN
