"""``Worker.run_one``: one named job, worked with the real runner on a real Postgres.

It claims that job alone (docs/queue.md, "One named job"): other jobs, due or not, are never
claimed, released or updated; a job it cannot claim is refused with the reason; a stop request
releases the job at its next checkpoint, as in the claim loop, and the job stays set aside.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from soulworker import db
from soulworker.jobs.context import JobContext
from soulworker.jobs.errors import JobNotClaimable
from soulworker.jobs.store import JobStore
from soulworker.jobs.worker import Worker
from soulworker.settings import Settings

pytestmark = pytest.mark.db

Conn = psycopg.AsyncConnection[DictRow]
SET_ASIDE = "9999-01-01 00:00:00+00"


class RecordingHandler:
    """Records the jobs it runs; with ``checkpoints``, saves one every 20 ms until stopped."""

    def __init__(self, *, checkpoints: bool = False) -> None:
        self.ran: list[uuid.UUID] = []
        self.checkpoints = checkpoints
        self.started = asyncio.Event()

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        self.ran.append(ctx.job.id)
        self.started.set()
        step = 0
        while self.checkpoints:
            step += 1
            await ctx.save_checkpoint({"step": step}, stage="parse", percent=30, label="Working")
            await asyncio.sleep(0.02)
        return {"ran": True}

    async def aclose(self) -> None:
        pass


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[JobStore]:
    pool: AsyncConnectionPool[Conn] = db.create_pool(settings, "test named job", max_size=4)
    await pool.open(wait=True)
    try:
        yield JobStore(pool, lease_seconds=30)
    finally:
        await pool.close()


async def insert_job(conn: Conn, **columns: Any) -> uuid.UUID:
    user = uuid.uuid4()
    values = {"user_id": user, "storage_path": f"imports/{user}/export.zip", **columns}
    names = ", ".join(values)
    placeholders = ", ".join(f"%({name})s" for name in values)
    cur = await conn.execute(
        f"insert into import_jobs ({names}) values ({placeholders}) returning id", values
    )
    row = await cur.fetchone()
    assert row is not None
    job_id: uuid.UUID = row["id"]
    return job_id


async def job_row(conn: Conn, job_id: uuid.UUID) -> dict[str, Any]:
    cur = await conn.execute("select * from import_jobs where id = %s", (job_id,))
    row = await cur.fetchone()
    assert row is not None
    return dict(row)


def a_worker(settings: Settings, store: JobStore, handler: RecordingHandler) -> Worker:
    return Worker(
        settings.replace(shutdown_seconds=5.0), store, handler, db.worker_identity(), listen=False
    )


async def test_run_one_works_the_named_job_alone(
    conn: Conn, store: JobStore, settings: Settings
) -> None:
    due = await insert_job(conn, priority=2**31 - 1)
    aside = await insert_job(conn, run_after=SET_ASIDE, max_attempts=1)
    due_before = await job_row(conn, due)
    handler = RecordingHandler()
    worker = a_worker(settings, store, handler)

    await asyncio.wait_for(worker.run_one(aside), timeout=20)

    assert handler.ran == [aside]
    row = await job_row(conn, aside)
    assert (row["status"], row["attempt"], row["result"]["ran"]) == ("succeeded", 1, True)
    assert await job_row(conn, due) == due_before, "the other job is untouched"
    assert (worker.stats.claimed, worker.stats.finished) == (1, 1)


@pytest.mark.parametrize("state", ["missing", "running", "succeeded"])
async def test_run_one_refuses_a_job_it_cannot_claim_and_runs_nothing(
    conn: Conn, store: JobStore, settings: Settings, state: str
) -> None:
    if state == "missing":
        job_id = uuid.uuid4()
        reason = "no import job has this id"
    else:
        job_id = await insert_job(conn)
        held = await store.claim_by_id("holder", job_id)
        if state == "succeeded":
            await store.succeed(held.fence, {})
            reason = "it has already ended (succeeded)"
        else:
            reason = "it is running, held by holder until"
    handler = RecordingHandler()
    with pytest.raises(JobNotClaimable, match=rf"^import job {job_id} cannot be claimed: ") as e:
        await a_worker(settings, store, handler).run_one(job_id)
    assert e.value.reason.startswith(reason)
    assert handler.ran == []


async def test_a_stop_releases_the_named_job_at_its_checkpoint_and_it_stays_set_aside(
    conn: Conn, store: JobStore, settings: Settings
) -> None:
    aside = await insert_job(conn, run_after=SET_ASIDE, max_attempts=1)
    handler = RecordingHandler(checkpoints=True)
    worker = a_worker(settings, store, handler)
    task = asyncio.create_task(worker.run_one(aside))
    await asyncio.wait_for(handler.started.wait(), timeout=20)
    worker.request_stop()
    await asyncio.wait_for(task, timeout=20)

    row = await job_row(conn, aside)
    assert (row["status"], row["attempt"], row["lease_owner"]) == ("queued", 0, None)
    assert row["checkpoint"]["step"] >= 1, "released after a checkpoint, as in the claim loop"
    assert row["run_after"].year == 9999, "still set aside from every other worker's claim"
    assert await store.claim("daemon") is None


async def test_a_worker_already_stopping_claims_nothing(
    conn: Conn, store: JobStore, settings: Settings
) -> None:
    aside = await insert_job(conn, run_after=SET_ASIDE)
    worker = a_worker(settings, store, RecordingHandler())
    worker.request_stop()
    await worker.run_one(aside)
    row = await job_row(conn, aside)
    assert (row["status"], row["attempt"]) == ("queued", 0)
