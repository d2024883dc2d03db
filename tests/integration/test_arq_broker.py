"""The arq worker's kombu transport: acks reach Redis's unacked index in batches, never lost.

Against the real Redis, in this (unpatched) process: the writer greenlet runs when the test
yields to gevent's hub, as it would after the task greenlets of one hub iteration.
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import gevent
import pytest
import redis
from kombu import Connection, Exchange, Message, Queue

from service.core.settings import Settings
from workers.arq.broker import QoS

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
