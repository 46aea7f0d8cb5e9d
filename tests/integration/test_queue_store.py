"""The queue's database verbs on a real Postgres: claims, leases, fences, outcomes, profiles."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from soulworker import db
from soulworker.jobs.errors import JobNotClaimable, LeaseLost
from soulworker.jobs.job import ClaimedJob
from soulworker.jobs.store import JobStore
from soulworker.settings import Settings

pytestmark = pytest.mark.db

Conn = psycopg.AsyncConnection[DictRow]


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[JobStore]:
    pool: AsyncConnectionPool[Conn] = db.create_pool(settings, "test store", max_size=4)
    await pool.open(wait=True)
    try:
        yield JobStore(pool, lease_seconds=30)
    finally:
        await pool.close()


async def insert_job(conn: Conn, user: uuid.UUID | None = None, **columns: Any) -> uuid.UUID:
    user = user or uuid.uuid4()
    values = {"user_id": user, "storage_path": f"imports/{user}/export.zip", **columns}
    names = ", ".join(values)
    placeholders = ", ".join(f"%({name})s" for name in values)
    cur = await conn.execute(
        f"insert into import_jobs ({names}) values ({placeholders}) returning id",
        values,
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


async def profile_row(conn: Conn, user_id: uuid.UUID) -> dict[str, Any] | None:
    cur = await conn.execute("select * from user_profiles where user_id = %s", (user_id,))
    row = await cur.fetchone()
    return dict(row) if row else None


async def claim(store: JobStore, owner: str = "w1") -> ClaimedJob:
    job = await store.claim(owner)
    assert job is not None
    return job


async def test_claim_order_is_priority_then_age_and_skips_future_jobs(
    conn: Conn, store: JobStore
) -> None:
    old = await insert_job(conn)
    await asyncio.sleep(0.01)
    newer = await insert_job(conn)
    urgent = await insert_job(conn, priority=5)
    await insert_job(conn, run_after="infinity")
    assert [(await claim(store)).id for _ in range(3)] == [urgent, old, newer]
    assert await store.claim("w1") is None


async def test_claim_sets_the_lease_and_charges_an_attempt(conn: Conn, store: JobStore) -> None:
    job_id = await insert_job(conn)
    job = await claim(store, "worker-a")
    row = await job_row(conn, job_id)
    assert row["status"] == "running"
    assert row["attempt"] == job.attempt == 1
    assert row["lease_owner"] == "worker-a"
    assert row["lease_expires_at"] > row["heartbeat_at"]
    assert row["started_at"] is not None


async def test_concurrent_claims_never_take_the_same_job(conn: Conn, store: JobStore) -> None:
    ids = {await insert_job(conn) for _ in range(20)}
    claimed = await asyncio.gather(*(store.claim(f"w{i}") for i in range(30)))
    got = [job.id for job in claimed if job is not None]
    assert sorted(got) == sorted(ids)


async def test_expired_lease_is_rescued_with_a_charged_attempt(conn: Conn, store: JobStore) -> None:
    job_id = await insert_job(conn)
    first = await claim(store, "dead-worker")
    assert await store.claim("w2") is None, "a live lease is not taken"
    await conn.execute(
        "update import_jobs set lease_expires_at = now() - interval '1 second' where id = %s",
        (job_id,),
    )
    second = await claim(store, "w2")
    assert second.id == job_id and second.attempt == 2
    # The dead worker's writes are fenced off from now on.
    with pytest.raises(LeaseLost):
        await store.heartbeat(first.fence)
    with pytest.raises(LeaseLost):
        await store.advance(first.fence, stage="parse", percent=40, label="late")
    with pytest.raises(LeaseLost):
        await store.succeed(first.fence, {"late": True})
    row = await job_row(conn, job_id)
    assert (row["status"], row["progress_percent"], row["result"]) == ("running", 0, {})


async def test_fenced_transaction_rolls_back_when_the_lease_is_lost(
    conn: Conn, store: JobStore
) -> None:
    job_id = await insert_job(conn)
    job = await claim(store)
    await conn.execute("create table scratch (n integer)")
    with pytest.raises(LeaseLost):
        async with store.fenced_transaction(job.fence) as tx:
            await tx.conn.execute("insert into scratch values (1)")
            await conn.execute(
                "update import_jobs set lease_owner = 'thief', attempt = attempt + 1 where id = %s",
                (job_id,),
            )
    cur = await conn.execute("select count(*) as n from scratch")
    assert (await cur.fetchone()) == {"n": 0}


async def test_progress_never_decreases_and_mirrors_to_the_profile(
    conn: Conn, store: JobStore
) -> None:
    user = uuid.uuid4()
    await insert_job(conn, user)
    job = await claim(store)
    await store.mark_started(job.fence, "Starting import")
    profile = await profile_row(conn, user)
    assert profile is not None
    assert (profile["import_status"], profile["progress_percent"]) == ("processing", 0)
    assert profile["full_pass_status"] == "pending"
    assert profile["import_job_id"] == job.id
    assert await store.advance(job.fence, stage="download", percent=12, label="Downloading") == 12
    assert await store.advance(job.fence, stage="download", percent=7, label="Downloading") == 12
    profile = await profile_row(conn, user)
    assert profile is not None
    assert (profile["progress_percent"], profile["import_stage"]) == (12, "Downloading")


async def test_checkpoint_and_result_merge(conn: Conn, store: JobStore) -> None:
    job_id = await insert_job(conn)
    job = await claim(store)
    await store.advance(
        job.fence,
        stage="download",
        percent=20,
        label="x",
        checkpoint={"download": {"bytes": 10}},
        result={"export_bytes": 10},
    )
    await store.advance(
        job.fence,
        stage="parse",
        percent=35,
        label="y",
        checkpoint={"parse": {"done": True}},
        result={"chunks": 3},
    )
    row = await job_row(conn, job_id)
    assert row["checkpoint"] == {"download": {"bytes": 10}, "parse": {"done": True}}
    assert row["result"] == {"export_bytes": 10, "chunks": 3}


async def test_success_finishes_the_job_and_the_profile(conn: Conn, store: JobStore) -> None:
    user = uuid.uuid4()
    job_id = await insert_job(conn, user)
    job = await claim(store)
    await store.mark_started(job.fence, "Starting")
    async with store.fenced_transaction(job.fence) as tx:
        await tx.conn.execute(
            "insert into import_job_artifacts (job_id, name, content) values (%s, 'sample', '{}')",
            (job_id,),
        )
    await store.succeed(job.fence, {"chunks": 4})
    row = await job_row(conn, job_id)
    assert (row["status"], row["progress_percent"]) == ("succeeded", 100)
    assert row["result"] == {"chunks": 4}
    assert row["finished_at"] is not None
    profile = await profile_row(conn, user)
    assert profile is not None
    assert (profile["import_status"], profile["progress_percent"]) == ("complete", 100)
    cur = await conn.execute("select count(*) as n from import_job_artifacts")
    assert (await cur.fetchone()) == {"n": 0}, "personal working data is deleted on success"


async def test_release_gives_the_attempt_back(conn: Conn, store: JobStore) -> None:
    user = uuid.uuid4()
    job_id = await insert_job(conn, user)
    job = await claim(store)
    await store.mark_started(job.fence, "Starting")
    await store.advance(
        job.fence, stage="parse", percent=30, label="Parsing", checkpoint={"download": "done"}
    )
    await store.release(job.fence)
    row = await job_row(conn, job_id)
    assert (row["status"], row["attempt"], row["lease_owner"]) == ("queued", 0, None)
    assert row["checkpoint"] == {"download": "done"}
    profile = await profile_row(conn, user)
    assert profile is not None and profile["import_status"] == "processing"
    again = await claim(store)
    assert again.attempt == 1 and again.checkpoint == {"download": "done"}


async def test_retry_later_records_the_error_and_backs_off(conn: Conn, store: JobStore) -> None:
    user = uuid.uuid4()
    job_id = await insert_job(conn, user)
    job = await claim(store)
    await store.mark_started(job.fence, "Starting")
    await store.advance(job.fence, stage="download", percent=5, label="Downloading")
    status, run_after = await store.retry_later(
        job.fence,
        delay_seconds=120,
        message="Storage is busy.",
        code="storage_unavailable",
        error_class="TransientJobError",
    )
    row = await job_row(conn, job_id)
    assert status == "queued"
    assert row["status"] == "queued" and row["run_after"] == run_after
    assert row["last_error"] == "Storage is busy."
    (entry,) = row["errors"]
    assert entry["attempt"] == 1 and entry["stage"] == "download"
    assert entry["code"] == "storage_unavailable" and entry["permanent"] is False
    assert await store.claim("w2") is None, "not before run_after"
    profile = await profile_row(conn, user)
    assert profile is not None
    assert (profile["import_status"], profile["import_error"]) == ("processing", None)


async def test_final_failure_before_quick_ready_fails_the_import(
    conn: Conn, store: JobStore
) -> None:
    user = uuid.uuid4()
    job_id = await insert_job(conn, user)
    job = await claim(store)
    await store.mark_started(job.fence, "Starting")
    await store.fail(
        job.fence,
        message="The export was not found.",
        code="export_not_found",
        error_class="ExportNotFound",
        permanent=True,
    )
    row = await job_row(conn, job_id)
    assert (row["status"], row["last_error"]) == ("failed", "The export was not found.")
    assert row["errors"][0]["permanent"] is True
    profile = await profile_row(conn, user)
    assert profile is not None
    assert (profile["import_status"], profile["import_error"]) == (
        "failed",
        "The export was not found.",
    )


async def test_final_failure_after_quick_ready_fails_only_the_full_pass(
    conn: Conn, store: JobStore
) -> None:
    user = uuid.uuid4()
    await insert_job(conn, user)
    job = await claim(store)
    await store.mark_started(job.fence, "Starting")
    await conn.execute(
        "update user_profiles set import_status = 'quick_ready', soul_md = '{}' where user_id = %s",
        (user,),
    )
    await store.fail(
        job.fence,
        message="The model service is unavailable.",
        code="model_unavailable",
        error_class="ModelUnavailable",
        permanent=False,
    )
    profile = await profile_row(conn, user)
    assert profile is not None
    assert (profile["import_status"], profile["import_error"]) == ("quick_ready", None)
    assert (profile["full_pass_status"], profile["full_pass_error"]) == (
        "failed",
        "The model service is unavailable.",
    )
    assert profile["soul_md"] == "{}"


async def test_a_new_import_takes_over_a_complete_profile(conn: Conn, store: JobStore) -> None:
    user = uuid.uuid4()
    await conn.execute(
        "insert into user_profiles (user_id, import_status, ai_name, full_pass_status, "
        "progress_percent) values (%s, 'complete', 'Nova', 'complete', 100)",
        (user,),
    )
    await insert_job(conn, user)
    job = await claim(store)
    await store.mark_started(job.fence, "Starting import")
    profile = await profile_row(conn, user)
    assert profile is not None
    assert (profile["import_status"], profile["progress_percent"]) == ("processing", 0)
    assert profile["full_pass_status"] == "pending"
    assert profile["ai_name"] == "Nova", "the previous soulprint stays until replaced"


async def test_operator_cancel_of_a_queued_job(conn: Conn) -> None:
    user = uuid.uuid4()
    job_id = await insert_job(conn, user)
    cur = await conn.execute("select cancel_import_job(%s) as status", (job_id,))
    assert (await cur.fetchone()) == {"status": "cancelled"}
    row = await job_row(conn, job_id)
    assert row["status"] == "cancelled" and row["finished_at"] is not None
    profile = await profile_row(conn, user)
    assert profile is not None
    assert (profile["import_status"], profile["import_error"]) == ("failed", "Import cancelled.")
    with pytest.raises(pg_errors.ObjectNotInPrerequisiteState, match="already finished"):
        await conn.execute("select cancel_import_job(%s)", (job_id,))


async def test_operator_cancel_of_a_running_job_is_seen_by_the_heartbeat(
    conn: Conn, store: JobStore
) -> None:
    job_id = await insert_job(conn)
    job = await claim(store)
    assert await store.heartbeat(job.fence) is None
    cur = await conn.execute("select cancel_import_job(%s) as status", (job_id,))
    assert (await cur.fetchone()) == {"status": "cancel_requested"}
    assert await store.heartbeat(job.fence) is not None
    await store.cancel(job.fence)
    row = await job_row(conn, job_id)
    assert (row["status"], row["last_error"]) == ("cancelled", "Import cancelled.")


async def test_operator_retry(conn: Conn, store: JobStore) -> None:
    user = uuid.uuid4()
    job_id = await insert_job(conn, user)
    with pytest.raises(pg_errors.ObjectNotInPrerequisiteState, match="only a failed or cancelled"):
        await conn.execute("select retry_import_job(%s)", (job_id,))
    job = await claim(store)
    await store.mark_started(job.fence, "Starting")
    await store.advance(job.fence, stage="parse", percent=30, label="x", checkpoint={"a": 1})
    await store.fail(job.fence, message="Bad export.", code="bad", error_class="X", permanent=True)
    cur = await conn.execute("select retry_import_job(%s) as status", (job_id,))
    assert (await cur.fetchone()) == {"status": "queued"}
    row = await job_row(conn, job_id)
    assert (row["status"], row["attempt"], row["last_error"], row["finished_at"]) == (
        "queued",
        0,
        None,
        None,
    )
    assert row["checkpoint"] == {"a": 1} and len(row["errors"]) == 1
    profile = await profile_row(conn, user)
    assert profile is not None and profile["import_status"] == "processing"
    assert (await claim(store)).attempt == 1


async def test_operator_retry_refuses_when_the_user_has_another_active_job(conn: Conn) -> None:
    user = uuid.uuid4()
    job_id = await insert_job(conn, user)
    await conn.execute("select cancel_import_job(%s)", (job_id,))
    await insert_job(conn, user)
    with pytest.raises(pg_errors.UniqueViolation, match="already has an active import"):
        await conn.execute("select retry_import_job(%s)", (job_id,))
    with pytest.raises(pg_errors.NoDataFound):
        await conn.execute("select retry_import_job(%s)", (uuid.uuid4(),))


async def test_overview_view(conn: Conn, store: JobStore) -> None:
    await insert_job(conn)
    await insert_job(conn)
    job = await claim(store, "host:1:abc")
    await store.fail(job.fence, message="Bad export.", code="bad", error_class="X", permanent=True)
    await insert_job(conn)
    running = await claim(store, "host:2:def")
    cur = await conn.execute("select * from import_jobs_overview")
    rows = await cur.fetchall()
    queue = {row["status"]: row["jobs"] for row in rows if row["section"] == "queue"}
    assert queue == {"failed": 1, "running": 1, "queued": 1}
    (running_row,) = [row for row in rows if row["section"] == "running"]
    assert running_row["job_id"] == running.id and running_row["worker"] == "host:2:def"
    (failure,) = [row for row in rows if row["section"] == "failure"]
    assert failure["last_error"] == "Bad export."


async def test_a_cancel_requested_during_a_failing_attempt_is_not_lost(
    conn: Conn, store: JobStore
) -> None:
    """The failure would requeue the job (or fail it); the cancel wins, the failure is kept."""
    for permanent in (False, True):
        user = uuid.uuid4()
        job_id = await insert_job(conn, user)
        job = await claim(store)
        await store.mark_started(job.fence, "Starting")
        await conn.execute("select cancel_import_job(%s)", (job_id,))
        if permanent:
            await store.fail(
                job.fence, message="Bad export.", code="bad", error_class="X", permanent=True
            )
        else:
            status, _ = await store.retry_later(
                job.fence, delay_seconds=600, message="Busy.", code="busy", error_class="Y"
            )
            assert status == "cancelled"
        row = await job_row(conn, job_id)
        assert (row["status"], row["last_error"]) == ("cancelled", "Import cancelled.")
        assert row["finished_at"] is not None
        assert len(row["errors"]) == 1, "the failure itself is still on record"
        profile = await profile_row(conn, user)
        assert profile is not None
        assert (profile["import_status"], profile["import_error"]) == (
            "failed",
            "Import cancelled.",
        )


async def test_a_superseded_job_cannot_be_retried(conn: Conn, store: JobStore) -> None:
    user = uuid.uuid4()
    old = await insert_job(conn, user)
    job = await claim(store)
    await store.fail(job.fence, message="Busy.", code="busy", error_class="X", permanent=True)
    await asyncio.sleep(0.01)
    await insert_job(conn, user)
    newer = await claim(store)
    await store.succeed(newer.fence, {})
    with pytest.raises(pg_errors.ObjectNotInPrerequisiteState, match="superseded"):
        await conn.execute("select retry_import_job(%s)", (old,))


async def test_working_data_is_pruned_once_no_retry_can_use_it(conn: Conn, store: JobStore) -> None:
    async def artifacts(job_id: uuid.UUID) -> int:
        cur = await conn.execute(
            "select count(*) as n from import_job_artifacts where job_id = %s", (job_id,)
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row["n"])

    async def failed_job_with_artifact(user: uuid.UUID) -> uuid.UUID:
        job_id = await insert_job(conn, user)
        job = await claim(store)
        await conn.execute(
            "insert into import_job_artifacts (job_id, name, content) values (%s, 'x', '{}')",
            (job_id,),
        )
        await store.fail(job.fence, message="m", code="c", error_class="E", permanent=False)
        return job_id

    recent = await failed_job_with_artifact(uuid.uuid4())
    old = await failed_job_with_artifact(uuid.uuid4())
    await conn.execute(
        "update import_jobs set finished_at = now() - interval '31 days' where id = %s", (old,)
    )
    assert await store.prune_artifacts(30) == 1
    assert (await artifacts(recent), await artifacts(old)) == (1, 0)

    # A later successful import of the same user removes the earlier job's data at once.
    user = uuid.uuid4()
    earlier = await failed_job_with_artifact(user)
    await insert_job(conn, user)
    later = await claim(store)
    await store.succeed(later.fence, {})
    assert await artifacts(earlier) == 0


# --- one named job (docs/queue.md, "One named job")

SET_ASIDE = "9999-01-01 00:00:00+00"
"""soulworker import's run_after: a job no claim_job ever takes."""


