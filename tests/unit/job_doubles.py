"""Small doubles for the queue's in-memory tests: a handler made of one coroutine function, and
settings whose intervals are milliseconds (docs/queue.md, "Two layers of tests")."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from soulworker.jobs.context import JobContext
from soulworker.settings import Settings

Work = Callable[[JobContext], Awaitable[dict[str, Any]]]


class FunctionHandler:
    """Runs ``work`` for every job, and records which jobs it was given and how each ended."""

    def __init__(self, work: Work) -> None:
        self.work = work
        self.started: list[uuid.UUID] = []
        self.ended: dict[uuid.UUID, str] = {}

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        self.started.append(ctx.job.id)
        try:
            result = await self.work(ctx)
        except BaseException as exc:
            self.ended[ctx.job.id] = type(exc).__name__
            raise
        self.ended[ctx.job.id] = "returned"
        return result

    async def aclose(self) -> None:
        return None


def fast_settings(**changes: Any) -> Settings:
    """The daemon's defaults with a lease of 0.2 s (a heartbeat every 50 ms), a 10 ms poll,
    a 0.2 s shutdown budget and unthrottled progress; retries keep their real delays."""
    defaults: dict[str, Any] = {
        "lease_seconds": 0.2,
        "poll_seconds": 0.01,
        "shutdown_seconds": 0.2,
        "progress_interval_seconds": 0.0,
    }
    return Settings().replace(**{**defaults, **changes})
