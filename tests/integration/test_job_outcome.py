"""What a job attempt records when a stop arrives after its work is done (a real Postgres, the
real runner, lease keeper and store; the handler is a small test double of a job's work)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from soulworker import db
from soulworker.jobs.context import JobContext
from soulworker.jobs.errors import CancelRequested, JobControl, LeaseLost
from soulworker.jobs.lease import keep_lease
from soulworker.jobs.runner import JobRun
from soulworker.jobs.store import JobStore
from soulworker.settings import Settings

pytestmark = pytest.mark.db

Conn = psycopg.AsyncConnection[DictRow]


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[JobStore]:
    pool: AsyncConnectionPool[Conn] = db.create_pool(settings, "test outcome", max_size=4)
    await pool.open(wait=True)
    try:
        yield JobStore(pool, lease_seconds=settings.lease_seconds)
    finally:
        await pool.close()


@pytest.fixture
def fast(database_url: str) -> Settings:
    return Settings.from_env(
        {
            "DATABASE_URL": database_url,
            "SOULWORKER_MODEL_STAGES": "off",
            "SOULWORKER_LEASE_SECONDS": "2",  # a heartbeat every 0.5 s
        }
    )


async def queued_job(conn: Conn) -> uuid.UUID:
    user = uuid.uuid4()
    cur = await conn.execute(
        "insert into import_jobs (user_id, storage_path) values (%s, %s) returning id",
        (user, f"imports/{user}/export.zip"),
    )
    row = await cur.fetchone()
    assert row is not None
    job_id: uuid.UUID = row["id"]
    return job_id


class FinishThenCancelled:
    """Commits all its work (the completed checkpoint), then an operator's cancel arrives and
    the heartbeat stops the handler before it returns."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        await ctx.save_checkpoint(
            {"work": {"done": True}}, stage="finish", percent=100, label="Done", completed=True
        )
        await self.conn.execute("select cancel_import_job(%s)", (ctx.job.id,))
        await asyncio.sleep(30)  # the heartbeat sees the cancel and stops us here
        return {"unreachable": True}

    async def aclose(self) -> None:
        return None


class ReturnsAfterAStopWasNoticed:
    """An operator's cancel arrives and the lease keeper flags it just as the handler returns
    its result (the flag is set here directly: the real race is one loop iteration wide)."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        await self.conn.execute("select cancel_import_job(%s)", (ctx.job.id,))
        ctx.stop_reason = CancelRequested("cancel requested")
        return {"finished": True}

    async def aclose(self) -> None:
        return None


async def test_a_cancel_after_the_work_was_committed_is_a_success(
    conn: Conn, store: JobStore, fast: Settings
) -> None:
    job_id = await queued_job(conn)
    job = await store.claim("worker-test")
    assert job is not None and job.id == job_id
    await JobRun(job, store, FinishThenCancelled(conn), fast).run()
    cur = await conn.execute("select status, last_error from import_jobs where id = %s", (job_id,))
    row = await cur.fetchone()
    assert row == {"status": "succeeded", "last_error": None}


async def test_a_stop_noticed_after_the_handler_returned_does_not_undo_its_success(
    conn: Conn, store: JobStore, fast: Settings
) -> None:
    job_id = await queued_job(conn)
    job = await store.claim("worker-test")
    assert job is not None
    await JobRun(job, store, ReturnsAfterAStopWasNoticed(conn), fast).run()
    cur = await conn.execute("select status, result from import_jobs where id = %s", (job_id,))
    row = await cur.fetchone()
    assert row is not None
    assert (row["status"], row["result"]) == ("succeeded", {"finished": True})


async def test_the_lease_deadline_counts_from_the_claim_not_from_the_keeper(
    conn: Conn, store: JobStore, database_url: str
) -> None:
    """A job whose start took most of its lease (a slow database) must not be worked on past
    the lease the claim granted: with renewals blocked, the keeper stops it by then."""
    lease = 2.0
    store.lease_seconds = lease
    await queued_job(conn)
    job = await store.claim("worker-test")
    assert job is not None
    stops: list[tuple[float, JobControl]] = []
    blocker = await psycopg.AsyncConnection.connect(database_url)
    async with blocker, blocker.transaction():
        # Renewals now wait on the row lock: the heartbeat cannot get through.
        await blocker.execute("select 1 from import_jobs where id = %s for update", (job.id,))
        claimed_long_ago = time.monotonic() - 0.75 * lease
        started = time.monotonic()
        await asyncio.wait_for(
            keep_lease(
                store,
                job.fence,
                leased_at=claimed_long_ago,
                interval_seconds=lease / 4,
                lease_seconds=lease,
                stop_job=lambda reason: stops.append((time.monotonic(), reason)),
            ),
            timeout=5,
        )
    [(stopped_at, reason)] = stops
    assert isinstance(reason, LeaseLost)
    # The keeper gives up at 0.9 of the claim's lease: 0.3 s from now. Counting from its own
    # start it would wait 1.8 s; the bound sits between the two.
    assert stopped_at - started < 1.0
