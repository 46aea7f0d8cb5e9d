from __future__ import annotations

import random

from soulworker.jobs.backoff import JITTER, retry_delay


def test_delay_doubles_per_attempt_within_jitter() -> None:
    rng = random.Random(7)
    for attempt, nominal in [(1, 30), (2, 60), (3, 120), (4, 240)]:
        for _ in range(50):
            delay = retry_delay(attempt, 30, 10_000, rng)
            assert nominal * (1 - JITTER) <= delay <= nominal * (1 + JITTER)


def test_delay_is_capped() -> None:
    rng = random.Random(1)
    assert all(retry_delay(attempt, 30, 1800, rng) <= 1800 for attempt in range(1, 200))
    assert retry_delay(10_000, 30, 1800, rng) <= 1800


def test_jitter_spreads_jobs_that_failed_together() -> None:
    rng = random.Random(3)
    delays = {round(retry_delay(2, 30, 1800, rng), 3) for _ in range(20)}
    assert len(delays) > 15


def test_zero_base_means_retry_at_once() -> None:
    assert retry_delay(3, 0, 0) == 0
