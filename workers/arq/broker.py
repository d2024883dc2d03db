"""How an arq worker's Celery app consumes: its settings and its kombu Redis transport.

``configure_worker_app`` sets what the gevent pool needs. The transport is kombu's Redis
transport with the acks of one moment written together.

With late acks, kombu's Redis transport removes every acknowledged message from its unacked
index (``unacked_index`` and ``unacked``, what brings a killed worker's messages back) with
one MULTI per message, and the task's greenlet waits for that round trip before its pool slot
frees. Here an ack is settled in the channel's memory at once, as kombu's, and its removal
from Redis is queued; one writer greenlet removes every queued tag in one MULTI, then the
tags queued meanwhile, and so on. Jobs that end in the same hub iteration share a write.

What a crash can do is unchanged: a message whose removal was not written yet is restored
after the visibility timeout, as one whose ack was lost would be, and the arq layer drops it
as a duplicate (its job finished, so its keys are gone). A closing channel waits for the
writer and writes what is left first. Rejects and requeues stay kombu's own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import gevent
from celery import Celery
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

log = logging.getLogger("arq.worker")

# How long a closing channel waits for the acks being written.
CLOSE_WAIT_SECONDS = 10.0


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS; acks reach Redis in batches (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acked: list[str] = []
        self._writer: gevent.Greenlet | None = None

    def ack(self, delivery_tag: str) -> None:
        """Settle the message now; queue its removal from the unacked index."""
        virtual.QoS.ack(self, delivery_tag)
        self._acked.append(delivery_tag)
        if self._writer is None:
            self._writer = gevent.spawn(self._write_acks)

    def _write_acks(self) -> None:
        try:
            while self._acked:
                tags, self._acked = self._acked, []
                try:
                    with self.channel.conn_or_acquire() as client:
                        pipe = client.pipeline()
                        pipe.zrem(self.unacked_index_key, *tags)
                        pipe.hdel(self.unacked_key, *tags)
                        pipe.execute()
                except Exception:
                    # As a failed ack: the messages come back after the visibility timeout.
                    log.exception("could not write %d acks to the broker", len(tags))
        finally:
            self._writer = None

    def restore_unacked_once(self, stderr: Any = None) -> Any:
        """Write the queued acks, then restore what was never acked (kombu's)."""
        writer = self._writer
        if writer is not None and writer is not gevent.getcurrent():
            writer.join(CLOSE_WAIT_SECONDS)
        if self._acked:
            self._write_acks()
        return super().restore_unacked_once(stderr)


class Channel(kombu_redis.Channel):
    """kombu's Redis channel with the batching ``QoS`` and one client for its commands."""

    QoS = QoS
    _command_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """``client``, or the channel's client on its connection pool.

        kombu builds a new ``redis.Redis`` for every command it sends outside its poller
        (each message's unacked record, each ack): a twentieth of the worker's CPU. A client
        is only a handle on the pool, so one serves them all; a new pool (after kombu
        reconnected) gets a new one.
        """
        if client:
            yield client
            return
        pool = self.pool
        command_client = self._command_client
        if command_client is None or command_client.connection_pool is not pool:
            command_client = self._command_client = self._create_client()
        yield command_client


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with the batching ``QoS`` (``broker_transport``)."""

    Channel = Channel


def configure_worker_app(app: Celery, max_jobs: int) -> None:
    """Set ``app`` up to serve an arq worker of ``max_jobs`` greenlets."""
    # No prefetch limit: the gevent pool's spawn blocks the consumer while every greenlet
    # is busy, so a worker holds at most max_jobs + 1 messages and takes the next one the
    # moment a greenlet frees. With a limit, Celery's gevent consumer stops polling when
    # the limit is reached and only looks again after its 2 s poll timeout.
    app.conf.worker_prefetch_multiplier = 0
    # Every greenlet acks its own message late: kombu's Redis pool (10 by default) must
    # hold one connection per greenlet, or acks fail with "Too many connections".
    app.conf.broker_transport_options = {
        **(app.conf.broker_transport_options or {}),
        "max_connections": max_jobs + 10,
    }
    if not app.conf.broker_transport and urlsplit(app.conf.broker_url or "").scheme in (
        "redis",
        "rediss",
    ):
        app.conf.broker_transport = f"{__name__}:Transport"
    if not app.conf.result_backend:
        # Celery keeps a result backend per thread unless told it is thread-safe, and under
        # gevent every task's greenlet is a thread: each job built its own (disabled)
        # backend, a tenth of the worker's CPU. The disabled backend holds no state.
        app.conf.result_backend_thread_safe = True
