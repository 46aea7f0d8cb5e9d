"""One contract, two stores: every scenario here runs on JobStore over a real Postgres and on the
in-memory store of soulworker/testing/memory_store.py, so the store the queue's decision tests
use cannot drift from the SQL (docs/queue.md, "Two layers of tests").

Each store comes with the operator's side a scenario needs (insert a job, cancel it, read its
row, let time pass); on Postgres, time passes by moving every timestamp of every job back.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import psycopg
import pytest
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from soulworker import db
from soulworker.jobs.errors import JobNotClaimable, LeaseLost
from soulworker.jobs.job import ClaimedJob
from soulworker.jobs.park import MAX_PARK_SECONDS
from soulworker.jobs.store import JobStore
from soulworker.jobs.store_interface import JobStoreInterface
from soulworker.settings import Settings
from soulworker.testing.memory_store import MemoryJobStore

Conn = psycopg.AsyncConnection[DictRow]
LEASE_SECONDS = 30
# The columns a scenario compares; both stores report them alike.
COLUMNS = (
    "status",
    "attempt",
    "max_attempts",
    "priority",
    "lease_owner",
    "lease_expires_at",
    "run_after",
    "cancel_requested_at",
    "finished_at",
    "stage",
    "progress_percent",
    "checkpoint",
    "result",
    "last_error",
    "errors",
    "parked_at",
    "waiting_for",
)
TIMESTAMPS = (
    "created_at",
    "run_after",
    "lease_expires_at",
    "heartbeat_at",
    "cancel_requested_at",
    "started_at",
    "finished_at",
    "parked_at",
)


class Queue(Protocol):
    """A store under test and the operator's side of it."""

    store: JobStoreInterface

    async def insert(
        self,
        user: uuid.UUID | None = None,
        *,
        priority: int = 0,
        run_after_seconds: float = 0,
        max_attempts: int = 3,
    ) -> uuid.UUID: ...

    async def request_cancel(self, job_id: uuid.UUID) -> str: ...

    async def row(self, job_id: uuid.UUID) -> dict[str, Any]: ...

    async def now(self) -> datetime: ...

    async def travel(self, seconds: float) -> None:
        """Let ``seconds`` pass for the queue."""
        ...

    async def take_over(self, job_id: uuid.UUID, owner: str) -> None:
        """Another worker holds the running job now, as after a rescue."""
        ...


class PostgresQueue:
    def __init__(self, store: JobStore, conn: Conn) -> None:
        self.store: JobStoreInterface = store
        self.conn = conn

    async def insert(
        self,
        user: uuid.UUID | None = None,
        *,
        priority: int = 0,
        run_after_seconds: float = 0,
        max_attempts: int = 3,
    ) -> uuid.UUID:
        user = user or uuid.uuid4()
        cur = await self.conn.execute(
            "insert into import_jobs (user_id, storage_path, priority, max_attempts, run_after) "
            "values (%s, %s, %s, %s, now() + make_interval(secs => %s)) returning id",
            (user, f"imports/{user}/export.zip", priority, max_attempts, run_after_seconds),
        )
        row = await cur.fetchone()
        assert row is not None
        job_id: uuid.UUID = row["id"]
        return job_id

    async def request_cancel(self, job_id: uuid.UUID) -> str:
        cur = await self.conn.execute("select cancel_import_job(%s) as status", (job_id,))
        row = await cur.fetchone()
        assert row is not None
        return str(row["status"])

    async def row(self, job_id: uuid.UUID) -> dict[str, Any]:
        cur = await self.conn.execute("select * from import_jobs where id = %s", (job_id,))
        row = await cur.fetchone()
        assert row is not None
        return {column: row[column] for column in COLUMNS}

    async def now(self) -> datetime:
        cur = await self.conn.execute("select now() as now")
        row = await cur.fetchone()
        assert row is not None
        now: datetime = row["now"]
        return now

    async def travel(self, seconds: float) -> None:
        shifts = ", ".join(f"{column} = {column} - %(shift)s" for column in TIMESTAMPS)
        await self.conn.execute(
            f"update import_jobs set {shifts}",  # the column names are this module's constants
            {"shift": timedelta(seconds=seconds)},
        )

    async def take_over(self, job_id: uuid.UUID, owner: str) -> None:
        await self.conn.execute(
            "update import_jobs set lease_owner = %s, attempt = attempt + 1 where id = %s",
            (owner, job_id),
        )


