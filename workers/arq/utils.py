"""Time conversions shared by the client and the worker (arq's conventions: epoch ms)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

SecondsTimedelta = int | float | timedelta


def timestamp_ms() -> int:
    """Now, in epoch milliseconds."""
    return round(time.time() * 1000)


def to_unix_ms(dt: datetime) -> int:
    """A datetime (naive ones are taken as local time, as arq does) in epoch milliseconds."""
    return round(dt.timestamp() * 1000)


def ms_to_datetime(ms: int | float) -> datetime:
    """Epoch milliseconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def to_ms(value: SecondsTimedelta | None) -> int | None:
    """Seconds (or a timedelta) in whole milliseconds; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    return round(value * 1000)


def to_seconds(value: SecondsTimedelta | None) -> float | None:
    """Seconds (or a timedelta) as float seconds; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)