async def test_a_named_job_is_claimed_alone_whatever_its_run_after(
    conn: Conn, store: JobStore
) -> None:
    other = await insert_job(conn, priority=5)
    aside = await insert_job(conn, run_after=SET_ASIDE)
    other_before = await job_row(conn, other)

    job = await store.claim_by_id("named", aside)
    row = await job_row(conn, aside)
    assert job.id == aside and job.attempt == row["attempt"] == 1
    assert job.fence.owner == row["lease_owner"] == "named"
    assert row["status"] == "running"
    assert row["lease_expires_at"] > row["heartbeat_at"]
    assert row["started_at"] is not None
    assert await job_row(conn, other) == other_before, "the other job is untouched"

    assert (await claim(store, "daemon")).id == other
    assert await store.claim("daemon") is None, "the named job is never claimed again"


async def test_a_set_aside_job_is_never_claimed_by_the_queue(conn: Conn, store: JobStore) -> None:
    await insert_job(conn, run_after=SET_ASIDE, priority=2**31 - 1)
    assert await store.claim("daemon") is None


async def test_a_named_job_with_an_expired_lease_is_rescued_like_any_claim(
    conn: Conn, store: JobStore
) -> None:
    job_id = await insert_job(conn, run_after=SET_ASIDE)
    first = await store.claim_by_id("dead", job_id)
    with pytest.raises(JobNotClaimable, match="it is running, held by dead until"):
        await store.claim_by_id("w2", job_id)
    await conn.execute(
        "update import_jobs set lease_expires_at = now() - interval '1 second' where id = %s",
        (job_id,),
    )
    second = await store.claim_by_id("w2", job_id)
    assert (second.id, second.attempt) == (job_id, 2)
    with pytest.raises(LeaseLost):
        await store.heartbeat(first.fence)