class MemoryQueue:
    def __init__(self) -> None:
        self.memory = MemoryJobStore(lease_seconds=LEASE_SECONDS)
        self.store: JobStoreInterface = self.memory

    async def insert(
        self,
        user: uuid.UUID | None = None,
        *,
        priority: int = 0,
        run_after_seconds: float = 0,
        max_attempts: int = 3,
    ) -> uuid.UUID:
        # Postgres stamps each insert with its own now(): so does the clock here.
        self.memory.clock.advance(0.001)
        return self.memory.insert(
            user, priority=priority, run_after_seconds=run_after_seconds, max_attempts=max_attempts
        )

    async def request_cancel(self, job_id: uuid.UUID) -> str:
        return self.memory.request_cancel(job_id)

    async def row(self, job_id: uuid.UUID) -> dict[str, Any]:
        job = self.memory.row(job_id)
        return {column: getattr(job, column) for column in COLUMNS}

    async def now(self) -> datetime:
        return self.memory.clock.now

    async def travel(self, seconds: float) -> None:
        self.memory.clock.advance(seconds)

    async def take_over(self, job_id: uuid.UUID, owner: str) -> None:
        job = self.memory.row(job_id)
        job.lease_owner, job.attempt = owner, job.attempt + 1


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.db), "memory"])
def postgres_settings(request: pytest.FixtureRequest) -> Settings | None:
    """Settings of a fresh migrated database for the Postgres store; None for the memory one."""
    if request.param == "memory":
        return None
    settings: Settings = request.getfixturevalue("settings")
    return settings


@pytest.fixture
async def queue(postgres_settings: Settings | None) -> AsyncIterator[Queue]:
    if postgres_settings is None:
        yield MemoryQueue()
        return
    url = postgres_settings.require_database_url()
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)
    pool: AsyncConnectionPool[Conn] = db.create_pool(postgres_settings, "store contract")
    await pool.open(wait=True)
    try:
        yield PostgresQueue(JobStore(pool, lease_seconds=LEASE_SECONDS), conn)
    finally:
        await pool.close()
        await conn.close()


async def claim(queue: Queue, owner: str = "w1") -> ClaimedJob:
    job = await queue.store.claim(owner)
    assert job is not None
    return job


def seconds_between(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()


def without_times(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: value for key, value in entry.items() if key != "at"} for entry in errors]


# --- claims


async def test_claim_order_is_priority_then_due_time_then_age(queue: Queue) -> None:
    old = await queue.insert()
    newer = await queue.insert()
    urgent = await queue.insert(priority=5)
    due_earlier = await queue.insert(run_after_seconds=-60)
    later = await queue.insert(run_after_seconds=3600)
    claimed = [await claim(queue) for _ in range(4)]
    assert [job.id for job in claimed] == [urgent, due_earlier, old, newer]
    assert await queue.store.claim("w1") is None, "a job due later is not claimed"
    for job in claimed:
        await queue.store.succeed(job.fence, {})
    await queue.travel(3601)
    assert (await claim(queue)).id == later


async def test_a_claim_charges_an_attempt_and_grants_a_lease(queue: Queue) -> None:
    job_id = await queue.insert(max_attempts=2)
    job = await claim(queue, "worker-a")
    now = await queue.now()
    row = await queue.row(job_id)
    assert (row["status"], row["attempt"], row["lease_owner"]) == ("running", 1, "worker-a")
    assert (job.attempt, job.max_attempts, job.fence.owner) == (1, 2, "worker-a")
    assert 0 < seconds_between(row["lease_expires_at"], now) <= LEASE_SECONDS


