"""Parking a job (docs/queue.md, "Parking a job"): the real runner, lease keeper, worker loop and
Postgres store, with small handlers that park, resume and cancel outside work of their own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from soulworker import db
from soulworker.errors import TransientJobError
from soulworker.jobs import runner as runner_module
from soulworker.jobs.context import JobContext
from soulworker.jobs.job import ClaimedJob
from soulworker.jobs.park import MAX_WAITING_FOR_CHARS, ParkJob
from soulworker.jobs.runner import JobRun
from soulworker.jobs.store import JobStore
from soulworker.jobs.worker import Worker
from soulworker.settings import Settings

pytestmark = pytest.mark.db

Conn = psycopg.AsyncConnection[DictRow]
Work = Callable[[JobContext], Awaitable[dict[str, Any]]]
CancelWork = Callable[[JobContext], Awaitable[object]]
DEEP_MEMORY = "Building deep memory"
BATCH = "message batch msgbatch_01 (processing)"


@pytest.fixture
def fast(database_url: str) -> Settings:
    return Settings.from_env(
        {
            "DATABASE_URL": database_url,
            "SOULWORKER_MODEL_STAGES": "off",
            "SOULWORKER_LEASE_SECONDS": "2",  # a heartbeat every 0.5 s
            "SOULWORKER_POLL_SECONDS": "0.2",
            "SOULWORKER_PROGRESS_INTERVAL_SECONDS": "0",
        }
    )


@pytest.fixture
async def store(fast: Settings) -> AsyncIterator[JobStore]:
    pool: AsyncConnectionPool[Conn] = db.create_pool(fast, "test parked jobs", max_size=4)
    await pool.open(wait=True)
    try:
        yield JobStore(pool, lease_seconds=fast.lease_seconds)
    finally:
        await pool.close()


class ParkingHandler:
    """Runs ``work`` for every attempt; records the attempts it saw and its ``on_cancel`` calls."""

    def __init__(self, work: Work, *, on_cancel: CancelWork | None = None) -> None:
        self.work = work
        self.cancel_work = on_cancel
        self.runs: list[tuple[int, bool, dict[str, Any]]] = []
        self.cancels: list[tuple[bool, bool, dict[str, Any]]] = []

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        self.runs.append((ctx.job.attempt, ctx.resumed_from_park, dict(ctx.checkpoint)))
        return await self.work(ctx)

    async def on_cancel(self, ctx: JobContext) -> None:
        self.cancels.append((ctx.resumed_from_park, ctx.cancel_requested, dict(ctx.checkpoint)))
        if self.cancel_work is not None:
            await self.cancel_work(ctx)

    async def aclose(self) -> None:
        return None


async def insert_job(conn: Conn) -> tuple[uuid.UUID, uuid.UUID]:
    user = uuid.uuid4()
    cur = await conn.execute(
        "insert into import_jobs (user_id, storage_path) values (%s, %s) returning id",
        (user, f"imports/{user}/export.zip"),
    )
    row = await cur.fetchone()
    assert row is not None
    return row["id"], user


async def job_row(conn: Conn, job_id: uuid.UUID) -> dict[str, Any]:
    cur = await conn.execute("select * from import_jobs where id = %s", (job_id,))
    row = await cur.fetchone()
    assert row is not None
    return dict(row)


async def profile(conn: Conn, user: uuid.UUID) -> dict[str, Any]:
    cur = await conn.execute("select * from user_profiles where user_id = %s", (user,))
    row = await cur.fetchone()
    assert row is not None
    return dict(row)


async def db_now(conn: Conn) -> datetime:
    cur = await conn.execute("select now() as now")
    row = await cur.fetchone()
    assert row is not None
    now: datetime = row["now"]
    return now


async def make_due(conn: Conn, job_id: uuid.UUID) -> None:
    """Let a parked job's time come without waiting for it."""
    await conn.execute("update import_jobs set run_after = now() where id = %s", (job_id,))


async def run_attempt(store: JobStore, handler: ParkingHandler, settings: Settings) -> ClaimedJob:
    job = await store.claim("w1")
    assert job is not None
    await asyncio.wait_for(JobRun(job, store, handler, settings).run(), timeout=20)
    return job


async def batch_work(ctx: JobContext) -> dict[str, Any]:
    """Submit "a batch" and park on it; once resumed, finish."""
    if not ctx.resumed_from_park:
        await ctx.save_checkpoint(
            {"batch": "msgbatch_01"}, stage="full_pass", percent=70, label=DEEP_MEMORY
        )
        raise ParkJob(datetime.now(UTC) + timedelta(minutes=10), BATCH, {"polls": 1})
    return {"facts": 12, "resumed_with": ctx.checkpoint["batch"]}


