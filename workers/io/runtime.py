"""The IO worker's shared async resources, made in ``on_startup`` and closed in ``on_shutdown``.

They live on the worker's one asyncio loop (``workers.arq``) and reach every handler in its
arq ``ctx``: settings, the outbox publisher, the egress HTTP clients (fetches; webhooks), the
webhook secret box, the database engine and sessions, the broker's Redis (for the relay's
marker) and ``run_process``.
"""

from __future__ import annotations

import functools
import logging
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from redis.asyncio import Redis

from service.core.broker import CeleryPublisher
from service.core.db.engine import make_engine, make_sessionmaker
from service.core.egress import EgressClient
from service.core.settings import Settings
from service.core.webhooks import SecretBox
from service.core.webhooks.payload import USER_AGENT as WEBHOOK_USER_AGENT

log = logging.getLogger(__name__)


async def startup(ctx: dict[str, Any]) -> None:
    """Build the resources on the worker's loop (arq's ``on_startup``)."""
    from workers.app import app, settings

    s: Settings = settings
    # Pools sized to the greenlet concurrency, so no handler waits on a pool slot.
    limits = httpx.Limits(
        max_connections=s.io_concurrency, max_keepalive_connections=s.io_concurrency // 4
    )
    engine = make_engine(s, pool_size=min(s.io_concurrency, s.db_pool_size))
    ctx.update(
        settings=s,
        publisher=CeleryPublisher(app),
        run_process=functools.partial(run_process, ctx["in_hub"]),
        # Every fetch goes through the egress: checked hops, pinned connections.
        http=EgressClient.from_settings(
            s,
            deadline=s.fetch_deadline,
            timeout=httpx.Timeout(s.fetch_timeout_seconds, connect=10.0),
            limits=limits,
            user_agent="steno/0.1 (+audio fetcher)",
        ),
        # Webhook deliveries: their own short deadline; redirects are not followed (per call).
        webhook_http=EgressClient.from_settings(
            s,
            deadline=s.webhook_timeout_seconds,
            timeout=httpx.Timeout(s.webhook_timeout_seconds, connect=5.0),
            limits=limits,
            user_agent=WEBHOOK_USER_AGENT,
        ),
        secret_box=SecretBox.from_settings(s),
        engine=engine,
        sessions=make_sessionmaker(engine),
        # The redrive's marker lives in the broker; only a Redis broker has one.
        broker_redis=Redis.from_url(s.broker, max_connections=4)
        if s.broker.startswith(("redis://", "rediss://", "unix://"))
        else None,
    )
    if not ctx["secret_box"].sealing:
        log.warning("STENO_WEBHOOK_SECRETS_KEY is unset: webhook secrets are stored unsealed")
    log.info("IO resources ready on the worker's asyncio loop")


async def shutdown(ctx: dict[str, Any]) -> None:
    """Close what ``startup`` made (arq's ``on_shutdown``)."""
    await ctx["http"].aclose()
    await ctx["webhook_http"].aclose()
    if ctx["broker_redis"] is not None:
        await ctx["broker_redis"].aclose()
    await ctx["engine"].dispose()


async def run_process(
    in_hub: Callable[..., Any], argv: Sequence[str], timeout: float
) -> tuple[int, bytes, bytes]:
    """Run a program from the main gevent hub, where gevent's child watchers live."""

    def run() -> tuple[int, bytes, bytes]:
        # subprocess is gevent's here (monkey-patched), so this yields to the hub.
        done = subprocess.run(list(argv), capture_output=True, timeout=timeout, check=False)
        return done.returncode, done.stdout, done.stderr

    try:
        result: tuple[int, bytes, bytes] = await in_hub(run)
    except subprocess.TimeoutExpired as exc:
        raise TimeoutError(str(exc)) from exc
    return result
