"""Cron jobs (arq's ``cron``): a worker enqueues each run as a deferred job with a unique id.

The schedule arithmetic is arq's (``next_cron``), so a schedule means the same here. Each
run is enqueued with the id ``<name>:<due ms>`` when ``unique``: however many workers serve
the queue, the uniqueness rule of ``enqueue_job`` lets exactly one of them enqueue it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from workers.arq.utils import SecondsTimedelta, to_seconds

OptionType = None | set[int] | int
WeekdayOptionType = OptionType | str
WEEKDAYS = ("mon", "tues", "wed", "thurs", "fri", "sat", "sun")
WorkerCoroutine = Callable[..., Coroutine[Any, Any, Any]]


@dataclass
class _Options:
    month: OptionType
    day: OptionType
    weekday: OptionType
    hour: OptionType
    minute: OptionType
    second: OptionType
    microsecond: int


def next_cron(
    previous_dt: datetime,
    *,
    month: OptionType = None,
    day: OptionType = None,
    weekday: WeekdayOptionType = None,
    hour: OptionType = None,
    minute: OptionType = None,
    second: OptionType = 0,
    microsecond: int = 123_456,
) -> datetime:
    """The first datetime after ``previous_dt`` that matches every given field."""
    dt = previous_dt + timedelta(seconds=1)
    if isinstance(weekday, str):
        weekday = WEEKDAYS.index(weekday.lower())
    options = _Options(month, day, weekday, hour, minute, second, microsecond)
    while True:
        next_dt = _next_candidate(dt, options)
        if next_dt is None:
            return dt
        dt = next_dt


def _next_candidate(dt: datetime, options: _Options) -> datetime | None:
    for field, wanted in dataclasses.asdict(options).items():
        if wanted is None:
            continue
        value = dt.weekday() if field == "weekday" else getattr(dt, field)
        if isinstance(wanted, int):
            mismatch = value != wanted
        elif isinstance(wanted, set | list | tuple):
            mismatch = value not in wanted
        else:
            raise RuntimeError(wanted)
        if not mismatch:
            continue
        micro = max(dt.microsecond - options.microsecond, 0)
        if field == "month":
            if dt.month == 12:
                return datetime(dt.year + 1, 1, 1, tzinfo=dt.tzinfo)
            return datetime(dt.year, dt.month + 1, 1, tzinfo=dt.tzinfo)
        if field in ("day", "weekday"):
            return (
                dt
                + timedelta(days=1)
                - timedelta(hours=dt.hour, minutes=dt.minute, seconds=dt.second, microseconds=micro)
            )
        if field == "hour":
            return (
                dt
                + timedelta(hours=1)
                - timedelta(minutes=dt.minute, seconds=dt.second, microseconds=micro)
            )
        if field == "minute":
            return dt + timedelta(minutes=1) - timedelta(seconds=dt.second, microseconds=micro)
        if field == "second":
            return dt + timedelta(seconds=1) - timedelta(microseconds=micro)
        return dt + timedelta(microseconds=options.microsecond - dt.microsecond)
    return None


@dataclass
class CronJob:
    """A scheduled coroutine (made by ``cron``)."""

    name: str
    coroutine: WorkerCoroutine
    month: OptionType
    day: OptionType
    weekday: WeekdayOptionType
    hour: OptionType
    minute: OptionType
    second: OptionType
    microsecond: int
    run_at_startup: bool
    unique: bool
    job_id: str | None
    timeout_s: float | None
    keep_result_s: float | None
    keep_result_forever: bool | None
    max_tries: int | None
    next_run: datetime | None = None

    def calculate_next(self, prev_run: datetime) -> None:
        """Set ``next_run`` to the first matching time after ``prev_run``."""
        self.next_run = next_cron(
            prev_run,
            month=self.month,
            day=self.day,
            weekday=self.weekday,
            hour=self.hour,
            minute=self.minute,
            second=self.second,
            microsecond=self.microsecond,
        )


def cron(
    coroutine: WorkerCoroutine,
    *,
    name: str | None = None,
    month: OptionType = None,
    day: OptionType = None,
    weekday: WeekdayOptionType = None,
    hour: OptionType = None,
    minute: OptionType = None,
    second: OptionType = 0,
    microsecond: int = 123_456,
    run_at_startup: bool = False,
    unique: bool = True,
    job_id: str | None = None,
    timeout: SecondsTimedelta | None = None,
    keep_result: float | None = 0,
    keep_result_forever: bool | None = False,
    max_tries: int | None = 1,
) -> CronJob:
    """A job a worker enqueues at (or just after) every time matching the fields (arq's API).

    Fields left ``None`` match anything; ``second`` defaults to 0. With ``unique`` (the
    default) each run happens once however many workers serve the queue.
    """
    if not asyncio.iscoroutinefunction(coroutine):
        raise RuntimeError(f"{coroutine} is not a coroutine function")
    return CronJob(
        name or "cron:" + coroutine.__qualname__,
        coroutine,
        month,
        day,
        weekday,
        hour,
        minute,
        second,
        microsecond,
        run_at_startup,
        unique,
        job_id,
        to_seconds(timeout),
        to_seconds(keep_result),
        keep_result_forever,
        max_tries,
    )