async def test_a_named_job_that_is_not_claimable_says_why_and_is_left_alone(
    conn: Conn, store: JobStore
) -> None:
    missing = uuid.uuid4()
    with pytest.raises(JobNotClaimable) as caught:
        await store.claim_by_id("w1", missing)
    assert str(caught.value) == f"import job {missing} cannot be claimed: no import job has this id"

    running = await insert_job(conn)
    await claim(store, "holder")
    with pytest.raises(JobNotClaimable, match=r"it is running, held by holder until \d{4}-"):
        await store.claim_by_id("w1", running)
    row = await job_row(conn, running)
    assert (row["attempt"], row["lease_owner"]) == (1, "holder")

    succeeded = await insert_job(conn)
    await store.succeed((await claim(store)).fence, {})
    with pytest.raises(JobNotClaimable, match=r"it has already ended \(succeeded\)"):
        await store.claim_by_id("w1", succeeded)

    cancelled = await insert_job(conn)
    await conn.execute("select cancel_import_job(%s)", (cancelled,))
    with pytest.raises(JobNotClaimable, match=r"it has already ended \(cancelled\)"):
        await store.claim_by_id("w1", cancelled)
    row = await job_row(conn, cancelled)
    assert (row["status"], row["attempt"]) == ("cancelled", 0)


async def test_a_released_named_job_stays_set_aside(conn: Conn, store: JobStore) -> None:
    job_id = await insert_job(conn, run_after=SET_ASIDE)
    job = await store.claim_by_id("named", job_id)
    await store.release(job.fence)
    row = await job_row(conn, job_id)
    assert (row["status"], row["attempt"], row["lease_owner"]) == ("queued", 0, None)
    assert row["run_after"].year == 9999, "a release keeps a later run_after"
    assert await store.claim("daemon") is None
    assert (await store.claim_by_id("named", job_id)).attempt == 1
