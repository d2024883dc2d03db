"""``GET /metrics`` (Prometheus) and ``GET /v1/queues``: what operators watch (admin keys only).

``/metrics`` answers for this API: the series its granian workers recorded (read from their
files, so any worker answers for all of them), and the queues' depths, computed from
PostgreSQL (and the broker's Redis lists) at the moment of the scrape. Each worker pool has an
exporter of its own (``service.core.exporter``); README "Metrics and operations" lists what
Prometheus scrapes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import asyncpg
import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily, Metric
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.auth.guards import admin_only
from service.core.exporter import exposition, family_folder
from service.core.routing import QueueName
from service.core.settings import Settings
from service.health.controllers import WorkerCensus
from service.ops.backlog import Backlog, Estimator, backlogs

log = logging.getLogger(__name__)


class QueueView(msgspec.Struct):
    """One queue now.

    ``jobs_waiting`` / ``audio_seconds_waiting``: queued jobs and their audio (a URL job not
    fetched yet waits on ``io``, a job with audio on ``gpu``); ``jobs_running``: being fetched
    (``io``) or transcribed (``gpu``); ``workers`` and ``concurrency``: the workers consuming
    the queue and their pool slots in all (from Celery's inspect, cached a few seconds);
    ``realtime_factor``: the median processing seconds per audio second of recent completed
    jobs; ``eta_seconds_for_new_job``: seconds until a job that joins the queue now starts
    (``gpu`` only; null without a measured rate or a worker); ``broker_messages``: messages
    waiting in the broker's list (null when it can't be read).
    """

    name: str
    jobs_waiting: int
    audio_seconds_waiting: float
    jobs_running: int
    workers: list[str]
    concurrency: int
    realtime_factor: float | None
    eta_seconds_for_new_job: float | None
    broker_messages: int | None


class QueuesView(msgspec.Struct):
    """Every queue."""

    queues: list[QueueView]


class _Depths:
    """A collector of the queues' depths, measured just before the scrape."""

    def __init__(self, found: dict[str, Backlog], messages: dict[str, int] | None) -> None:
        self._found, self._messages = found, messages

    def collect(self) -> Iterator[Metric]:
        families = (
            ("steno_queue_depth_jobs", "Queued jobs waiting on each queue.", "jobs_waiting"),
            (
                "steno_queue_depth_audio_seconds",
                "Seconds of audio of the queued jobs waiting on each queue.",
                "audio_seconds_waiting",
            ),
            ("steno_queue_running_jobs", "Jobs being fetched or transcribed.", "jobs_running"),
        )
        for name, doc, attribute in families:
            family = GaugeMetricFamily(name, doc, labels=["queue"])
            for queue, backlog in self._found.items():
                family.add_metric([queue], float(getattr(backlog, attribute)))
            yield family
        if self._messages is not None:
            family = GaugeMetricFamily(
                "steno_broker_messages", "Task messages waiting in the broker.", labels=["queue"]
            )
            for queue, count in self._messages.items():
                family.add_metric([queue], float(count))
            yield family


async def _broker_messages(settings: Settings) -> dict[str, int] | None:
    """Messages waiting in each queue's Redis list (kombu keeps a queue as a list of its name)."""
    if not settings.broker.startswith(("redis://", "rediss://", "unix://")):
        return None
    broker = Redis.from_url(settings.broker, socket_timeout=2, socket_connect_timeout=2)
    try:
        return {q.value: int(await broker.llen(q.value)) for q in QueueName}
    except Exception as exc:
        log.warning("metrics: broker queue lengths unreadable: %r", exc)
        return None
    finally:
        await broker.aclose()


class OpsController(Controller):
    """Operator endpoints; a plain key gets 403."""

    path = "/"
    tags = ["operations"]  # noqa: RUF012 - declared by Litestar as an instance attribute
    guards = [admin_only]  # noqa: RUF012 - declared by Litestar as an instance attribute

    @get(
        "/metrics",
        summary="Prometheus metrics of this API and the queues (admin)",
        description="The text exposition format. Scrape with an admin key as bearer token.",
        media_type=CONTENT_TYPE_LATEST,
    )
    async def metrics(
        self,
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        settings: NamedDependency[Settings],
    ) -> Response[bytes]:
        """The API's series and the queue depths, measured now."""
        extra = []
        try:
            async with sessions() as session:
                found = await backlogs(session)
            extra.append(_Depths(found, await _broker_messages(settings)))
        except Exception as exc:  # the API's own series are still worth a scrape
            log.warning("metrics: queue depths unreadable: %r", exc)
        folder = family_folder(settings, "api", settings.port)
        body = await asyncio.to_thread(exposition, folder, extra)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @get("/v1/queues", summary="Queue depths, workers and the wait for a new job (admin)")
    async def queues(
        self,
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        settings: NamedDependency[Settings],
        census: NamedDependency[WorkerCensus],
        estimator: NamedDependency[Estimator],
        read_pool: NamedDependency[asyncpg.Pool],
    ) -> QueuesView:
        """Each queue's backlog, its workers and the estimated wait of a job joining it."""
        async with sessions() as session:
            found = await backlogs(session)
        factor = await estimator.factor(read_pool)
        pools, messages = await asyncio.gather(census.snapshot(), _broker_messages(settings))
        views = []
        for queue in QueueName:
            backlog, gpu = found[queue.value], queue == QueueName.GPU
            slots = pools.concurrency.get(queue.value, 0)
            views.append(
                QueueView(
                    name=queue.value,
                    jobs_waiting=backlog.jobs_waiting,
                    audio_seconds_waiting=round(backlog.audio_seconds_waiting, 2),
                    jobs_running=backlog.jobs_running,
                    workers=pools.workers.get(queue.value, []),
                    concurrency=slots,
                    realtime_factor=round(factor, 4) if gpu and factor is not None else None,
                    eta_seconds_for_new_job=estimator.wait(backlog, factor, slots) if gpu else None,
                    broker_messages=None if messages is None else messages.get(queue.value),
                )
            )
        return QueuesView(views)
