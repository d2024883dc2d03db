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

Consuming, kombu sends ``BRPOP`` for every message and then one MULTI recording it unacked:
two round trips per message, and on loopback a send costs as much CPU as the rest of
kombu's work on the message. Here, while the queue has messages, one script (``POP_SCRIPT``)
pops as many as the pool has free greenlets (one when none is free: it waits for one, as
kombu's would) and records each unacked in the same atomic step, so no message is ever
popped but unrecorded. ``BRPOP`` waits only once the script finds the queue empty (so a
message arriving alone costs one script call more than kombu's: the look for a next one).
What the channel could not deliver goes back to the head of its queue at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from time import monotonic, time
from typing import Any
from urllib.parse import urlsplit

import gevent
from celery import Celery
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from redis.exceptions import NoScriptError, ResponseError

log = logging.getLogger("arq.worker")

# How long a closing channel waits for the acks being written.
CLOSE_WAIT_SECONDS = 10.0

# KEYS: the unacked index and hash, then the queue keys in BRPOP's order; ARGV: now, the most
# messages to pop. Pops from the consuming end (kombu pushes on the left, pops on the right)
# and records each message as kombu's QoS.append does: its delivery tag in the index at
# ``now``, ``[message, exchange, routing_key]`` in the hash. The pop comes first: a script's
# first write is the one Redis refuses when out of memory, and RPOP frees memory, so the
# records that follow cannot be refused and no message is popped without one. A message
# the script cannot read (not kombu's JSON) goes back where it was, for kombu's own path.
# Returns [queue key, message, queue key, message, ...].
POP_SCRIPT = """
local index, unacked, now, limit = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local popped, count = {}, 0
for i = 3, #KEYS do
  while count < limit do
    local payload = redis.pcall('RPOP', KEYS[i])
    if type(payload) ~= 'string' then break end
    local ok, message = pcall(cjson.decode, payload)
    local properties = ok and type(message) == 'table' and message.properties
    local tag = type(properties) == 'table' and properties.delivery_tag
    local info = type(properties) == 'table' and properties.delivery_info
    if type(tag) ~= 'string' or type(info) ~= 'table'
        or type(info.exchange) ~= 'string' or type(info.routing_key) ~= 'string' then
      redis.call('RPUSH', KEYS[i], payload)
      return popped
    end
    redis.call('ZADD', index, now, tag)
    redis.call('HSET', unacked, tag, '[' .. payload .. ',' .. cjson.encode(info.exchange)
      .. ',' .. cjson.encode(info.routing_key) .. ']')
    popped[#popped + 1] = KEYS[i]
    popped[#popped + 1] = payload
    count = count + 1
  end
end
return popped
"""


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS; acks reach Redis in batches (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acked: list[str] = []
        self._writer: gevent.Greenlet | None = None
        # Delivery tags the pop script has recorded unacked already (see ``append``).
        self.recorded: set[str] = set()

    def append(self, message: Any, delivery_tag: str) -> None:
        """Hold the message as delivered; record it unacked in Redis unless the pop did."""
        if delivery_tag in self.recorded:
            self.recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def in_flight(self) -> int:
        """Messages delivered and not yet acked or rejected."""
        return len(self._delivered) - len(self._dirty)

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
    """kombu's Redis channel with the batching ``QoS``, one client for its commands and the
    pop script (transport option ``pop_batch``: the pool's size; 0, kombu's ``BRPOP``)."""

    QoS = QoS
    qos: Any
    from_transport_options: Any = (*kombu_redis.Channel.from_transport_options, "pop_batch")
    pop_batch = 0
    _command_client: Any = None
    # Whether the command in flight on the consuming connection is the pop script; whether
    # the next one should be (false once it found the queue empty, until BRPOP brings one);
    # whether this connection's Redis has the script cached (EVALSHA) or needs it (EVAL);
    # when the next scan for a dead worker's messages is due (``_restore_visible``).
    _popping = False
    _pop_next = True
    _pop_cached = False
    _pop_sha = hashlib.sha1(POP_SCRIPT.encode()).hexdigest()
    _restore_due = 0.0

    def _brpop_start(self, timeout: int | None = None) -> None:
        self._restore_visible()
        if not (self.pop_batch and self._pop_next) or self.global_keyprefix:
            self._popping = False
            super()._brpop_start(timeout)
            return
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        keys = [
            self.unacked_index_key,
            self.unacked_key,
            *(self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues),
        ]
        script = ("EVALSHA", self._pop_sha) if self._pop_cached else ("EVAL", POP_SCRIPT)
        self._popping = True
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]  # kombu's: None
        free = max(1, self.pop_batch - self.qos.in_flight())
        self.client.connection.send_command(*script, len(keys), *keys, time(), free)

    def _restore_visible(self) -> None:
        """Every ``unacked_restore_interval`` s, put back the messages unacked for longer than
        the visibility timeout (a dead worker's).

        kombu runs this scan on a timer of its event loop; Celery's gevent pool consumes
        without one (``synloop``), so a gevent worker scanned only when it started: a killed
        worker's messages waited for some worker to start after their timeout.
        """
        now = monotonic()
        if now < self._restore_due:
            return
        self._restore_due = now + self.unacked_restore_interval
        try:
            self.qos.restore_visible(num=self.unacked_restore_limit, interval=1)
        except self.connection_errors:
            log.debug("could not restore unacked messages; trying again later", exc_info=True)

    def _brpop_read(self, **options: Any) -> bool:
        if not self._popping:
            delivered: bool = super()._brpop_read(**options)
            self._pop_next = True
            return delivered
        self._popping = False
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "EVALSHA", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            except NoScriptError:  # Redis restarted or flushed its scripts
                self._pop_cached = False
                raise virtual.Empty() from None
            except ResponseError:
                log.exception("the pop script failed; consuming with BRPOP from now on")
                self.pop_batch = 0
                raise virtual.Empty() from None
        finally:
            self._in_poll = None  # type: ignore[assignment]  # kombu's: False, then a connection
            self._flush_brpop_reauth()
        self._pop_cached = True
        if not reply:
            self._pop_next = False
            raise virtual.Empty()
        self._deliver_popped(
            [(bytes_to_str(k), json.loads(m)) for k, m in zip(reply[::2], reply[1::2], strict=True)]
        )
        return True

    def _deliver_popped(self, popped: list[tuple[str, dict[str, Any]]]) -> None:
        """Deliver the script's messages in order; what fails to go back to its queue's head."""
        for done, (key, message) in enumerate(popped):
            queue = key.rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            tag = message["properties"]["delivery_tag"]
            self.qos.recorded.add(tag)
            try:
                self.connection._deliver(message, queue)
            except BaseException:
                self.qos.recorded.discard(tag)
                undelivered = [m["properties"]["delivery_tag"] for _, m in popped[done + 1 :]]
                if tag not in self.qos._delivered:
                    undelivered.insert(0, tag)
                for undone in reversed(undelivered):
                    self.qos.restore_by_tag(undone)  # kombu's default: the head
                raise

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
        "pop_batch": max_jobs,
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