async def test_a_live_lease_is_kept_and_an_expired_one_is_rescued(queue: Queue) -> None:
    job_id = await queue.insert()
    first = await claim(queue, "dead-worker")
    await queue.travel(LEASE_SECONDS - 5)
    assert await queue.store.claim("w2") is None, "a live lease is not taken"
    # Until someone else claims it, the late worker's fence still holds.
    assert await queue.store.heartbeat(first.fence) is None
    await queue.travel(LEASE_SECONDS + 1)
    second = await claim(queue, "w2")
    assert (second.id, second.attempt) == (job_id, 2)
    with pytest.raises(LeaseLost):
        await queue.store.heartbeat(first.fence)
    with pytest.raises(LeaseLost):
        await queue.store.advance(first.fence, stage="parse", percent=40, label="late")
    with pytest.raises(LeaseLost):
        await queue.store.succeed(first.fence, {"late": True})
    with pytest.raises(LeaseLost):
        await queue.store.release(first.fence)
    row = await queue.row(job_id)
    assert (row["status"], row["lease_owner"], row["progress_percent"], row["result"]) == (
        "running",
        "w2",
        0,
        {},
    )


async def test_a_heartbeat_renews_the_lease(queue: Queue) -> None:
    await queue.insert()
    job = await claim(queue, "w1")
    await queue.travel(LEASE_SECONDS - 1)
    await queue.store.heartbeat(job.fence)
    await queue.travel(LEASE_SECONDS - 1)
    assert await queue.store.claim("w2") is None, "renewed from the heartbeat, not the claim"


# --- progress, checkpoints, artifacts


async def test_progress_never_decreases_and_checkpoints_merge(queue: Queue) -> None:
    job_id = await queue.insert()
    job = await claim(queue)
    await queue.store.mark_started(job.fence, "Starting")
    fence = job.fence
    assert await queue.store.advance(fence, stage="download", percent=20, label="x") == 20
    assert (
        await queue.store.advance(
            fence, stage=None, percent=7, label=None, checkpoint={"a": 1}, result={"x": 1}
        )
        == 20
    )
    await queue.store.advance(
        fence, stage="parse", percent=35, label="y", checkpoint={"b": 2}, result={"x": 2, "y": 3}
    )
    row = await queue.row(job_id)
    assert (row["stage"], row["progress_percent"]) == ("parse", 35)
    assert row["checkpoint"] == {"a": 1, "b": 2}
    assert row["result"] == {"x": 2, "y": 3}


async def test_a_fenced_transaction_commits_its_writes_together(queue: Queue) -> None:
    job_id = await queue.insert()
    job = await claim(queue)
    async with queue.store.fenced_transaction(job.fence) as tx:
        assert await tx.advance(stage="parse", percent=30, label="P", checkpoint={"p": 1}) == 30
        await tx.put_artifact("sample", {"texts": ["a"]})
        await tx.put_artifact("facts:0001", [1])
        await tx.put_artifact("facts:0002", [2])
    row = await queue.row(job_id)
    assert (row["progress_percent"], row["checkpoint"]) == (30, {"p": 1})
    assert await queue.store.get_artifact(job_id, "sample") == {"texts": ["a"]}
    assert await queue.store.get_artifact(job_id, "missing") is None
    assert await queue.store.artifact_names(job_id) == {"sample", "facts:0001", "facts:0002"}
    assert await queue.store.list_artifacts(job_id, "facts:") == [
        ("facts:0001", [1]),
        ("facts:0002", [2]),
    ]