async def test_a_parked_job_waits_uncharged_and_a_later_claim_resumes_and_completes_it(
    conn: Conn, store: JobStore, fast: Settings
) -> None:
    job_id, user = await insert_job(conn)
    handler = ParkingHandler(batch_work)
    await run_attempt(store, handler, fast)

    row = await job_row(conn, job_id)
    now = await db_now(conn)
    assert (row["status"], row["attempt"], row["lease_owner"], row["lease_expires_at"]) == (
        "queued",
        0,
        None,
        None,
    )
    assert 9 * 60 < (row["run_after"] - now).total_seconds() <= 10 * 60
    assert (row["stage"], row["progress_percent"], row["errors"]) == ("full_pass", 70, [])
    assert row["checkpoint"] == {"batch": "msgbatch_01", "polls": 1}
    assert (row["waiting_for"], row["last_error"]) == (BATCH, None)
    assert (await profile(conn, user))["import_stage"] == DEEP_MEMORY
    assert await store.claim("w2") is None, "not before its time"

    cur = await conn.execute(
        "select * from import_jobs_overview where section = 'waiting' and job_id = %s", (job_id,)
    )
    (waiting,) = await cur.fetchall()
    assert (waiting["status"], waiting["waiting_for"], waiting["stage"]) == (
        "queued",
        BATCH,
        "full_pass",
    )
    assert waiting["next_run_at"] == row["run_after"] and waiting["parked_at"] == row["parked_at"]
    cur = await conn.execute(
        "select count(*) as n from import_jobs_overview where section = 'failure'"
    )
    assert await cur.fetchone() == {"n": 0}, "a parked job is not waiting to retry"

    await make_due(conn, job_id)
    await run_attempt(store, handler, fast)
    row = await job_row(conn, job_id)
    assert (row["status"], row["attempt"], row["parked_at"], row["waiting_for"]) == (
        "succeeded",
        1,
        None,
        None,
    )
    assert row["result"]["resumed_with"] == "msgbatch_01"
    assert [(attempt, resumed) for attempt, resumed, _ in handler.runs] == [(1, False), (1, True)]
    assert handler.runs[1][2] == {"batch": "msgbatch_01", "polls": 1}, "what it saved"


async def test_a_resumed_job_keeps_its_profile_label(
    conn: Conn, store: JobStore, fast: Settings
) -> None:
    """The resume is no new start: "Building deep memory" stays while the batch is polled."""
    job_id, user = await insert_job(conn)
    labels: list[str] = []

    async def poll_again(ctx: JobContext) -> dict[str, Any]:
        labels.append((await profile(conn, user))["import_stage"])
        if not ctx.resumed_from_park:
            await ctx.progress("full_pass", 70, DEEP_MEMORY)
        raise ParkJob(datetime.now(UTC), BATCH)

    handler = ParkingHandler(poll_again)
    await run_attempt(store, handler, fast)
    await run_attempt(store, handler, fast)
    assert labels == ["Starting import", DEEP_MEMORY]
    assert (await job_row(conn, job_id))["attempt"] == 0


async def test_a_park_after_the_lease_was_lost_writes_nothing(
    conn: Conn, store: JobStore, fast: Settings
) -> None:
    job_id, _ = await insert_job(conn)

    async def park_too_late(ctx: JobContext) -> dict[str, Any]:
        # Another worker took the job over (as after an expired lease) while this one worked.
        await conn.execute(
            "update import_jobs set lease_owner = 'thief', attempt = attempt + 1 where id = %s",
            (job_id,),
        )
        raise ParkJob(datetime.now(UTC) + timedelta(hours=1), BATCH, {"batch": "mine"})

    await run_attempt(store, ParkingHandler(park_too_late), fast)
    row = await job_row(conn, job_id)
    assert (row["status"], row["lease_owner"], row["attempt"]) == ("running", "thief", 2)
    assert (row["parked_at"], row["waiting_for"], row["checkpoint"]) == (None, None, {})


async def test_a_job_parked_longer_than_the_attempt_time_limit_is_not_failed_for_time(
    conn: Conn, store: JobStore, fast: Settings
) -> None:
    """The attempt's clock starts at its claim: the time parked belongs to no attempt. The
    worker loop parks it, polls, claims it once due and completes it."""
    settings = fast.replace(job_timeout_seconds=1.0)
    job_id, _ = await insert_job(conn)
    parked_for = 2.5

    async def park_once(ctx: JobContext) -> dict[str, Any]:
        if not ctx.resumed_from_park:
            raise ParkJob(datetime.now(UTC) + timedelta(seconds=parked_for), BATCH)
        await asyncio.sleep(0.5)  # half the limit, in the resumed attempt
        return {"done": True}

    handler = ParkingHandler(park_once)
    worker = Worker(settings, store, handler, "w1", listen=False)
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(worker.run(drain=True), timeout=20)
    elapsed = asyncio.get_running_loop().time() - started
    row = await job_row(conn, job_id)
    assert (row["status"], row["attempt"], row["errors"]) == ("succeeded", 1, [])
    assert elapsed > parked_for > settings.job_timeout_seconds, "drain waited for the park"
    assert [resumed for _, resumed, _ in handler.runs] == [False, True]


