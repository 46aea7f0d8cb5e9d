"""The one retry policy for model calls (tenacity), and what it considers worth retrying.

The SDK's own retries are off (``max_retries=0``): two retry layers multiply their attempts and
the SDK honours ``retry-after`` without any cap. Everything is retried here, in one place:

* transient API failures: 408, 409, 429 (but not a spend limit), 5xx including 529
  "overloaded", dropped connections and timeouts. A ``x-should-retry: false`` header from the
  API is obeyed.

These are the only failures after which the *same* request is sent again. Nothing else is
retried here: an unusable answer is asked again by the client with feedback (a different
request; see ``soulworker.llm.client``), and refusals, truncation (the caller decides how to
shrink), auth and spend-limit errors and invalid requests are not retried at all.

Waits are exponential with full jitter (``initial * 2**n`` up to ``backoff_max``, a uniform
draw below it), except when the API says how long to wait (``retry-after-ms``, else
``retry-after`` in seconds or as an HTTP date): then that, plus up to 10 % jitter so parallel
calls do not return in lockstep, never more than ``retry_after_cap``. Attempts stop at
``max_attempts`` or before a wait would carry the call past ``max_total_seconds``.

Tests make the waits tiny by injecting ``sleep`` (and, if needed, ``wait``) into the policy.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tenacity import AsyncRetrying, RetryCallState
from tenacity.retry import retry_if_exception
from tenacity.stop import stop_after_attempt, stop_before_delay
from tenacity.wait import WaitBaseT, wait_random_exponential

from soulworker.llm.errors import is_spend_limit_error

# Six requests ride out a typical overload burst (about 1+2+4+8+16 s of backoff) without
# holding a job's slot for long; beyond that the job goes back to the queue instead.
DEFAULT_MAX_ATTEMPTS = 6
# A call that has been failing for five minutes is an outage: give the job back to the queue,
# whose own backoff is longer and which frees the worker for other jobs meanwhile.
DEFAULT_MAX_TOTAL_SECONDS = 300.0
# First backoff step; the API's rate limits refill within seconds.
DEFAULT_BACKOFF_INITIAL_SECONDS = 1.0
# Longest backoff step without a retry-after hint.
DEFAULT_BACKOFF_MAX_SECONDS = 30.0
# The API may ask for minutes (a spend-like 429); we wait at most this long per hint, so a
# huge hint turns into a few capped waits and then a transient failure.
DEFAULT_RETRY_AFTER_CAP_SECONDS = 60.0
# Upward jitter on a server-provided wait, as a fraction of it.
RETRY_AFTER_JITTER_FRACTION = 0.1

# HTTP statuses the API documents as transient (the same set the SDK retries).
RETRYABLE_STATUS_CODES = frozenset({408, 409, 429})
RETRYABLE_STATUS_FLOOR = 500

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """Parameters of the retry policy; see the module docstring for what they mean.

    ``sleep`` is how waits are spent (``asyncio.sleep``; tests pass a recorder that does not
    sleep); ``wait`` replaces the wait strategy entirely when given.
    """

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_total_seconds: float = DEFAULT_MAX_TOTAL_SECONDS
    backoff_initial_seconds: float = DEFAULT_BACKOFF_INITIAL_SECONDS
    backoff_max_seconds: float = DEFAULT_BACKOFF_MAX_SECONDS
    retry_after_cap_seconds: float = DEFAULT_RETRY_AFTER_CAP_SECONDS
    sleep: Sleep = field(default=asyncio.sleep, compare=False)
    wait: WaitBaseT | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        for name in (
            "max_total_seconds",
            "backoff_initial_seconds",
            "backoff_max_seconds",
            "retry_after_cap_seconds",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    def retrying(
        self,
        *,
        before_sleep: Callable[[RetryCallState], Awaitable[None] | None] | None = None,
    ) -> AsyncRetrying:
        """A fresh tenacity controller for one request and its transport retries.

        It re-raises the last exception when it gives up (``reraise=True``), never
        ``RetryError``.
        """
        return AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts) | stop_before_delay(self.max_total_seconds),
            wait=self.wait if self.wait is not None else ModelCallWait(self),
            retry=retry_if_exception(is_retryable_api_error),
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )


def is_retryable_api_error(exc: BaseException) -> bool:
    """True for an SDK failure that another request may not hit (load, outage, network)."""
    import anthropic  # loaded already wherever a model call fails (see llm.errors)

    if isinstance(exc, anthropic.APIConnectionError):  # includes APITimeoutError
        return True
    if not isinstance(exc, anthropic.APIStatusError):
        return False
    if is_spend_limit_error(exc):
        return False
    if exc.response.headers.get("x-should-retry") == "false":
        return False
    return exc.status_code in RETRYABLE_STATUS_CODES or exc.status_code >= RETRYABLE_STATUS_FLOOR


def retry_after_seconds(exc: BaseException | None, *, now: float | None = None) -> float | None:
    """The wait the API asked for on a failed response, in seconds, or ``None``.

    Reads ``retry-after-ms`` first (more precise), then ``retry-after`` as seconds, then as an
    HTTP date relative to ``now`` (``time.time()``). Negative or unparsable values give
    ``None``, as does an exception without a response.
    """
    import anthropic  # loaded already wherever a model call fails (see llm.errors)

    if not isinstance(exc, anthropic.APIStatusError):
        return None
    headers = exc.response.headers
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            value = -1.0
        if value >= 0:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        value = email.utils.mktime_tz(parsed) - (time.time() if now is None else now)
    return value if value >= 0 else None


class ModelCallWait:
    """The default wait strategy: the API's hint (capped) after a rate limit or overload that
    carries one, exponential backoff with full jitter otherwise."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._backoff = wait_random_exponential(
            multiplier=policy.backoff_initial_seconds, max=policy.backoff_max_seconds
        )

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        hinted = retry_after_seconds(exc)
        if hinted is not None:
            jittered = hinted * (1.0 + random.uniform(0.0, RETRY_AFTER_JITTER_FRACTION))
            return min(jittered, self._policy.retry_after_cap_seconds)
        return float(self._backoff(retry_state))
