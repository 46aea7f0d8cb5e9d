"""An adaptive limiter: at most ``limit`` requests in flight, fewer while the provider throttles.

Embedding quotas are per account and per minute (Bedrock's on-demand tokens per minute, OpenAI's
requests and tokens per minute), shared with every other caller of the account, so no fixed
concurrency is right. The limiter works like TCP's congestion control (additive increase,
multiplicative decrease; docs/embeddings.md, "Throttling"):

* a throttled answer halves the requests allowed in flight (never below one) and pauses *every*
  caller for a while, doubling the pause on each throttle in a row (with jitter, up to
  ``max_pause_seconds``), so the whole process slows down, not just the one request;
* each run of ``allowed`` successes allows one more request in flight, up to ``limit``, and
  halves the pause.

The throttled request is then sent again: nothing is dropped. How long throttling may go on
before the caller gives up is the retry policy's business (``retry``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator

DEFAULT_MIN_PAUSE_SECONDS = 0.5
"""First pause after a throttle: long enough for a per-second token bucket to refill a little."""

DEFAULT_MAX_PAUSE_SECONDS = 30.0
"""Longest pause: quotas are per minute, so half a minute lets most of a window pass."""

PAUSE_JITTER_FRACTION = 0.2
"""Random extra on each pause, so several processes do not come back in lockstep."""


class AdaptiveLimiter:
    """Bounds the requests in flight and adapts the bound to throttling (module docstring)."""

    def __init__(
        self,
        limit: int,
        *,
        min_pause_seconds: float = DEFAULT_MIN_PAUSE_SECONDS,
        max_pause_seconds: float = DEFAULT_MAX_PAUSE_SECONDS,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.allowed = limit
        self.min_pause_seconds = min_pause_seconds
        self.max_pause_seconds = max_pause_seconds
        self.in_flight = 0
        self.max_in_flight = 0
        self.throttles = 0
        self._pause = 0.0
        self._resume_at = 0.0
        self._successes = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the ``allowed`` places for one request, after any pause in force."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < self.allowed)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._pause_over()
            yield
        finally:
            async with self._changed:
                self.in_flight -= 1
                self._changed.notify_all()

    async def _pause_over(self) -> None:
        """Return when no pause is in force; a throttle meanwhile may extend the pause."""
        while True:
            wait = self._resume_at - time.monotonic()
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    def throttled(self) -> None:
        """The provider asked us to slow down: fewer in flight and a pause for everyone."""
        self.throttles += 1
        self.allowed = max(1, self.allowed // 2)
        self._successes = 0
        self._pause = min(self.max_pause_seconds, max(self.min_pause_seconds, self._pause * 2))
        pause = self._pause * (1.0 + random.uniform(0.0, PAUSE_JITTER_FRACTION))
        self._resume_at = max(self._resume_at, time.monotonic() + pause)

    def succeeded(self) -> None:
        """A request got its answer (call it inside the slot): after ``allowed`` of them, one
        more may be in flight."""
        self._successes += 1
        if self._successes >= self.allowed:
            self._successes = 0
            if self.allowed < self.limit:
                # Waiters see the new bound when this request's slot is released.
                self.allowed += 1
            self._pause = self._pause / 2 if self._pause >= self.min_pause_seconds * 2 else 0.0
