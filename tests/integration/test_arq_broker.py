"""The arq worker's kombu transport: messages popped in batches and recorded unacked in the
same step, acks written to Redis's unacked index in batches; nothing lost either way.

Against the real Redis, in this (unpatched) process: the writer greenlet runs when the test
yields to gevent's hub, as it would after the task greenlets of one hub iteration.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import gevent
import pytest
import redis
from kombu import Connection, Exchange, Message, Queue

from service.core.settings import Settings
from workers.arq.broker import Channel, QoS

UNACKED, UNACKED_INDEX = "unacked", "unacked_index"


@pytest.fixture
def connection(settings: Settings) -> Iterator[Connection]:
    with Connection(settings.redis_url, transport="workers.arq.broker:Transport") as conn:
        yield conn


def _received(connection: Connection, count: int) -> tuple[Queue, list[Message]]:
    name = f"arq-broker-test-{uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name)
    with connection.Producer() as producer:
        for i in range(count):
            producer.publish({"i": i}, exchange=queue.exchange, routing_key=name, declare=[queue])
    bound = queue(connection.default_channel)
    messages = [bound.get(no_ack=False) for _ in range(count)]
    assert all(messages)
    return bound, messages


def _unacked(settings: Settings, messages: list[Message]) -> list[bool]:
    client = redis.Redis.from_url(settings.redis_url)
    return [
        bool(client.hexists(UNACKED, m.delivery_tag))
        or client.zscore(UNACKED_INDEX, m.delivery_tag) is not None
        for m in messages
    ]


def test_acks_of_one_moment_are_written_together(
    settings: Settings, connection: Connection
) -> None:
    # given three received messages, recorded as unacked (what brings a dead worker's back)
    _, messages = _received(connection, 3)
    assert isinstance(connection.default_channel.qos, QoS)
    assert _unacked(settings, messages) == [True] * 3
    # when all three are acked in one go, then settled in kombu's memory at once (marked
    # dirty, kombu's own way) but not yet removed from Redis
    for message in messages:
        message.ack()
    qos = connection.default_channel.qos
    assert {m.delivery_tag for m in messages} <= qos._dirty
    assert _unacked(settings, messages) == [True] * 3
    # and removed from Redis once the hub runs the writer, in one write
    gevent.sleep(0)
    assert _unacked(settings, messages) == [False] * 3


def test_a_closing_channel_writes_the_queued_acks_and_restores_the_rest(
    settings: Settings, connection: Connection
) -> None:
    # given two received messages, one acked and the channel closed before the writer ran
    bound, messages = _received(connection, 2)
    messages[0].ack()
    connection.default_channel.close()
    # then the acked one is gone for good, and the unacked one is back in its queue
    assert _unacked(settings, messages) == [False, False]
    client = redis.Redis.from_url(settings.redis_url)
    assert client.llen(bound.name) == 1
    client.delete(bound.name)


POP_BATCH = 3


@pytest.fixture
def consume(settings: Settings, popping: Connection) -> Iterator[Any]:
    """Makes ``_Consumer``s on ``popping``; closes their Redis clients afterwards."""
    made: list[_Consumer] = []

    def make(count: int) -> _Consumer:
        made.append(_Consumer(settings, popping, count))
        return made[-1]

    yield make
    for consumer in made:
        consumer.client.close()


@pytest.fixture
def popping(settings: Settings) -> Iterator[Connection]:
    """A connection whose channels pop up to ``POP_BATCH`` messages at once (a pool of 3)."""
    with Connection(
        settings.redis_url,
        transport="workers.arq.broker:Transport",
        transport_options={"pop_batch": POP_BATCH},
    ) as conn:
        yield conn


class _Consumer:
    """Consumes a fresh queue of ``count`` published messages ({"i": 0}, {"i": 1}, ...),
    noting, per ``drain``, the messages delivered and whether each was recorded unacked in
    Redis by the time the callback saw it."""

    def __init__(self, settings: Settings, connection: Connection, count: int) -> None:
        self.client = redis.Redis.from_url(settings.redis_url)
        self.name = f"arq-broker-pop-{uuid4().hex[:8]}"
        self.queue = Queue(self.name, Exchange(self.name, type="direct"), routing_key=self.name)
        self.connection = connection
        self.channel: Any = connection.channel()
        assert isinstance(self.channel, Channel)
        self.publish(range(count))
        self.messages: list[Message] = []
        self.batch: list[int] = []
        self.recorded: list[bool] = []
        self.fail_at: int | None = None
        self.consumer = connection.Consumer(
            self.queue, channel=self.channel, callbacks=[self._received]
        )
        self.consumer.consume()

    def publish(self, numbers: Any) -> None:
        with self.connection.Producer() as producer:
            for i in numbers:
                producer.publish(
                    {"i": i},
                    exchange=self.queue.exchange,
                    routing_key=self.name,
                    declare=[self.queue],
                )

    def _received(self, body: dict[str, int], message: Message) -> None:
        if body["i"] == self.fail_at:
            raise RuntimeError("the callback failed")
        self.recorded.append(bool(self.client.hexists(UNACKED, message.delivery_tag)))
        self.batch.append(body["i"])
        self.messages.append(message)

    def drain(self) -> list[int]:
        """The messages one ``drain_events`` delivers."""
        self.batch = []
        self.connection.drain_events(timeout=5)
        return self.batch

    def queued(self) -> list[int]:
        """What waits in the queue, the next to be consumed first."""
        items = self.client.lrange(self.name, 0, -1)
        return [json.loads(base64.b64decode(json.loads(m)["body"]))["i"] for m in reversed(items)]


def test_a_backlog_is_popped_as_many_as_the_pool_has_free_greenlets_each_recorded_first(
    settings: Settings, popping: Connection, consume: Any
) -> None:
    # given six queued messages and a pool of three
    consumer = consume(6)
    # when the channel consumes, then one read brings three, in order, each already
    # recorded unacked when delivered
    assert consumer.drain() == [0, 1, 2]
    assert consumer.recorded == [True] * 3
    # and with every greenlet busy, one more comes (and waits for one), as with kombu's BRPOP
    assert consumer.drain() == [3]
    # and once two are acked, the next read brings as many as are free again
    consumer.messages[0].ack()
    consumer.messages[1].ack()
    gevent.sleep(0)
    assert consumer.drain() == [4]
    consumer.messages[2].ack()
    consumer.messages[3].ack()
    gevent.sleep(0)
    assert consumer.drain() == [5]
    assert consumer.recorded == [True] * 6
    for message in consumer.messages[4:]:
        message.ack()
    gevent.sleep(0)
    assert _unacked(settings, consumer.messages) == [False] * 6


def test_an_empty_queue_is_waited_on_with_brpop_and_a_new_message_still_arrives(
    settings: Settings, popping: Connection, consume: Any
) -> None:
    # given an empty queue, read once (the pop finds nothing; BRPOP waits)
    consumer = consume(0)
    with pytest.raises(TimeoutError):
        popping.drain_events(timeout=1.5)
    # when a message is published, then the waiting BRPOP brings it, recorded unacked
    consumer.publish([7])
    assert consumer.drain() == [7]
    assert consumer.recorded == [True]
    # and a backlog after it is popped in a batch again
    consumer.publish([8, 9])
    assert consumer.drain() == [8, 9]


def test_what_the_channel_could_not_deliver_goes_back_to_the_head_of_its_queue(
    settings: Settings, popping: Connection, consume: Any
) -> None:
    # given five queued messages, the first of which the consumer fails on
    consumer = consume(5)
    consumer.fail_at = 0
    # when a read pops three and the delivery fails on the first
    with pytest.raises(RuntimeError):
        consumer.drain()
    # then the two after it are back at the head of the queue, in order, ahead of the rest
    assert consumer.batch == []
    assert consumer.queued() == [1, 2, 3, 4]
    # and the failed one, delivered and unacked as kombu leaves it, comes back on close:
    # every message once
    consumer.channel.close()
    assert sorted(consumer.queued()) == [0, 1, 2, 3, 4]


def test_popped_messages_survive_a_crash_and_come_back_after_the_visibility_timeout(
    settings: Settings, popping: Connection, consume: Any
) -> None:
    # given three messages popped in one read and never acked
    consumer = consume(3)
    assert consumer.drain() == [0, 1, 2]
    assert consumer.queued() == []
    # when the worker dies (its channel never restores anything)
    consumer.channel.do_restore = False
    consumer.channel.close()
    # then another worker restores them once their visibility timeout has passed
    with Connection(
        settings.redis_url,
        transport="workers.arq.broker:Transport",
        transport_options={"visibility_timeout": 0},
    ) as other:
        other.default_channel.qos.restore_visible(num=100)
    assert sorted(consumer.queued()) == [0, 1, 2]


def test_a_message_the_script_cannot_read_is_left_in_the_queue_for_kombu(
    settings: Settings, popping: Connection, consume: Any
) -> None:
    # given a queued message, then one that is not kombu's JSON, then another message
    consumer = consume(1)
    consumer.client.lpush(consumer.name, b"not json")
    consumer.publish([2])
    # when the channel reads, then it takes the first and leaves the rest where they were
    assert consumer.drain() == [0]
    assert consumer.client.lrange(consumer.name, 0, -1)[-1] == b"not json"
    assert consumer.client.llen(consumer.name) == 2
    consumer.client.delete(consumer.name)


def test_a_redis_that_lost_its_scripts_is_sent_the_script_again(
    settings: Settings, popping: Connection, consume: Any
) -> None:
    # given a channel that has popped with the script cached in Redis
    consumer = consume(2)
    assert consumer.drain() == [0, 1]
    for message in consumer.messages:
        message.ack()
    gevent.sleep(0)
    # when Redis forgets its scripts (as after a restart) and more messages arrive
    consumer.client.script_flush()
    consumer.publish([2, 3])
    # then they are still delivered, none twice, none lost
    delivered: list[int] = []
    while len(delivered) < 2:
        delivered += consumer.drain()
    assert delivered == [2, 3]