async def test_a_fenced_transaction_writes_nothing_once_the_lease_is_lost(queue: Queue) -> None:
    job_id = await queue.insert()
    job = await claim(queue)
    with pytest.raises(LeaseLost):
        async with queue.store.fenced_transaction(job.fence) as tx:
            await tx.put_artifact("sample", {"texts": ["a"]})
            # (Only an artifact before the takeover: on Postgres a progress write would hold
            # the row lock the takeover waits for.)
            await queue.take_over(job_id, "thief")
    row = await queue.row(job_id)
    assert (row["lease_owner"], row["attempt"]) == ("thief", 2)
    assert await queue.store.artifact_names(job_id) == set()


async def test_a_fenced_write_inside_a_transaction_notices_a_lost_lease_at_once(
    queue: Queue,
) -> None:
    job_id = await queue.insert()
    job = await claim(queue)
    await queue.travel(LEASE_SECONDS + 1)
    await claim(queue, "thief")
    reached_the_artifact = False
    with pytest.raises(LeaseLost):
        async with queue.store.fenced_transaction(job.fence) as tx:
            await tx.advance(stage="parse", percent=30, label="P", checkpoint={"p": 1})
            reached_the_artifact = True
    assert not reached_the_artifact
    row = await queue.row(job_id)
    assert (row["progress_percent"], row["checkpoint"]) == (0, {})


async def test_a_fenced_transaction_that_raises_writes_nothing(queue: Queue) -> None:
    job_id = await queue.insert()
    job = await claim(queue)
    with pytest.raises(RuntimeError):
        async with queue.store.fenced_transaction(job.fence) as tx:
            await tx.advance(stage="parse", percent=30, label="P", checkpoint={"p": 1})
            await tx.put_artifact("sample", {})
            raise RuntimeError("the handler failed inside its transaction")
    row = await queue.row(job_id)
    assert (row["progress_percent"], row["checkpoint"]) == (0, {})
    assert await queue.store.artifact_names(job_id) == set()


# --- outcomes


async def test_success_finishes_the_job_and_deletes_its_working_data(queue: Queue) -> None:
    user = uuid.uuid4()
    older = await queue.insert(user)
    failed = await claim(queue)
    async with queue.store.fenced_transaction(failed.fence) as tx:
        await tx.put_artifact("sample", {})
    await queue.store.fail(failed.fence, message="m", code="c", error_class="E", permanent=True)
    other_user = await queue.insert()
    other = await claim(queue)
    async with queue.store.fenced_transaction(other.fence) as tx:
        await tx.put_artifact("sample", {})
    await queue.store.fail(other.fence, message="m", code="c", error_class="E", permanent=True)

    job_id = await queue.insert(user)
    job = await claim(queue)
    await queue.store.advance(job.fence, stage="parse", percent=40, label="x", result={"a": 1})
    async with queue.store.fenced_transaction(job.fence) as tx:
        await tx.put_artifact("sample", {})
    await queue.store.succeed(job.fence, {"chunks": 4})
    row = await queue.row(job_id)
    assert (row["status"], row["progress_percent"], row["last_error"]) == ("succeeded", 100, None)
    assert row["result"] == {"a": 1, "chunks": 4}
    assert row["finished_at"] is not None and row["lease_expires_at"] is None
    assert await queue.store.artifact_names(job_id) == set()
    assert await queue.store.artifact_names(older) == set(), "the user's older failed job's"
    assert await queue.store.artifact_names(other_user) == {"sample"}, "not another user's"
    assert not await queue.store.has_active_jobs()


async def test_release_gives_the_attempt_back_and_keeps_the_checkpoint(queue: Queue) -> None:
    job_id = await queue.insert()
    job = await claim(queue)
    await queue.store.advance(job.fence, stage="parse", percent=30, label="P", checkpoint={"d": 1})
    await queue.store.release(job.fence)
    now = await queue.now()
    row = await queue.row(job_id)
    assert (row["status"], row["attempt"], row["lease_owner"]) == ("queued", 0, None)
    assert row["checkpoint"] == {"d": 1} and row["errors"] == []
    assert seconds_between(row["run_after"], now) <= 0, "due again at once"
    again = await claim(queue)
    assert (again.attempt, again.checkpoint, again.progress_percent) == (1, {"d": 1}, 30)


