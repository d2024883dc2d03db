"""The client side: ``RedisSettings``, ``ArqRedis.enqueue_job`` and ``create_pool`` (as arq's).

``enqueue_job`` writes arq's keys (the job definition under ``arq:job:<id>`` with its expiry,
the id in the queue's index scored by its due time) in one transaction that also enforces
uniqueness, then sends the Celery message. A deferred job gets no message yet: its id goes
into the queue's ``arq:deferred:<queue>`` sorted set, and a worker sends it when it is due (see
``workers.arq.heartbeat``). Both live in Redis, so a worker crash loses neither.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlencode, urlparse
from uuid import uuid4

from celery import Celery
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import WatchError

from workers.arq.constants import (
    default_queue_name,
    expires_extra_ms,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
)
from workers.arq.jobs import (
    Job,
    JobDef,
    as_text,
    deferred_set,
    deserialize_job,
    queue_index,
    serialize_job,
)
from workers.arq.publish import make_producer, send_job
from workers.arq.utils import timestamp_ms, to_ms, to_unix_ms

log = logging.getLogger("arq.connections")

T = TypeVar("T")
# Runs a blocking call without blocking the asyncio loop (a thread, or the gevent hub).
Offload = Callable[..., Awaitable[Any]]


@dataclass
class RedisSettings:
    """Where Redis is (arq's fields); it is both the store of job keys and Celery's broker."""

    host: str = "localhost"
    port: int = 6379
    unix_socket_path: str | None = None
    database: int = 0
    username: str | None = None
    # Kept out of the repr: settings end up in log lines and tracebacks.
    password: str | None = field(default=None, repr=False)
    ssl: bool = False
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None
    ssl_cert_reqs: str = "required"
    ssl_ca_certs: str | None = None
    ssl_ca_data: str | None = None
    # True, unlike arq: what redis-py and kombu do with the same rediss:// URL.
    ssl_check_hostname: bool = True
    conn_timeout: int = 1
    conn_retries: int = 5
    conn_retry_delay: int = 1
    max_connections: int | None = None

    @classmethod
    def from_dsn(cls, dsn: str) -> RedisSettings:
        """Settings from a ``redis://``, ``rediss://`` or ``unix://`` URL.

        The user and password are percent-decoded, as redis-py and kombu decode them; a
        ``rediss://`` URL's TLS options come from its query (redis-py's names, e.g.
        ``?ssl_ca_certs=/etc/steno/redis-ca.pem&ssl_cert_reqs=required``).
        """
        conf = urlparse(dsn)
        if conf.scheme not in {"redis", "rediss", "unix"}:
            raise RuntimeError("invalid DSN scheme")
        query = {name: values[-1] for name, values in parse_qs(conf.query).items()}
        if "db" in query:
            database = int(query["db"])
        elif conf.scheme != "unix":
            database = int(conf.path.lstrip("/")) if conf.path.lstrip("/") else 0
        else:
            database = 0
        tls: dict[str, Any] = {name: query[name] for name in _TLS_TEXT if name in query}
        if "ssl_check_hostname" in query:
            tls["ssl_check_hostname"] = query["ssl_check_hostname"].upper() not in _FALSE
        return cls(
            host=conf.hostname or "localhost",
            port=conf.port or 6379,
            ssl=conf.scheme == "rediss",
            username=unquote(conf.username) if conf.username else None,
            password=unquote(conf.password) if conf.password is not None else None,
            database=database,
            unix_socket_path=conf.path if conf.scheme == "unix" else None,
            **tls,
        )

    def to_dsn(self) -> str:
        """These settings as a URL (what Celery's broker and redis-py take)."""
        if self.unix_socket_path:
            return f"unix://{self.unix_socket_path}?db={self.database}"
        # Quoted whole ("/", "@", ":" included): a generated password may hold any of them.
        auth = quote(self.username or "", safe="")
        if self.password is not None:
            auth += ":" + quote(self.password, safe="")
        if auth:
            auth += "@"
        scheme = "rediss" if self.ssl else "redis"
        url = f"{scheme}://{auth}{self.host}:{self.port}/{self.database}"
        if not self.ssl:
            return url
        tls: dict[str, str] = {
            name: value for name in _TLS_TEXT if (value := getattr(self, name)) is not None
        }
        if not self.ssl_check_hostname:
            tls["ssl_check_hostname"] = "false"
        return f"{url}?{urlencode(tls)}"


# TLS options a rediss:// URL may carry as text, under redis-py's (and arq's) names.
_TLS_TEXT = ("ssl_keyfile", "ssl_certfile", "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_data")
_FALSE = ("0", "F", "FALSE", "N", "NO")  # redis-py's reading of a false query value


class ArqRedis(Redis):
    """``redis.asyncio.Redis`` plus ``enqueue_job`` (as arq's), publishing through Celery.

    ``celery_app`` sends the messages (by default a send-only app on the same Redis);
    ``offload`` runs that blocking send off the loop (by default in a thread; a worker
    passes its gevent hub, where Celery's producer pool lives).
    """

    def __init__(
        self,
        *,
        default_queue_name: str = default_queue_name,
        expires_extra_ms: int = expires_extra_ms,
        celery_app: Celery | None = None,
        broker_url: str | None = None,
        offload: Offload | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.default_queue_name = default_queue_name
        self.expires_extra_ms = expires_extra_ms
        self._broker_url = broker_url
        self._celery_app = celery_app
        self._offload: Offload = offload or asyncio.to_thread

    @property
    def celery_app(self) -> Celery:
        """The Celery app messages are sent through (made on first use)."""
        if self._celery_app is None:
            if self._broker_url is None:
                raise RuntimeError("ArqRedis needs a broker_url or a celery_app to enqueue")
            self._celery_app = make_producer(self._broker_url)
        return self._celery_app

    async def enqueue_job(
        self,
        function: str,
        *args: Any,
        _job_id: str | None = None,
        _queue_name: str | None = None,
        _defer_until: datetime | None = None,
        _defer_by: int | float | timedelta | None = None,
        _expires: int | float | timedelta | None = None,
        _job_try: int | None = None,
        **kwargs: Any,
    ) -> Job | None:
        """Enqueue ``function(*args, **kwargs)``; ``None`` if a job with this id exists.

        A job exists while it is queued, deferred or running, and while its result is kept
        (arq's uniqueness rule). ``_defer_until``/``_defer_by`` delay it; ``_expires`` drops
        it if it has not started by then (default: a day after it is due); ``_job_try``
        sets the try number when a job re-enqueues itself.
        """
        queue_name = _queue_name or self.default_queue_name
        job_id = _job_id or uuid4().hex
        job_key = job_key_prefix + job_id
        if _defer_until and _defer_by:
            raise RuntimeError("use either 'defer_until' or 'defer_by' or neither, not both")
        defer_by_ms = to_ms(_defer_by)
        expires_ms = to_ms(_expires)

        async with self.pipeline(transaction=True) as pipe:
            await pipe.watch(job_key, in_progress_key_prefix + job_id)
            if await pipe.exists(
                job_key, result_key_prefix + job_id, in_progress_key_prefix + job_id
            ):
                await pipe.reset()
                return None
            enqueue_time_ms = timestamp_ms()
            if _defer_until is not None:
                score = to_unix_ms(_defer_until)
            elif defer_by_ms:
                score = enqueue_time_ms + defer_by_ms
            else:
                score = enqueue_time_ms
            expires_ms = expires_ms or score - enqueue_time_ms + self.expires_extra_ms
            job = serialize_job(
                function,
                args,
                kwargs,
                _job_try,
                enqueue_time_ms,
                queue_name,
                enqueue_time_ms + expires_ms,
            )
            deferred = score > enqueue_time_ms
            pipe.multi()
            pipe.psetex(job_key, expires_ms, job)
            pipe.zadd(queue_index(queue_name), {job_id: score})
            if deferred:
                pipe.zadd(deferred_set(queue_name), {job_id: score})
            try:
                await pipe.execute()
            except WatchError:
                return None
        if not deferred:
            await self.send_message(
                function,
                job_id,
                list(args),
                kwargs,
                queue_name,
                enqueue_time_ms=enqueue_time_ms,
                job_try=_job_try,
            )
        return Job(job_id, self, _queue_name=queue_name)

    async def send_message(
        self,
        function: str,
        job_id: str,
        args: list[Any],
        kwargs: dict[str, Any],
        queue_name: str,
        *,
        enqueue_time_ms: int,
        job_try: int | None,
    ) -> None:
        """Send a tracked job's Celery message (through ``offload``, off the loop)."""
        await self._offload(
            functools.partial(
                send_job,
                self.celery_app,
                function,
                job_id,
                args,
                kwargs,
                queue_name,
                enqueue_time_ms=enqueue_time_ms,
                job_try=job_try,
            )
        )

    async def queued_jobs(self, *, queue_name: str | None = None) -> list[JobDef]:
        """The queue's tracked jobs not yet finished (queued, deferred or running)."""
        entries: list[Any] = await self.zrange(
            queue_index(queue_name or self.default_queue_name), 0, -1, withscores=True
        )
        jobs = []
        for raw_id, score in entries:
            raw = await self.get(job_key_prefix + as_text(raw_id))
            if raw:
                job = deserialize_job(raw)
                job.job_id, job.score = as_text(raw_id), int(score)
                jobs.append(job)
        return jobs


# Connections a pool opens at most when ``RedisSettings.max_connections`` is unset; past it,
# callers wait for a free one (arq, on redis-py 5, never capped; redis-py 8 caps at 100 and
# raises MaxConnectionsError, which broke programs awaiting hundreds of results at once).
DEFAULT_MAX_CONNECTIONS = 100


def _connection_pool(settings: RedisSettings) -> BlockingConnectionPool:
    """A pool whose callers wait for a free connection instead of failing past the cap."""
    kwargs: dict[str, Any] = {
        "db": settings.database,
        "username": settings.username,
        "password": settings.password,
        "socket_connect_timeout": settings.conn_timeout,
    }
    connection_class: type[AbstractConnection] = Connection
    if settings.unix_socket_path:
        kwargs["path"] = settings.unix_socket_path
        connection_class = UnixDomainSocketConnection
    else:
        kwargs.update(host=settings.host, port=settings.port)
    if settings.ssl and not settings.unix_socket_path:
        connection_class = SSLConnection
        # The URL's CA and client certificate reach redis-py only through these.
        kwargs.update(
            ssl_keyfile=settings.ssl_keyfile,
            ssl_certfile=settings.ssl_certfile,
            ssl_cert_reqs=settings.ssl_cert_reqs,
            ssl_ca_certs=settings.ssl_ca_certs,
            ssl_ca_data=settings.ssl_ca_data,
            ssl_check_hostname=settings.ssl_check_hostname,
        )
    return BlockingConnectionPool(
        connection_class=connection_class,
        max_connections=settings.max_connections or DEFAULT_MAX_CONNECTIONS,
        timeout=None,
        **kwargs,
    )


async def create_pool(
    settings_: RedisSettings | None = None,
    *,
    retry: int = 0,
    default_queue_name: str = default_queue_name,
    expires_extra_ms: int = expires_extra_ms,
    celery_app: Celery | None = None,
    broker_url: str | None = None,
    offload: Offload | None = None,
) -> ArqRedis:
    """An ``ArqRedis`` on these settings, pinged, retrying ``conn_retries`` times.

    Messages go to Celery's broker at ``broker_url`` (default: this same Redis).
    """
    settings = settings_ or RedisSettings()
    pool = ArqRedis(
        default_queue_name=default_queue_name,
        expires_extra_ms=expires_extra_ms,
        celery_app=celery_app,
        broker_url=broker_url or settings.to_dsn(),
        offload=offload,
        connection_pool=_connection_pool(settings),
    )
    # The pool is the client's own: closing the client closes its connections.
    pool.auto_close_connection_pool = True
    try:
        await pool.ping()
    except Exception as exc:
        await pool.aclose()
        if retry < settings.conn_retries:
            log.warning(
                "redis connection error %s, %d retries remaining",
                exc,
                settings.conn_retries - retry,
            )
            await asyncio.sleep(settings.conn_retry_delay)
            return await create_pool(
                settings,
                retry=retry + 1,
                default_queue_name=default_queue_name,
                expires_extra_ms=expires_extra_ms,
                celery_app=celery_app,
                broker_url=broker_url,
                offload=offload,
            )
        raise
    return pool
