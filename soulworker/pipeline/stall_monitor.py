"""Measures how long the event loop was kept from running, for benchmarks (off by default).

A task sleeps ``interval`` seconds at a time and records how much later than asked it woke up:
that lateness is the time the loop spent in something that did not yield (plus scheduling
noise). The largest lateness while a job ran is what matters: heartbeats and every other job of
the process wait that long. Enabled by ``SOULWORKER_LOOP_STALL_MONITOR``; the benchmarks of
hostile uploads read it from the ``event loop stall`` log line and the job result.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

DEFAULT_INTERVAL_SECONDS = 0.01
"""Fine enough to see a stall of a few tens of milliseconds; 100 wake-ups a second cost nothing
measurable next to a parse."""


class StallMonitor:
    """The largest lateness of a periodic wake-up while ``watching``."""

    def __init__(self, interval_seconds: float = DEFAULT_INTERVAL_SECONDS) -> None:
        self.interval_seconds = interval_seconds
        self.max_stall_seconds = 0.0
        self.wakeups = 0

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(self.interval_seconds)
            late = loop.time() - asked - self.interval_seconds
            self.wakeups += 1
            self.max_stall_seconds = max(self.max_stall_seconds, late)

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[StallMonitor]:
        task = asyncio.create_task(self._run(), name="loop-stall-monitor")
        try:
            yield self
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