# --- one named job (soulworker import; docs/queue.md "One named job")

SET_ASIDE_SECONDS = 10 * 365 * 24 * 3600
"""Far enough ahead that no worker's claim takes the job (soulworker import uses year 9999)."""


async def test_a_set_aside_job_is_claimed_only_by_its_id(queue: Queue) -> None:
    aside = await queue.insert(priority=2**31 - 1, run_after_seconds=SET_ASIDE_SECONDS)
    assert await queue.store.claim("w1") is None, "the ordinary claim never takes it"
    job = await queue.store.claim_by_id("importer", aside)
    assert (job.id, job.attempt, job.fence.owner) == (aside, 1, "importer")
    row = await queue.row(aside)
    assert (row["status"], row["lease_owner"]) == ("running", "importer")


async def test_a_named_claim_takes_only_its_job_and_says_why_it_cannot(queue: Queue) -> None:
    other = await queue.insert(priority=5)
    named = await queue.insert()
    await queue.store.claim_by_id("importer", named)
    assert (await queue.row(other))["status"] == "queued", "the better job is not touched"
    with pytest.raises(JobNotClaimable, match="running, held by importer"):
        await queue.store.claim_by_id("w2", named)
    with pytest.raises(JobNotClaimable, match="no import job has this id"):
        await queue.store.claim_by_id("w2", uuid.uuid4())
    await queue.travel(LEASE_SECONDS + 1)
    rescued = await queue.store.claim_by_id("w2", named)
    assert (rescued.attempt, rescued.fence.owner) == (2, "w2"), "an expired lease is rescued"
    await queue.store.succeed(rescued.fence, {})
    with pytest.raises(JobNotClaimable, match=r"already ended \(succeeded\)"):
        await queue.store.claim_by_id("w3", named)


async def test_a_released_set_aside_job_stays_set_aside(queue: Queue) -> None:
    aside = await queue.insert(run_after_seconds=SET_ASIDE_SECONDS)
    job = await queue.store.claim_by_id("importer", aside)
    await queue.store.release(job.fence)
    row = await queue.row(aside)
    assert (row["status"], row["attempt"]) == ("queued", 0)
    assert seconds_between(row["run_after"], await queue.now()) > SET_ASIDE_SECONDS / 2
    assert await queue.store.claim("w1") is None


async def test_retry_later_records_the_error_and_waits(queue: Queue) -> None:
    job_id = await queue.insert()
    job = await claim(queue, "w1")
    await queue.store.advance(job.fence, stage="download", percent=5, label="Downloading")
    status, run_after = await queue.store.retry_later(
        job.fence,
        delay_seconds=120,
        message="Storage is busy.",
        code="storage_unavailable",
        error_class="TransientJobError",
    )
    now = await queue.now()
    row = await queue.row(job_id)
    assert status == row["status"] == "queued"
    assert row["run_after"] == run_after
    assert 119 <= seconds_between(run_after, now) <= 120
    assert (row["attempt"], row["lease_owner"], row["finished_at"]) == (1, None, None)
    assert row["last_error"] == "Storage is busy."
    assert without_times(row["errors"]) == [
        {
            "attempt": 1,
            "stage": "download",
            "error_class": "TransientJobError",
            "code": "storage_unavailable",
            "message": "Storage is busy.",
            "permanent": False,
            "worker": "w1",
        }
    ]
    assert await queue.store.has_active_jobs(), "a job waiting for its retry is still active"
    assert await queue.store.claim("w2") is None, "not before run_after"
    await queue.travel(121)
    assert (await claim(queue, "w2")).attempt == 2


