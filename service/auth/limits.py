"""Per-key limits kept in Redis, so they hold across every API process.

Submissions: a sliding one-minute window per key (a sorted set of submission times). Event
streams: a sorted set per key of open streams scored by their lease expiry. Both are taken
atomically by a script; a stream whose process died falls out when its lease lapses.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from typing import Any, cast

from redis.asyncio import Redis

from service.core.errors import RateLimited, TooManyStreams

_WINDOW = 60.0
# Submissions: one sorted-set member per accepted submission in the last minute. Returns 0
# when this one is counted, else the time of the oldest (when a slot frees).
_SUBMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - 60)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], 61)
return 0
"""

_TAKE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


async def check_submit_rate(redis: Redis, key_id: uuid.UUID, per_minute: int) -> None:
    """Count one submission for the key; ``RateLimited`` past ``per_minute`` in the last
    60 s (a sliding window, so no burst of twice the limit across a minute boundary)."""
    if per_minute <= 0:
        return
    now = time.time()
    oldest = await redis.eval(
        _SUBMIT, 1, f"steno:rate:submit:{key_id}", now, per_minute, uuid.uuid4().hex
    )
    if oldest is not None and float(oldest) > 0:
        retry_after = max(1, math.ceil(float(oldest) + _WINDOW - now))
        raise RateLimited(
            f"this key may submit {per_minute} jobs a minute; try again in {retry_after} s",
            retry_after=retry_after,
        )


class StreamSlots:
    """Open event streams per key, at most ``limit`` at once, each held under a lease."""

    def __init__(self, redis: Redis, *, limit: int, lease_seconds: float) -> None:
        self._redis = redis
        self._limit = limit
        self._lease = lease_seconds
        self._take: Any = redis.register_script(_TAKE_SLOT)
        # Give-backs scheduled from synchronous close callbacks, kept until they finish.
        self._closing: set[asyncio.Task[None]] = set()

    @staticmethod
    def _key(key_id: uuid.UUID) -> str:
        return f"steno:sse:{key_id}"

    async def take(self, key_id: uuid.UUID) -> str:
        """A slot for one more stream of the key; ``TooManyStreams`` when all are held."""
        slot = uuid.uuid4().hex
        now = time.time()
        taken = await self._take(
            keys=[self._key(key_id)],
            args=[now, now + self._lease, self._limit, slot, math.ceil(self._lease) + 60],
        )
        if not int(cast(int, taken)):
            raise TooManyStreams(
                f"this key already has {self._limit} open event streams (the limit); "
                "close one first",
                retry_after=math.ceil(self._lease),
            )
        return slot

    async def renew(self, key_id: uuid.UUID, slot: str) -> None:
        """Extend the slot's lease (the stream is still being read)."""
        await self._redis.zadd(self._key(key_id), {slot: time.time() + self._lease}, xx=True)

    async def renew_all(self, slots: list[tuple[uuid.UUID, str]]) -> None:
        """``renew`` many slots (key id, slot) in one round trip."""
        until = time.time() + self._lease
        by_key: dict[str, dict[str, float]] = {}
        for key_id, slot in slots:
            by_key.setdefault(self._key(key_id), {})[slot] = until
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, members in by_key.items():
                pipe.zadd(key, cast(Any, members), xx=True)
            await pipe.execute()

    async def give_back(self, key_id: uuid.UUID, slot: str) -> None:
        """Free the slot when its stream ends."""
        await self._redis.zrem(self._key(key_id), slot)

    def give_back_soon(self, key_id: uuid.UUID, slot: str) -> None:
        """``give_back`` from synchronous code (a response's close callback)."""
        task = asyncio.get_running_loop().create_task(self.give_back(key_id, slot))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