async def test_a_cancel_while_parked_runs_the_handlers_cancel_hook_then_cancels(
    conn: Conn, store: JobStore, fast: Settings
) -> None:
    job_id, user = await insert_job(conn)
    handler = ParkingHandler(batch_work)
    await run_attempt(store, handler, fast)
    cur = await conn.execute("select cancel_import_job(%s) as status", (job_id,))
    assert await cur.fetchone() == {"status": "cancel_requested"}
    row = await job_row(conn, job_id)
    assert row["status"] == "queued" and row["cancel_requested_at"] is not None
    assert row["run_after"] <= await db_now(conn), "due now: a worker claims it promptly"

    await run_attempt(store, handler, fast)
    assert len(handler.runs) == 1, "run is not called again"
    assert handler.cancels == [(True, True, {"batch": "msgbatch_01", "polls": 1})]
    row = await job_row(conn, job_id)
    assert (row["status"], row["last_error"], row["attempt"]) == (
        "cancelled",
        "Import cancelled.",
        1,
    )
    assert (row["parked_at"], row["waiting_for"]) == (None, None)
    prof = await profile(conn, user)
    assert (prof["import_status"], prof["import_error"]) == ("failed", "Import cancelled.")


async def test_a_cancel_of_a_running_job_runs_the_hook_after_the_heartbeat_stops_it(
    conn: Conn, store: JobStore, fast: Settings
) -> None:
    job_id, _ = await insert_job(conn)

    async def submit_then_work(ctx: JobContext) -> dict[str, Any]:
        await ctx.save_checkpoint({"batch": "b2"}, stage="full_pass", percent=70, label="x")
        await conn.execute("select cancel_import_job(%s)", (ctx.job.id,))
        await asyncio.sleep(30)  # the heartbeat (every 0.5 s) stops us here
        return {}

    handler = ParkingHandler(submit_then_work)
    await run_attempt(store, handler, fast)
    assert handler.cancels == [(False, True, {"batch": "b2"})]
    assert (await job_row(conn, job_id))["status"] == "cancelled"


@pytest.mark.parametrize("trouble", ["raises", "hangs"])
async def test_a_failing_or_hanging_cancel_hook_still_cancels_the_job(
    conn: Conn, store: JobStore, fast: Settings, monkeypatch: pytest.MonkeyPatch, trouble: str
) -> None:
    monkeypatch.setattr(runner_module, "ON_CANCEL_SECONDS", 1.5)
    job_id, _ = await insert_job(conn)

    async def troubled(ctx: JobContext) -> None:
        if trouble == "raises":
            raise RuntimeError("the batch API said no, with private text")
        await asyncio.sleep(60)

    handler = ParkingHandler(batch_work, on_cancel=troubled)
    await run_attempt(store, handler, fast)
    await conn.execute("select cancel_import_job(%s)", (job_id,))
    started = asyncio.get_running_loop().time()
    await run_attempt(store, handler, fast)
    assert asyncio.get_running_loop().time() - started < 10
    assert len(handler.cancels) == 1
    row = await job_row(conn, job_id)
    assert (row["status"], row["last_error"]) == ("cancelled", "Import cancelled.")
    assert "private" not in str(row), "the hook's error is not written anywhere"


async def test_a_cancel_hook_longer_than_the_lease_keeps_the_lease(
    conn: Conn, store: JobStore, fast: Settings
) -> None:
    """The hook runs under a lease keeper that does not stop for the cancel itself: a hook
    taking two leases' time still records the cancel, and no other worker took the job."""
    job_id, _ = await insert_job(conn)

    async def slow_cancel(ctx: JobContext) -> None:
        await asyncio.sleep(2 * fast.lease_seconds)
        assert await store.claim("w2") is None, "the lease was renewed meanwhile"

    handler = ParkingHandler(batch_work, on_cancel=slow_cancel)
    await run_attempt(store, handler, fast)
    await conn.execute("select cancel_import_job(%s)", (job_id,))
    await run_attempt(store, handler, fast)
    row = await job_row(conn, job_id)
    assert (row["status"], row["attempt"]) == ("cancelled", 1)


async def test_a_plain_queued_job_is_still_cancelled_at_once(conn: Conn) -> None:
    job_id, _ = await insert_job(conn)
    cur = await conn.execute("select cancel_import_job(%s) as status", (job_id,))
    assert await cur.fetchone() == {"status": "cancelled"}
    assert (await job_row(conn, job_id))["status"] == "cancelled"


