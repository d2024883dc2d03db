"""How workers retry transient failures: exponential backoff with full jitter, bounded."""

from __future__ import annotations

import random

# Retries for a task whose database was unreachable before it gives up (about 4 minutes).
TRANSIENT_RETRIES = 8


def backoff(retries: int) -> float:
    """Seconds before retry number ``retries + 1``: up to 1, 2, 4 ... 60 s, jittered."""
    return random.uniform(0.5, 1.0) * min(60.0, 2.0**retries)
