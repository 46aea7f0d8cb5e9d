"""A scripted job handler for testing the queue on its own, in real worker subprocesses.

A worker runs it with ``--handler soulworker.testing.scripted_handler:create_scripted_handler``
(tests/acceptance/workers.py, bench/pickup_latency.py).

Each job's behaviour is read from the last segment of its ``storage_path``, so a test plans
every job when it inserts it:

==================  ===========================================================================
``ok``              succeed at once
``sleep-MS``        sleep MS milliseconds, then succeed
``steps-N-MS``      N steps of MS ms; a checkpoint after each; a resumed job skips done steps
``transient``       raise TransientJobError
``permanent``       raise PermanentJobError
``crash``           raise an unexpected RuntimeError
``hang``            sleep until stopped
``write-after-MS``  sleep MS ms, then write progress (to see a lost lease stop the writes)
``progress-N-MS``   N progress reports MS ms apart, no checkpoint, then succeed
``park-N-MS``       park the job for MS ms, N times over (the parks so far in the checkpoint),
                    then succeed; ``on_cancel`` records an ``on-cancel`` event
==================  ===========================================================================

Every event is recorded in ``test_handler_runs`` through a connection of its own (not fenced), so
tests can see what ran, in which process and attempt, even when the lease was lost.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from soulworker.errors import PermanentJobError, TransientJobError
from soulworker.jobs.context import JobContext
from soulworker.jobs.park import ParkJob
from soulworker.settings import Settings

RUNS_TABLE = """
create table if not exists test_handler_runs (
    job_id uuid not null,
    attempt integer not null,
    pid integer not null,
    event text not null,
    at timestamptz not null default clock_timestamp()
)
"""


class ScriptedHandler:
    def __init__(self, settings: Settings) -> None:
        self.database_url = settings.require_database_url()
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _record(self, ctx: JobContext, event: str) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.database_url, autocommit=True)
            await self._conn.execute(RUNS_TABLE)
        await self._conn.execute(
            "insert into test_handler_runs (job_id, attempt, pid, event) values (%s, %s, %s, %s)",
            (ctx.job.id, ctx.job.attempt, os.getpid(), event),
        )

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        script = ctx.job.storage_path.rsplit("/", 1)[-1]
        name, _, rest = script.partition("-")
        await self._record(ctx, "start")
        if name == "ok":
            pass
        elif name == "sleep":
            await asyncio.sleep(int(rest) / 1000)
        elif name == "steps":
            total, step_ms = (int(part) for part in rest.split("-"))
            done = int(ctx.checkpoint.get("steps_done", 0))
            for step in range(done, total):
                await asyncio.sleep(step_ms / 1000)
                await self._record(ctx, f"step-{step + 1}")
                await ctx.save_checkpoint(
                    {"steps_done": step + 1},
                    stage="parse",
                    percent=100 * (step + 1) / total,
                    label="Working",
                )
        elif name == "progress":
            total, step_ms = (int(part) for part in rest.split("-"))
            for step in range(total):
                await asyncio.sleep(step_ms / 1000)
                await ctx.progress("parse", 100 * (step + 1) / total, "Working")
        elif name == "park":
            times, park_ms = (int(part) for part in rest.split("-"))
            parks = int(ctx.checkpoint.get("parks", 0))
            if ctx.resumed_from_park:
                await self._record(ctx, f"resumed-{parks}")
            if parks < times:
                await ctx.progress("full_pass", 70, "Building deep memory")
                await self._record(ctx, f"parking-{parks + 1}")
                raise ParkJob(
                    datetime.now(UTC) + timedelta(milliseconds=park_ms),
                    f"test wait {parks + 1} of {times}",
                    {"parks": parks + 1},
                )
        elif name == "transient":
            raise TransientJobError("The storage service is busy.", code="test_transient")
        elif name == "permanent":
            raise PermanentJobError("The export is not a ChatGPT export.", code="test_permanent")
        elif name == "crash":
            raise RuntimeError("unexpected failure with private text inside")
        elif name == "hang":
            await asyncio.Event().wait()
        elif name == "write":
            await asyncio.sleep(int(rest.split("-")[-1]) / 1000)
            await self._record(ctx, "writing")
            await ctx.save_checkpoint({"late": True}, stage="parse", percent=50, label="Late")
        else:
            raise PermanentJobError(f"unknown test script {script!r}", code="test_unknown")
        await self._record(ctx, "end")
        return {"script": script, "pid": os.getpid()}

    async def on_cancel(self, ctx: JobContext) -> None:
        """The job is cancelled: record it, as a batch handler would cancel its batch."""
        await self._record(ctx, f"on-cancel-{ctx.checkpoint.get('parks', 0)}")

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()


def create_scripted_handler(settings: Settings) -> ScriptedHandler:
    return ScriptedHandler(settings)
