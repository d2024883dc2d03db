"""How every Steno process logs: plain text, or one JSON object per line with the job's context.

``STENO_LOG_FORMAT=json`` turns every process to JSON lines: the API (``configure_logging``
from ``create_app``, and granian's own lines through ``granian_log_config``), the workers
and beat (``install_celery_logging``, hooked into Celery's ``after_setup_logger`` and
``after_setup_task_logger`` signals). Each line has ``ts``, ``level``, ``logger``, ``msg``,
``process`` (api, worker-io, worker-gpu, beat), ``pid`` and, where known, ``job_id``,
``task_id``, ``attempt`` and ``queue`` (``exc`` with a traceback).

The context lives in a context variable: Celery's task signals bind a task's id, queue and
job around every task, the flows add what they learn (the claim's attempt), and asyncio
tasks and loop callbacks (the IO worker's loop, a GPU child's database loop) inherit it from
the code that scheduled them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from service.core.routing import TaskName
from service.core.settings import Settings

__all__ = [
    "ContextFilter",
    "JsonFormatter",
    "bind",
    "bound",
    "configure_logging",
    "granian_log_config",
    "install_celery_logging",
    "log_context",
    "set_process",
]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT_FIELDS = ("job_id", "task_id", "attempt", "queue")
# Steno's tasks whose first argument is a job id.
JOB_TASKS = frozenset({TaskName.FETCH_AUDIO.value, TaskName.TRANSCRIBE.value})

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: ContextVar[Mapping[str, Any]] = ContextVar("steno_log_context", default=_EMPTY)
_process = "steno"


def set_process(name: str) -> None:
    """Name this process's role on its log lines (api, worker-io, worker-gpu, beat)."""
    global _process
    _process = name


def log_context() -> Mapping[str, Any]:
    """The fields bound here (and inherited), for log lines."""
    return _context.get()


def bind(**fields: Any) -> Token[Mapping[str, Any]]:
    """Add fields to the context of the current task (thread, greenlet or asyncio task)."""
    return _context.set(MappingProxyType({**_context.get(), **fields}))


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Fields bound for the block only."""
    token = bind(**fields)
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the bound context onto each record, in the thread that logs it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always lets the record through."""
        if not hasattr(record, "steno_context"):
            context, args = _context.get(), record.args
            if "task_id" not in context and isinstance(args, Mapping) and "id" in args:
                # Celery's own lines about a task ("Task x[id] received") carry its id.
                context = {**context, "task_id": str(args["id"])}
            record.steno_context = context
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record (``process`` is the role named here or by ``set_process``)."""

    def __init__(self, process: str | None = None, **_: Any) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "process": self.process or _process,
            "pid": record.process,
        }
        context = getattr(record, "steno_context", None)
        entry.update(_context.get() if context is None else context)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def _formatter(settings: Settings, process: str | None = None) -> logging.Formatter:
    if settings.log_format == "json":
        return JsonFormatter(process)
    return logging.Formatter(TEXT_FORMAT)


def configure_logging(settings: Settings, process: str, *, exclusive: bool = False) -> None:
    """Log every record of this process to stderr in the configured format (the API's hook).

    Replaces the handler this function installed before, and with ``exclusive`` every other
    root handler too; otherwise handlers others added (a test runner's capture) stay.
    """
    set_process(process)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if exclusive or getattr(h, "steno", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.steno = True  # type: ignore[attr-defined]
    handler.setFormatter(_formatter(settings))
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())


def granian_log_config(process: str = "api") -> dict[str, Any]:
    """granian's ``--log-config`` for JSON lines: its own formatters replaced by ours."""
    formatter = {"()": f"{__name__}.JsonFormatter", "process": process}
    return {"formatters": {"generic": formatter, "access": formatter}}


def install_celery_logging(settings: Settings) -> None:
    """Hook Steno's logging into Celery (workers and beat): formats, and the task context.

    Celery still sets its handlers up (and redirects stdout to them); with ``json`` each
    handler's formatter is then replaced, lines before that (Python warnings at start-up)
    are JSON already, and the one line Celery writes past logging (``worker: Warm shutdown``,
    from its signal handler) is written as JSON too. Every task binds its id, queue and (for
    a job's task) the job id while it runs.
    """
    import celery.apps.worker
    from celery.signals import (
        after_setup_logger,
        after_setup_task_logger,
        task_postrun,
        task_prerun,
    )

    if settings.log_format == "json":
        configure_logging(settings, _process, exclusive=True)
        logging.captureWarnings(True)
        after_setup_logger.connect(_json_handlers, weak=False)
        after_setup_task_logger.connect(_json_handlers, weak=False)
        celery.apps.worker.safe_say = _say_json
    task_prerun.connect(_bind_task, weak=False)
    task_postrun.connect(_unbind_task, weak=False)


def _json_handlers(logger: logging.Logger | None = None, **_: Any) -> None:
    from celery.utils.log import get_multiprocessing_logger

    for each in (logger, get_multiprocessing_logger()):
        for handler in getattr(each, "handlers", ()):
            handler.setFormatter(JsonFormatter())
            if not any(isinstance(f, ContextFilter) for f in handler.filters):
                handler.addFilter(ContextFilter())


def _say_json(msg: str, f: Any = sys.__stderr__) -> None:
    # Celery calls this from signal handlers: no logging (its locks), one raw write.
    entry = {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": "WARNING",
        "logger": "celery.apps.worker",
        "msg": msg,
        "process": _process,
        "pid": os.getpid(),
    }
    with contextlib.suppress(Exception):
        os.write(f.fileno(), (json.dumps(entry) + "\n").encode())


def _bind_task(task_id: str | None = None, task: Any = None, args: Any = None, **_: Any) -> None:
    request = getattr(task, "request", None)
    delivery = getattr(request, "delivery_info", None) or {}
    fields: dict[str, Any] = {"task_id": task_id}
    queue = delivery.get("routing_key") or delivery.get("queue")
    if queue:
        fields["queue"] = queue
    if getattr(task, "name", None) in JOB_TASKS and args:
        fields["job_id"] = str(args[0])
    _context.set(MappingProxyType(fields))


def _unbind_task(**_: Any) -> None:
    _context.set(_EMPTY)
