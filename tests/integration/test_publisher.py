"""The API's publisher against the real Redis broker: a message lands even after the broker
lost its queue bindings (a Redis restart with nothing on disk)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from service.core.broker import CeleryPublisher, make_producer_app
from service.core.delivery import EXCHANGE
from service.core.settings import Settings

BINDINGS = f"_kombu.binding.{EXCHANGE.name}"


@pytest.fixture
def broker(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.broker)
    yield client
    client.close()


def test_a_send_after_the_broker_lost_its_bindings_still_lands(
    settings: Settings, broker: redis.Redis
) -> None:
    # given a publisher that already sent to a queue no worker consumes
    queue = f"probe-{uuid.uuid4().hex[:8]}"
    app = make_producer_app(settings)
    publisher = CeleryPublisher(app)
    try:
        publisher.publish("probe.task", queue, ["first"], None)
        assert broker.llen(queue) == 1

        # when the broker loses the queue and its binding, as a Redis restart would
        broker.delete(queue)
        assert broker.srem(BINDINGS, *_bindings_of(broker, queue)) == 1
        publisher.publish("probe.task", queue, ["second"], None)

        # then the second message is in the queue, not silently dropped
        assert broker.llen(queue) == 1
        assert len(_bindings_of(broker, queue)) == 1
    finally:
        broker.delete(queue)
        if stale := _bindings_of(broker, queue):
            broker.srem(BINDINGS, *stale)
        app.close()


def _bindings_of(broker: redis.Redis, queue: str) -> list[bytes]:
    """The exchange's binding members for ``queue`` (kombu joins key, pattern, queue)."""
    return [m for m in broker.smembers(BINDINGS) if m.endswith(b"\x06\x16" + queue.encode())]
