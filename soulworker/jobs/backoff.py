"""When a failed attempt runs again: capped exponential backoff with jitter.

Attempt 1 failing waits about ``base``, attempt 2 about ``2 × base``, and so on, never more than
``cap``. The ±25% jitter spreads retries of jobs that failed together (an API outage fails every
running job at once) so they do not all come back in the same second.
"""

from __future__ import annotations

import random

JITTER = 0.25


def retry_delay(
    attempt: int, base_seconds: float, cap_seconds: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait before the attempt after ``attempt`` (1-based) runs."""
    exponent = max(attempt - 1, 0)
    # Cap the exponent first: 2 ** 1000 is a valid int but an absurd float.
    raw = base_seconds * (2 ** min(exponent, 32))
    spread = (rng or random).uniform(1 - JITTER, 1 + JITTER)
    return float(max(0.0, min(cap_seconds, raw * spread)))