async def test_fail_ends_the_job_with_its_message(queue: Queue) -> None:
    job_id = await queue.insert()
    job = await claim(queue, "w1")
    await queue.store.fail(
        job.fence,
        message="The export was not found.",
        code="export_not_found",
        error_class="ExportNotFound",
        permanent=True,
    )
    row = await queue.row(job_id)
    assert (row["status"], row["last_error"]) == ("failed", "The export was not found.")
    assert row["finished_at"] is not None and row["lease_expires_at"] is None
    assert [(e["code"], e["permanent"]) for e in row["errors"]] == [("export_not_found", True)]
    assert await queue.store.claim("w2") is None


# --- cancels


async def test_a_queued_job_is_cancelled_at_once(queue: Queue) -> None:
    job_id = await queue.insert()
    assert await queue.request_cancel(job_id) == "cancelled"
    row = await queue.row(job_id)
    assert (row["status"], row["last_error"]) == ("cancelled", "Import cancelled.")
    assert row["cancel_requested_at"] is not None and row["finished_at"] is not None
    assert await queue.store.claim("w1") is None


async def test_a_running_job_learns_of_its_cancel_from_the_heartbeat(queue: Queue) -> None:
    job_id = await queue.insert()
    job = await claim(queue)
    assert await queue.store.heartbeat(job.fence) is None
    assert await queue.request_cancel(job_id) == "cancel_requested"
    assert await queue.store.heartbeat(job.fence) is not None
    await queue.store.cancel(job.fence)
    row = await queue.row(job_id)
    assert (row["status"], row["last_error"]) == ("cancelled", "Import cancelled.")
    assert row["finished_at"] is not None


async def test_a_cancelled_job_whose_worker_died_is_handed_over_with_its_request(
    queue: Queue,
) -> None:
    job_id = await queue.insert()
    await claim(queue, "dead-worker")
    await queue.request_cancel(job_id)
    await queue.travel(LEASE_SECONDS + 1)
    rescued = await claim(queue, "w2")
    assert rescued.cancel_requested_at is not None, "the runner records the cancel at once"


@pytest.mark.parametrize("permanent", [False, True])
async def test_a_cancel_requested_during_a_failing_attempt_wins(
    queue: Queue, permanent: bool
) -> None:
    job_id = await queue.insert()
    job = await claim(queue)
    await queue.request_cancel(job_id)
    if permanent:
        await queue.store.fail(
            job.fence, message="Bad export.", code="bad", error_class="X", permanent=True
        )
    else:
        status, _ = await queue.store.retry_later(
            job.fence, delay_seconds=600, message="Busy.", code="busy", error_class="Y"
        )
        assert status == "cancelled"
    row = await queue.row(job_id)
    assert (row["status"], row["last_error"]) == ("cancelled", "Import cancelled.")
    assert row["finished_at"] is not None
    assert [e["code"] for e in row["errors"]] == ["busy" if not permanent else "bad"]


# --- parking (docs/queue.md, "Parking a job")

BATCH = "message batch msgbatch_01 (processing)"


async def parked_job(queue: Queue, *, wait_seconds: float = 600) -> tuple[uuid.UUID, ClaimedJob]:
    """A job claimed, brought to the full pass, then parked for ``wait_seconds``."""
    job_id = await queue.insert()
    job = await claim(queue, "w1")
    await queue.store.advance(
        job.fence, stage="full_pass", percent=70, label="Building deep memory", checkpoint={"a": 1}
    )
    await queue.store.park(
        job.fence,
        resume_at=await queue.now() + timedelta(seconds=wait_seconds),
        waiting_for=BATCH,
        checkpoint={"batch": "msgbatch_01"},
    )
    return job_id, job


