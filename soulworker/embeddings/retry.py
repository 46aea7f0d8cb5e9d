"""The retry policy for embedding requests (tenacity), like the model client's (docs/embeddings.md).

It also carries the limiter's pauses after throttling (``pacing``), so one object says how
patient the embedder is.

Two kinds of transient failure, treated differently:

* **Throttling** (HTTP 429, ``ThrottlingException``) is the provider pacing us, not failing: the
  request is sent again as soon as the limiter (``pacing``) lets it, for as long as
  ``throttle_budget_seconds`` allows, however many attempts that takes. Chunks are never dropped
  for throttling; a job fails for it only when the budget (the job's time limit) runs out.
* **Outages** (5xx, timeouts, dropped connections) get exponential backoff with full jitter and at
  most ``max_attempts`` tries within ``max_total_seconds``, as model calls do; after that the job
  goes back to the queue, whose own backoff is longer.

Permanent errors (refused key, access denied, refused dimension, a bad request) are never retried.
Tests make the waits tiny by passing ``sleep`` and small backoffs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tenacity import AsyncRetrying, RetryCallState
from tenacity.retry import retry_if_exception_type
from tenacity.wait import wait_random_exponential

from soulworker.embeddings.errors import EmbeddingThrottled, EmbeddingUnavailable
from soulworker.embeddings.pacing import DEFAULT_MAX_PAUSE_SECONDS, DEFAULT_MIN_PAUSE_SECONDS

DEFAULT_MAX_ATTEMPTS = 6
"""Tries for one request failing with an outage: 1+2+4+8+16 s of backoff rides out a blip."""

DEFAULT_MAX_TOTAL_SECONDS = 300.0
"""An outage longer than five minutes is handed back to the queue."""

DEFAULT_THROTTLE_BUDGET_SECONDS = 3600.0
"""How long one request may go on being throttled. The factory sets it to the job's time limit
(``SOULWORKER_JOB_TIMEOUT_SECONDS``), so a job slowed by a busy account goes on until the limit
and only the limit ends it; this default matches the limit's own default."""

DEFAULT_BACKOFF_INITIAL_SECONDS = 1.0
DEFAULT_BACKOFF_MAX_SECONDS = 30.0

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class EmbedRetryPolicy:
    """Parameters of the policy; the module docstring says what they mean."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_total_seconds: float = DEFAULT_MAX_TOTAL_SECONDS
    throttle_budget_seconds: float = DEFAULT_THROTTLE_BUDGET_SECONDS
    backoff_initial_seconds: float = DEFAULT_BACKOFF_INITIAL_SECONDS
    backoff_max_seconds: float = DEFAULT_BACKOFF_MAX_SECONDS
    throttle_pause_initial_seconds: float = DEFAULT_MIN_PAUSE_SECONDS
    throttle_pause_max_seconds: float = DEFAULT_MAX_PAUSE_SECONDS
    sleep: Sleep = field(default=asyncio.sleep, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def retrying(
        self, *, before_sleep: Callable[[RetryCallState], None] | None = None
    ) -> AsyncRetrying:
        """A fresh controller for one request; it re-raises the last error when it gives up."""
        return AsyncRetrying(
            stop=_Stop(self),
            wait=_Wait(self),
            retry=retry_if_exception_type((EmbeddingThrottled, EmbeddingUnavailable)),
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )


class _Stop:
    """Throttling stops at the throttle budget; outages at ``max_attempts`` or the time limit."""

    def __init__(self, policy: EmbedRetryPolicy) -> None:
        self._policy = policy
        self._outages = 0

    def __call__(self, state: RetryCallState) -> bool:
        elapsed = state.seconds_since_start or 0.0
        if _last_error(state) is EmbeddingThrottled:
            return elapsed >= self._policy.throttle_budget_seconds
        self._outages += 1
        return (
            self._outages >= self._policy.max_attempts or elapsed >= self._policy.max_total_seconds
        )


class _Wait:
    """No wait of its own after throttling (the limiter's pause holds every caller); exponential
    backoff with full jitter after an outage."""

    def __init__(self, policy: EmbedRetryPolicy) -> None:
        self._backoff = wait_random_exponential(
            multiplier=policy.backoff_initial_seconds, max=policy.backoff_max_seconds
        )

    def __call__(self, state: RetryCallState) -> float:
        if _last_error(state) is EmbeddingThrottled:
            return 0.0
        return float(self._backoff(state))


def _last_error(state: RetryCallState) -> type[BaseException] | None:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    if isinstance(error, EmbeddingThrottled):
        return EmbeddingThrottled
    return None if error is None else type(error)
