"""The one exception every step of weight import raises: find, verify, read or convert."""

from __future__ import annotations

__all__ = ["WeightsError"]


class WeightsError(Exception):
    """The weights could not be found, verified or converted."""