async def test_a_parked_job_is_queued_until_its_time_and_resumed_uncharged(queue: Queue) -> None:
    job_id, _ = await parked_job(queue)
    now = await queue.now()
    row = await queue.row(job_id)
    assert (row["status"], row["attempt"], row["lease_owner"], row["lease_expires_at"]) == (
        "queued",
        0,
        None,
        None,
    ), "the lease released and the attempt given back"
    assert 599 <= seconds_between(row["run_after"], now) <= 600
    assert (row["stage"], row["progress_percent"]) == ("full_pass", 70), "kept as it was"
    assert row["checkpoint"] == {"a": 1, "batch": "msgbatch_01"}
    assert (row["waiting_for"], row["errors"], row["last_error"]) == (BATCH, [], None)
    assert 0 <= seconds_between(now, row["parked_at"]) <= 1
    assert await queue.store.has_active_jobs(), "a parked job is still to do"
    assert await queue.store.claim("w2") is None, "not before its time"

    await queue.travel(601)
    resumed = await claim(queue, "w2")
    assert (resumed.id, resumed.attempt, resumed.resumed_from_park) == (job_id, 1, True)
    assert resumed.waiting_for == BATCH and resumed.parked_at is not None
    assert resumed.checkpoint == {"a": 1, "batch": "msgbatch_01"}
    row = await queue.row(job_id)
    assert (row["status"], row["parked_at"], row["waiting_for"]) == ("running", None, None)
    await queue.store.succeed(resumed.fence, {})
    assert (await queue.row(job_id))["attempt"] == 1, "one attempt charged in all"


async def test_a_job_that_was_not_parked_is_not_resumed_from_a_park(queue: Queue) -> None:
    await queue.insert()
    job = await claim(queue)
    assert (job.resumed_from_park, job.parked_at, job.waiting_for) == (False, None, None)
    await queue.store.release(job.fence)
    assert not (await claim(queue)).resumed_from_park, "a released job was not parked"


async def test_a_park_after_the_lease_was_lost_writes_nothing(queue: Queue) -> None:
    job_id = await queue.insert()
    job = await claim(queue, "w1")
    await queue.take_over(job_id, "thief")
    before = await queue.row(job_id)
    with pytest.raises(LeaseLost):
        await queue.store.park(
            job.fence,
            resume_at=await queue.now() + timedelta(seconds=60),
            waiting_for=BATCH,
            checkpoint={"batch": "late"},
        )
    assert await queue.row(job_id) == before


async def test_a_park_resume_time_is_clamped_to_now_and_a_day(queue: Queue) -> None:
    past_id = await queue.insert()
    job = await claim(queue)
    now = await queue.now()
    parked = await queue.store.park(
        job.fence, resume_at=now - timedelta(days=3), waiting_for="the past"
    )
    assert abs(seconds_between(parked.resume_at, now)) <= 1, "not in the past"
    resumed = await claim(queue)
    assert resumed.id == past_id, "due at once"
    await queue.store.succeed(resumed.fence, {})

    far_id = await queue.insert()
    job = await claim(queue)
    now = await queue.now()
    parked = await queue.store.park(
        job.fence, resume_at=datetime(9999, 1, 1, tzinfo=UTC), waiting_for="the far future"
    )
    row = await queue.row(far_id)
    assert row["run_after"] == parked.run_after == parked.resume_at
    assert MAX_PARK_SECONDS <= seconds_between(row["run_after"], now) <= MAX_PARK_SECONDS + 1
    await queue.travel(MAX_PARK_SECONDS + 1)
    assert (await claim(queue)).id == far_id, "looked at again within a day"


async def test_a_parked_set_aside_job_stays_set_aside(queue: Queue) -> None:
    aside = await queue.insert(run_after_seconds=SET_ASIDE_SECONDS)
    job = await queue.store.claim_by_id("importer", aside)
    parked = await queue.store.park(
        job.fence, resume_at=await queue.now() + timedelta(seconds=60), waiting_for=BATCH
    )
    assert seconds_between(parked.run_after, parked.resume_at) > SET_ASIDE_SECONDS / 2
    await queue.travel(61)
    assert await queue.store.claim("w1") is None, "no other worker takes it"
    again = await queue.store.claim_by_id("importer", aside)
    assert (again.resumed_from_park, again.attempt) == (True, 1)


