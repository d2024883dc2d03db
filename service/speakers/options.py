"""Checking a submission's diarization options into what the job row stores.

``diarize`` switches it on; ``num_speakers`` fixes the count, or ``min_speakers`` /
``max_speakers`` bound the automatic choice (each 1-10, min <= max). Without ``diarize`` the
count options are refused rather than ignored, so a typo can't silently turn diarization off.
"""

from __future__ import annotations

from typing import Any

from service.core.errors import ValidationFailed

__all__ = ["MAX_SPEAKERS", "parse_diarization"]

MAX_SPEAKERS = 10
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_diarization(
    diarize: bool | str | None,
    *,
    num_speakers: int | str | None = None,
    min_speakers: int | str | None = None,
    max_speakers: int | str | None = None,
) -> dict[str, Any] | None:
    """The ``jobs.diarization`` value for these options (None: not diarized).

    Raises ``ValidationFailed`` for a count outside 1-10, min > max, or counts without diarize.
    """
    counts = {
        "num_speakers": _count(num_speakers, "num_speakers"),
        "min_speakers": _count(min_speakers, "min_speakers"),
        "max_speakers": _count(max_speakers, "max_speakers"),
    }
    if not _flag(diarize):
        if any(value is not None for value in counts.values()):
            raise ValidationFailed("num_speakers, min_speakers and max_speakers need diarize=true")
        return None
    if counts["num_speakers"] is not None and (
        counts["min_speakers"] is not None or counts["max_speakers"] is not None
    ):
        raise ValidationFailed("give num_speakers or min_speakers/max_speakers, not both")
    low, high = counts["min_speakers"], counts["max_speakers"]
    if low is not None and high is not None and low > high:
        raise ValidationFailed("min_speakers must not exceed max_speakers")
    return {name: value for name, value in counts.items() if value is not None}


def _flag(value: bool | str | None) -> bool:
    if not isinstance(value, str):
        return bool(value)
    flag = value.strip().lower()
    if flag not in _TRUE | _FALSE:
        raise ValidationFailed("diarize must be true or false")
    return flag in _TRUE


def _count(value: int | str | None, name: str) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValidationFailed(f"{name} must be a whole number from 1 to {MAX_SPEAKERS}")
    try:
        number = int(value)
    except ValueError:
        raise ValidationFailed(f"{name} must be a whole number from 1 to {MAX_SPEAKERS}") from None
    if not 1 <= number <= MAX_SPEAKERS:
        raise ValidationFailed(f"{name} must be from 1 to {MAX_SPEAKERS} (got {number})")
    return number