# --- hostile parks


async def test_a_naive_resume_time_is_a_handler_bug_not_a_park(
    conn: Conn, store: JobStore, fast: Settings
) -> None:
    job_id, _ = await insert_job(conn)

    async def naive(ctx: JobContext) -> dict[str, Any]:
        raise ParkJob(datetime.now() + timedelta(minutes=5), BATCH)

    await run_attempt(store, ParkingHandler(naive), fast)
    row = await job_row(conn, job_id)
    assert (row["status"], row["parked_at"]) == ("queued", None)
    assert [e["code"] for e in row["errors"]] == ["internal_error"], "charged like any bug"


async def test_a_huge_multi_line_waiting_for_is_one_short_line(
    conn: Conn, store: JobStore, fast: Settings
) -> None:
    job_id, _ = await insert_job(conn)
    hostile = "batch\nwith\r\nlines\x1b[31m and\ttabs " + "x" * 10_000

    async def park(ctx: JobContext) -> dict[str, Any]:
        raise ParkJob(datetime.now(UTC) + timedelta(minutes=5), hostile)

    await run_attempt(store, ParkingHandler(park), fast)
    waiting_for = (await job_row(conn, job_id))["waiting_for"]
    assert len(waiting_for) == MAX_WAITING_FOR_CHARS
    assert waiting_for.startswith("batch with lines [31m and tabs x") and waiting_for[-1] == "…"


@pytest.mark.parametrize(
    "edit",
    [
        "waiting_for = repeat('x', 201)",
        "waiting_for = 'two' || chr(10) || 'lines'",
        "waiting_for = ''",
        "waiting_for = null",
        "status = 'running', lease_owner = 'w', lease_expires_at = now()",
    ],
)
async def test_the_table_holds_an_operators_edit_of_a_parked_job_to_the_same_rules(
    conn: Conn, store: JobStore, fast: Settings, edit: str
) -> None:
    job_id, _ = await insert_job(conn)
    await run_attempt(store, ParkingHandler(batch_work), fast)
    with pytest.raises(pg_errors.CheckViolation):
        await conn.execute(
            f"update import_jobs set {edit} where id = %s",
            (job_id,),
        )


async def test_run_one_claims_its_parked_job_again_when_it_asked_to_resume(
    conn: Conn, store: JobStore, fast: Settings
) -> None:
    """``soulworker import``'s worker (docs/queue.md, "One named job"): its job, set aside for
    it, stays set aside while parked, and the same worker resumes it by id."""
    job_id, _ = await insert_job(conn)
    await conn.execute("update import_jobs set run_after = '9999-01-01' where id = %s", (job_id,))
    other_workers: list[ClaimedJob | None] = []

    async def park_briefly(ctx: JobContext) -> dict[str, Any]:
        if ctx.resumed_from_park:
            return {"done": True}
        await ctx.save_checkpoint({"batch": "b"}, stage="full_pass", percent=70, label="x")
        raise ParkJob(datetime.now(UTC) + timedelta(seconds=1), BATCH)

    async def look_while_parked() -> None:
        await asyncio.sleep(0.5)
        other_workers.append(await store.claim("daemon"))

    handler = ParkingHandler(park_briefly)
    worker = Worker(fast, store, handler, "importer", listen=False)
    await asyncio.wait_for(asyncio.gather(worker.run_one(job_id), look_while_parked()), 20)
    row = await job_row(conn, job_id)
    assert (row["status"], row["attempt"], row["lease_owner"]) == ("succeeded", 1, "importer")
    assert [resumed for _, resumed, _ in handler.runs] == [False, True]
    assert other_workers == [None], "no daemon took the set-aside job while it was parked"


async def test_a_cancel_that_races_a_failing_attempt_still_runs_the_hook(
    conn: Conn, store: JobStore, fast: Settings
) -> None:
    """The failure's statement records the cancel (it never loses one); the outside work the
    checkpoint names is still stopped, although the job is no longer the worker's."""
    job_id, _ = await insert_job(conn)

    async def cancelled_then_fails(ctx: JobContext) -> dict[str, Any]:
        await ctx.save_checkpoint({"batch": "b3"}, stage="full_pass", percent=70, label="x")
        await conn.execute("select cancel_import_job(%s)", (ctx.job.id,))
        raise TransientJobError("The batch service is busy.", code="busy")

    handler = ParkingHandler(cancelled_then_fails)
    await run_attempt(store, handler, fast)
    assert handler.cancels == [(False, True, {"batch": "b3"})]
    row = await job_row(conn, job_id)
    assert (row["status"], [e["code"] for e in row["errors"]]) == ("cancelled", ["busy"])
