"""Checking a submission's diarization options into what the job row stores.

``diarize`` switches it on; ``num_speakers`` fixes the count, or ``min_speakers`` /
``max_speakers`` bound the automatic choice (each 1-10, min <= max). Without ``diarize`` the
count options are refused rather than ignored, so a typo can't silently turn diarization off.
``known_speakers`` (names of the owner's enrolled speakers) implies ``diarize``; with an
explicit ``diarize=false`` it is refused. The names are resolved to speakers at submit
(``service.speakers.services.resolve_known``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from service.core.errors import ValidationFailed

__all__ = ["MAX_SPEAKERS", "check_speaker_name", "parse_diarization", "parse_known_speakers"]

MAX_SPEAKERS = 10
MAX_NAME_CHARS = 64
# Letters and digits of any script, then also space, ``_ - . '``: nothing that would break
# the text (``name: ...``), VTT (``<v name>``) or SRT renderings, or a URL path segment.
_NAME = re.compile(r"[^\W_][\w .'-]*")
# The anonymous labels: a known speaker may not pass for one.
_ANONYMOUS = re.compile(r"speaker_\d+", re.IGNORECASE)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def check_speaker_name(value: str) -> str:
    """A speaker's name, stripped: 1-64 letters, digits, spaces and ``_ - . '``, starting
    with a letter or digit, and not ``SPEAKER_<n>``; raises ``ValidationFailed`` otherwise."""
    name = value.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise ValidationFailed(f"a speaker's name has 1 to {MAX_NAME_CHARS} characters")
    if not _NAME.fullmatch(name):
        raise ValidationFailed(
            f"speaker name {name!r} may hold letters, digits, spaces and _ - . ' only, "
            "starting with a letter or digit"
        )
    if _ANONYMOUS.fullmatch(name):
        raise ValidationFailed(
            f"speaker name {name!r} looks like the label of an anonymous speaker (SPEAKER_<n>)"
        )
    return name


def parse_known_speakers(values: str | Iterable[str] | None) -> list[str]:
    """The names a submit gave in ``known_speakers``: a list (JSON, or a repeated form field)
    whose items may each be comma-separated; checked, without duplicates, in order."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValidationFailed("known_speakers is a list of names")
        for part in item.split(","):
            if not part.strip():
                continue
            name = check_speaker_name(part)
            if name not in names:
                names.append(name)
    if len(names) > MAX_SPEAKERS:
        raise ValidationFailed(f"known_speakers names at most {MAX_SPEAKERS} speakers")
    return names


def parse_diarization(
    diarize: bool | str | None,
    *,
    num_speakers: int | str | None = None,
    min_speakers: int | str | None = None,
    max_speakers: int | str | None = None,
    known_speakers: str | Iterable[str] | None = None,
) -> dict[str, Any] | None:
    """The ``jobs.diarization`` value for these options (None: not diarized).

    Raises ``ValidationFailed`` for a count outside 1-10, min > max, counts without diarize,
    a bad speaker name, or ``known_speakers`` with ``diarize=false``. The names come back
    as ``known_speakers``, not yet checked against the owner's speakers.
    """
    counts = {
        "num_speakers": _count(num_speakers, "num_speakers"),
        "min_speakers": _count(min_speakers, "min_speakers"),
        "max_speakers": _count(max_speakers, "max_speakers"),
    }
    names = parse_known_speakers(known_speakers)
    if names:
        if _given(diarize) and not _flag(diarize):
            raise ValidationFailed("known_speakers needs diarization; don't send diarize=false")
        diarize = True
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
    options: dict[str, Any] = {name: value for name, value in counts.items() if value is not None}
    if names:
        options["known_speakers"] = names
    return options


def _given(value: bool | str | None) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


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
