"""How task messages travel: the exchange, queue bindings and every Celery app's settings.

Steno's worker app, the API's send-only app and both apps of the arq-compatible layer are
made by ``celery_app`` from ``celery_conf`` and bind queues with ``bind_queue``, so the
guarantees the design relies on (late acks, requeue on a lost worker, prefetch 1, JSON only,
a visibility timeout longer than any hard time limit) cannot drift apart between them.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from celery import Celery
from kombu.entity import Exchange, Queue

# The one exchange every task message goes through, routed by queue name.
EXCHANGE = Exchange("steno", type="direct", durable=True)


def kombu_queue(name: str) -> Queue:
    """A durable queue bound to the one exchange under its own name (Steno's or an arq app's)."""
    return Queue(name, EXCHANGE, routing_key=name, durable=True)


def bind_queue(channel: Any, queue_name: str) -> Queue:
    """Declare ``queue_name`` bound to the exchange on ``channel``, writing the binding anew.

    Called before every send, not once per process as kombu would: a Redis that restarted
    with nothing on disk has lost the binding, and a message sent to an unbound routing key
    is silently dropped. kombu's virtual transports (Redis) skip a binding they remember in
    process memory, so it is written to the broker again directly, as ``queue_bind`` would
    (the same member, so no second route), without growing the in-memory routing table.
    """
    queue = kombu_queue(queue_name)
    queue(channel).declare()
    bind = getattr(channel, "_queue_bind", None)
    if bind is not None:
        meta = channel.typeof(EXCHANGE.name).prepare_bind(
            queue_name, EXCHANGE.name, queue_name, None
        )
        bind(EXCHANGE.name, *meta)
    return queue


def celery_conf(
    *,
    visibility_timeout: int,
    queues: Sequence[str] = (),
    time_limit: float | None = None,
    connect_timeout: float = 5.0,
    socket_timeout: float = 30.0,
    task_events: bool = False,
) -> dict[str, Any]:
    """Celery settings for at-least-once delivery to idempotent workers, JSON only.

    With ``queues`` the app consumes them (the first is the default) through the one
    exchange; without, it only sends, failing fast when the broker does not answer.
    ``time_limit`` is the hard limit of a task whose message carries none. ``task_events``
    makes a worker send task events and a sender ``task-sent`` (what Flower shows).
    """
    conf: dict[str, Any] = {
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # PostgreSQL (or arq's result keys) hold every outcome; Celery's backend is unused.
        "task_ignore_result": True,
        "timezone": "UTC",
        "task_send_sent_event": task_events,
        "broker_transport_options": {
            # Longer than any hard time limit, so a live task is never handed out twice.
            "visibility_timeout": visibility_timeout,
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": socket_timeout,
        },
    }
    if not queues:
        conf.update(
            broker_connection_retry_on_startup=False,
            broker_connection_timeout=connect_timeout,
        )
        return conf
    conf["broker_transport_options"].update(
        # Scan for messages past the visibility timeout every few seconds (kombu's default is
        # about 100 s), so a dead worker's reserved messages come back close to it.
        unacked_restore_interval=max(1, min(10, visibility_timeout // 4)),
        unacked_restore_throttle=1,
    )
    conf.update(
        task_queues=tuple(kombu_queue(name) for name in queues),
        task_default_queue=queues[0],
        task_default_exchange=EXCHANGE.name,
        task_default_routing_key=queues[0],
        task_create_missing_queues=False,
        # A message is acknowledged only after its task ran; a dead child's is requeued.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A GPU child loads Whisper in worker_process_init; Celery's default 4 s for a new
        # child to report up is shorter than that on a busy host, and it would kill every
        # replacement child (after a crash) in a loop.
        worker_proc_alive_timeout=120.0,
        broker_connection_retry_on_startup=True,
        # Deploys: on SIGTERM let running tasks finish for a while, then requeue the rest.
        worker_soft_shutdown_timeout=60.0,
        worker_enable_soft_shutdown_on_idle=True,
        worker_send_task_events=task_events,
    )
    if time_limit is not None:
        conf["task_time_limit"] = time_limit
    return conf


def celery_app(
    main: str,
    broker: str,
    *,
    include: Sequence[str] = (),
    current: bool = False,
    **conf: Any,
) -> Celery:
    """A Celery app on ``broker`` configured by ``celery_conf(**conf)``: the only constructor.

    ``include`` names task modules a worker imports; ``current`` makes it the process's
    default app (Steno's worker app), which a send-only client never is.
    """
    app = Celery(main, broker=broker, include=list(include), set_as_current=current)
    app.conf.update(celery_conf(**conf))
    use_ssl = broker_use_ssl(broker)
    if use_ssl is not None:
        app.conf.broker_use_ssl = use_ssl
    return app


def broker_use_ssl(broker: str) -> dict[str, Any] | None:
    """Celery's ``broker_use_ssl`` for ``broker``: verify the server unless the URL says how.

    A ``rediss://`` URL without ``ssl_*`` options in its query would make kombu connect
    without checking the certificate at all (it only warns), where redis-py checks it
    against the system's CAs; this makes the broker check it the same way. A URL that
    carries its own options (``?ssl_ca_certs=...``) is left to them: kombu reads them from
    the URL. None for any other broker.
    """
    parts = urlsplit(broker)
    if parts.scheme != "rediss" or any(name.startswith("ssl_") for name in parse_qs(parts.query)):
        return None
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED}
