"""The API and the workers agree on task names, queues and the exchange.

Both take them from ``service/core/routing.py``; the API sends by name and never imports
``workers/``. A task the API sends that no worker registers, or routes to another queue,
would sit in Redis forever.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from service.core import delivery, routing
from service.core.broker import CeleryPublisher
from service.core.routing import TaskRef

ROOT = Path(__file__).resolve().parents[2]
SENT_BY_API = [routing.TRANSCRIBE, routing.FETCH_AUDIO, routing.DELIVER_WEBHOOK]


@pytest.fixture(scope="module")
def worker_app() -> Celery:
    """The workers' Celery app with its tasks registered, as the worker processes have it.

    The GPU tasks come from the app's task modules; the IO tasks are the arq functions of
    ``workers.io.worker.WorkerSettings``, registered by ``steno worker io`` before it serves.
    """
    from workers.app import app
    from workers.arq.worker import create_worker
    from workers.io.worker import WorkerSettings

    app.loader.import_default_modules()
    create_worker(WorkerSettings).register()
    return app


@pytest.mark.parametrize("task", SENT_BY_API, ids=lambda t: t.name)
def test_each_task_the_api_sends_is_registered_by_the_workers(
    worker_app: Celery, task: TaskRef
) -> None:
    # given a task the API publishes by name
    # when the worker app's registry is looked up
    # then a task of that exact name exists
    assert task.name in worker_app.tasks
    assert worker_app.tasks[task.name].name == task.name


@pytest.mark.parametrize("task", SENT_BY_API, ids=lambda t: t.name)
def test_each_task_the_api_sends_is_routed_to_the_same_queue(
    worker_app: Celery, task: TaskRef
) -> None:
    # given a task the API sends to a queue
    # when the workers' routing tables and Celery's own router resolve it
    route = worker_app.amqp.router.route({}, task.name)

    # then all of them name that queue, through the one exchange
    assert routing.ROUTES[routing.TaskName(task.name)] == task.queue
    assert routing.task_routes()[task.name] == {
        "queue": task.queue,
        "exchange": delivery.EXCHANGE.name,
        "routing_key": task.queue,
    }
    assert route["queue"].name == task.queue
    assert route["queue"].routing_key == task.queue
    assert route["queue"].exchange.name == delivery.EXCHANGE.name


def test_every_routed_queue_is_declared() -> None:
    # given the routes and the declared queues
    declared = {queue.name: queue for queue in routing.QUEUES}

    # when each route's queue is looked up
    # then it is declared, bound to the exchange with its own name as routing key
    for queue in routing.ROUTES.values():
        assert declared[queue.value].exchange.name == delivery.EXCHANGE.name
        assert declared[queue.value].routing_key == queue.value


class _RecordingApp(Celery):  # type: ignore[misc]
    """A producer app on kombu's in-memory broker that keeps what ``send_task`` was given."""

    def __init__(self) -> None:
        super().__init__("recording", broker="memory://", set_as_current=False)
        self.sent: list[dict[str, Any]] = []

    def send_task(self, name: str, **options: Any) -> None:  # type: ignore[override]
        self.sent.append({"name": name, **options})


@pytest.mark.parametrize("task", SENT_BY_API, ids=lambda t: t.name)
def test_the_api_publishes_through_the_workers_exchange(task: TaskRef) -> None:
    # given the API's publisher over an app that records what it sends
    app = _RecordingApp()
    publisher = CeleryPublisher(app)

    # when it publishes a task the API sends
    publisher.publish(task.name, task.queue, ["job-id"], None)

    # then the message goes through the workers' exchange to the task's queue
    [sent] = app.sent
    assert sent["name"] == task.name
    assert sent["exchange"].name == delivery.EXCHANGE.name
    assert sent["exchange"].type == delivery.EXCHANGE.type
    assert sent["routing_key"] == task.queue
    assert sent["queue"].name == task.queue
    assert sent["queue"].exchange.name == delivery.EXCHANGE.name


def test_the_worker_app_is_configured_for_at_least_once_delivery(worker_app: Celery) -> None:
    # given the workers' Celery configuration
    conf = worker_app.conf

    # when its delivery settings are read
    # then messages are acknowledged after the task, requeued when a child dies, taken one
    # at a time, JSON only, and never redelivered while the longest task may still run
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json"
    assert list(conf.accept_content) == ["json"]
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit


def _modules_after_import(module: str) -> set[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded: list[Any] = json.loads(result.stdout)
    return set(loaded)


def test_importing_the_api_loads_neither_torch_whisper_nor_the_workers() -> None:
    # given a fresh interpreter
    # when it imports the API
    loaded = _modules_after_import("service.app")

    # then the GPU stack and the worker code stay out of the API process
    assert "service.app" in loaded
    heavy = {m for m in loaded if m.split(".")[0] in {"torch", "whisper", "workers"}}
    assert heavy == set()


class _FlakyBroker:
    def __init__(self) -> None:
        self.calls = 0
        self.down = True

    def publish(self, *args: object) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("broker down")


def test_a_guarded_publisher_fails_fast_after_a_broker_error() -> None:
    from service.core.broker import BrokerUnavailable, GuardedPublisher

    # Given a broker that just failed
    broker = _FlakyBroker()
    guarded = GuardedPublisher(broker, cooldown=60.0)
    with pytest.raises(ConnectionError):
        guarded.publish("gpu.transcribe", "gpu", ["x"], None)

    # when more messages come within the cooldown, then they fail at once, untried
    broker.down = False
    with pytest.raises(BrokerUnavailable):
        guarded.publish("gpu.transcribe", "gpu", ["y"], None)
    assert broker.calls == 1

    # and after the cooldown the broker is tried again
    guarded_soon = GuardedPublisher(broker, cooldown=0.0)
    guarded_soon.publish("gpu.transcribe", "gpu", ["z"], None)
    assert broker.calls == 2