async def test_a_cancel_while_parked_makes_the_job_due_and_asks_its_worker(queue: Queue) -> None:
    job_id, _ = await parked_job(queue, wait_seconds=3600)
    assert await queue.request_cancel(job_id) == "cancel_requested"
    now = await queue.now()
    row = await queue.row(job_id)
    assert row["status"] == "queued", "not cancelled here: its outside work must be stopped"
    assert row["cancel_requested_at"] is not None and row["finished_at"] is None
    assert seconds_between(row["run_after"], now) <= 0, "due now"
    job = await claim(queue, "w2")
    assert (job.id, job.resumed_from_park) == (job_id, True)
    assert job.cancel_requested_at is not None, "the runner sees the cancel before any work"
    await queue.store.cancel(job.fence)
    row = await queue.row(job_id)
    assert (row["status"], row["last_error"]) == ("cancelled", "Import cancelled.")
    assert (row["parked_at"], row["waiting_for"]) == (None, None)


async def test_a_cancel_requested_before_a_park_makes_the_parked_job_due_now(
    queue: Queue,
) -> None:
    job_id = await queue.insert()
    job = await claim(queue)
    assert await queue.request_cancel(job_id) == "cancel_requested"
    await queue.store.park(
        job.fence, resume_at=await queue.now() + timedelta(hours=1), waiting_for=BATCH
    )
    assert seconds_between((await queue.row(job_id))["run_after"], await queue.now()) <= 0
    assert (await claim(queue, "w2")).cancel_requested_at is not None


# --- attempts, activity, pruning


async def test_a_claim_past_the_last_attempt_still_returns_the_job(queue: Queue) -> None:
    """A worker that died during the last attempt leaves a job the claim charges once more; the
    runner then fails it as ``attempts_exhausted``, so the claim must hand it out."""
    await queue.insert(max_attempts=1)
    await claim(queue, "dead-worker")
    await queue.travel(LEASE_SECONDS + 1)
    job = await claim(queue, "w2")
    assert (job.attempt, job.max_attempts) == (2, 1)


async def test_has_active_jobs_while_any_is_queued_or_running(queue: Queue) -> None:
    assert not await queue.store.has_active_jobs()
    await queue.insert(run_after_seconds=3600)
    assert await queue.store.has_active_jobs(), "queued, even if due later"
    await queue.travel(3601)
    job = await claim(queue)
    assert await queue.store.has_active_jobs(), "running"
    await queue.store.succeed(job.fence, {})
    assert not await queue.store.has_active_jobs()


async def test_working_data_is_pruned_once_no_retry_can_use_it(queue: Queue) -> None:
    async def failed_job_with_artifact(user: uuid.UUID | None = None) -> uuid.UUID:
        job_id = await queue.insert(user)
        job = await claim(queue)
        async with queue.store.fenced_transaction(job.fence) as tx:
            await tx.put_artifact("x", {})
            await tx.put_artifact("y", {})
        await queue.store.fail(job.fence, message="m", code="c", error_class="E", permanent=False)
        return job_id

    old = await failed_job_with_artifact()
    await queue.travel(31 * 86400)
    recent = await failed_job_with_artifact()
    running_id = await queue.insert()
    running = await claim(queue)
    async with queue.store.fenced_transaction(running.fence) as tx:
        await tx.put_artifact("x", {})
    await queue.travel(31 * 86400)
    assert await queue.store.prune_artifacts(40) == 2
    assert await queue.store.artifact_names(old) == set()
    assert await queue.store.artifact_names(recent) == {"x", "y"}
    assert await queue.store.artifact_names(running_id) == {"x"}, "a running job keeps its data"


async def test_concurrent_claims_never_take_the_same_job(queue: Queue) -> None:
    ids = {await queue.insert() for _ in range(10)}
    claimed = await asyncio.gather(*(queue.store.claim(f"w{i}") for i in range(15)))
    assert sorted(job.id for job in claimed if job is not None) == sorted(ids)
