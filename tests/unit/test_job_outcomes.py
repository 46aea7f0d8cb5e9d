"""What one attempt records, for every way it can end (docs/queue.md, "Outcomes"): the real
runner, lease keeper and job context on the in-memory store, no database. The store's own
statements are held to the SQL by tests/integration/test_store_contract.py."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest

from soulworker.errors import PermanentJobError, TransientJobError
from soulworker.jobs import runner as runner_module
from soulworker.jobs.backoff import JITTER
from soulworker.jobs.context import JobContext
from soulworker.jobs.errors import CancelRequested, LeaseLost
from soulworker.jobs.job import ClaimedJob
from soulworker.jobs.park import ParkJob
from soulworker.jobs.runner import WILL_BE_RETRIED, JobRun
from soulworker.settings import Settings
from soulworker.testing.memory_store import MemoryJobStore
from tests.unit.job_doubles import FunctionHandler, Work, fast_settings

RETRY_BASE = 30.0


@pytest.fixture
def settings() -> Settings:
    return fast_settings(retry_base_seconds=RETRY_BASE, retry_max_seconds=1800)


@pytest.fixture
def store(settings: Settings) -> MemoryJobStore:
    return MemoryJobStore(lease_seconds=settings.lease_seconds)


async def claim(store: MemoryJobStore, owner: str = "w1") -> ClaimedJob:
    job = await store.claim(owner)
    assert job is not None
    return job


async def run_attempt(
    store: MemoryJobStore, settings: Settings, work: Work, *, release: bool = False
) -> tuple[ClaimedJob, FunctionHandler]:
    """Claim the next job and run one attempt of it with ``work`` as the handler."""
    job = await claim(store)
    handler = FunctionHandler(work)
    run = JobRun(job, store, handler, settings)
    if release:
        run.request_release()  # as the worker does for a job it claims while stopping
    await asyncio.wait_for(run.run(), timeout=5)
    return job, handler


def retry_wait_seconds(store: MemoryJobStore, job_id: uuid.UUID) -> float:
    return (store.row(job_id).run_after - store.clock.now).total_seconds()


# --- the handler ends on its own


async def test_a_returned_result_is_a_success(store: MemoryJobStore, settings: Settings) -> None:
    job_id = store.insert()

    async def work(ctx: JobContext) -> dict[str, Any]:
        await ctx.save_checkpoint(
            {"parse": "done"}, stage="parse", percent=40, label="Parsed", result={"chunks": 3}
        )
        return {"answer": 42}

    await run_attempt(store, settings, work)
    row = store.row(job_id)
    assert (row.status, row.progress_percent, row.last_error) == ("succeeded", 100, None)
    assert row.result == {"chunks": 3, "answer": 42}
    assert row.checkpoint == {"parse": "done"} and row.attempt == 1


async def test_a_permanent_error_fails_the_job_at_once_with_its_message(
    store: MemoryJobStore, settings: Settings
) -> None:
    job_id = store.insert(max_attempts=3)

    async def work(ctx: JobContext) -> dict[str, Any]:
        raise PermanentJobError("The export is not a ChatGPT export.", code="not_an_export")

    await run_attempt(store, settings, work)
    row = store.row(job_id)
    assert row.status == "failed" and row.attempt == 1, "attempts were left, none is used"
    assert row.last_error == "The export is not a ChatGPT export."
    assert "retried" not in row.last_error
    [error] = row.errors
    assert (error["code"], error["permanent"], error["error_class"]) == (
        "not_an_export",
        True,
        "PermanentJobError",
    )


async def test_a_transient_error_with_attempts_left_queues_the_job_after_a_backoff(
    store: MemoryJobStore, settings: Settings
) -> None:
    job_id = store.insert(max_attempts=3)

    async def work(ctx: JobContext) -> dict[str, Any]:
        raise TransientJobError("The storage service is busy.", code="storage_busy")

    await run_attempt(store, settings, work)
    row = store.row(job_id)
    assert (row.status, row.attempt, row.lease_owner) == ("queued", 1, None)
    assert row.last_error == f"The storage service is busy. {WILL_BE_RETRIED}"
    first_wait = retry_wait_seconds(store, job_id)
    assert RETRY_BASE * (1 - JITTER) <= first_wait <= RETRY_BASE * (1 + JITTER)
    assert await store.claim("w2") is None, "not before the backoff has passed"

    store.clock.advance(first_wait)
    await run_attempt(store, settings, work)
    row = store.row(job_id)
    assert (row.status, row.attempt) == ("queued", 2)
    second_wait = retry_wait_seconds(store, job_id)
    assert 2 * RETRY_BASE * (1 - JITTER) <= second_wait <= 2 * RETRY_BASE * (1 + JITTER)
    assert [error["attempt"] for error in row.errors] == [1, 2]


async def test_a_transient_error_on_the_last_attempt_fails_the_job(
    store: MemoryJobStore, settings: Settings
) -> None:
    job_id = store.insert(max_attempts=2)

    async def work(ctx: JobContext) -> dict[str, Any]:
        raise TransientJobError("The storage service is busy.", code="storage_busy")

    await run_attempt(store, settings, work)
    store.clock.advance(3600)
    await run_attempt(store, settings, work)
    row = store.row(job_id)
    assert (row.status, row.attempt) == ("failed", 2)
    assert row.last_error == (
        "The storage service is busy. The import stopped after 2 attempts; "
        "please try it again later."
    )
    assert [error["permanent"] for error in row.errors] == [False, False]
    assert await store.claim("w3") is None


async def test_an_unexpected_error_is_retried_without_showing_its_text(
    store: MemoryJobStore, settings: Settings
) -> None:
    job_id = store.insert()

    async def work(ctx: JobContext) -> dict[str, Any]:
        raise RuntimeError("a bug, with private conversation text inside")

    await run_attempt(store, settings, work)
    row = store.row(job_id)
    assert row.status == "queued"
    assert row.last_error == f"The import failed because of an internal error. {WILL_BE_RETRIED}"
    [error] = row.errors
    assert (error["code"], error["error_class"]) == ("internal_error", "RuntimeError")
    assert "private" not in repr(row.errors)


async def test_an_attempt_past_its_time_limit_is_stopped_and_retried(store: MemoryJobStore) -> None:
    settings = fast_settings(job_timeout_seconds=0.05)
    job_id = store.insert()

    async def work(ctx: JobContext) -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    _, handler = await run_attempt(store, settings, work)
    row = store.row(job_id)
    assert handler.ended[job_id] == "CancelledError"
    assert (row.status, row.errors[0]["code"]) == ("queued", "time_limit")
    assert row.last_error is not None and row.last_error.endswith(WILL_BE_RETRIED)


# --- the handler is stopped


async def test_a_soft_stop_releases_the_job_at_its_next_checkpoint(
    store: MemoryJobStore, settings: Settings
) -> None:
    job_id = store.insert()
    steps: list[int] = []

    async def work(ctx: JobContext) -> dict[str, Any]:
        for step in (1, 2):
            steps.append(step)
            await ctx.save_checkpoint({"step": step}, stage="parse", percent=50, label="Step")
        return {"finished": True}

    _, handler = await run_attempt(store, settings, work, release=True)
    row = store.row(job_id)
    assert steps == [1], "nothing runs past the checkpoint"
    assert handler.ended[job_id] == "ReleaseRequested"
    assert (row.status, row.attempt, row.lease_owner, row.errors) == ("queued", 0, None, [])
    assert row.checkpoint == {"step": 1}, "the next worker resumes from here"
    assert row.run_after <= store.clock.now, "due again at once"
    again = await claim(store)
    assert (again.attempt, again.checkpoint) == (1, {"step": 1})


async def test_a_soft_stop_after_a_checkpoint_in_a_transaction_releases_the_job(
    store: MemoryJobStore, settings: Settings
) -> None:
    job_id = store.insert()

    async def work(ctx: JobContext) -> dict[str, Any]:
        async with ctx.transaction() as tx:
            await tx.put_artifact("sample", {"n": 1})
            await tx.advance(stage="parse", percent=35, label="Parsed", checkpoint={"parse": 1})
        return {"finished": True}

    await run_attempt(store, settings, work, release=True)
    row = store.row(job_id)
    assert (row.status, row.attempt, row.checkpoint) == ("queued", 0, {"parse": 1})
    assert await store.get_artifact(job_id, "sample") == {"n": 1}, "committed before release"


async def test_a_completing_checkpoint_under_a_soft_stop_lets_the_work_finish(
    store: MemoryJobStore, settings: Settings
) -> None:
    """Work that finished is not undone: the completing checkpoint is saved and the handler goes
    on to return its result, which is recorded, instead of being released."""
    job_id = store.insert()

    async def work(ctx: JobContext) -> dict[str, Any]:
        await ctx.save_checkpoint(
            {"finish": "done"}, stage="finish", percent=100, label="Done", completed=True
        )
        return {"soulprint": "written"}

    _, handler = await run_attempt(store, settings, work, release=True)
    row = store.row(job_id)
    assert handler.ended[job_id] == "returned"
    assert (row.status, row.attempt) == ("succeeded", 1)
    assert row.result == {"soulprint": "written"}
    assert row.checkpoint == {"finish": "done", "completed": True}


async def test_a_cancel_stops_the_handler_and_cancels_the_job(
    store: MemoryJobStore, settings: Settings
) -> None:
    job_id = store.insert()
    running = asyncio.Event()

    async def work(ctx: JobContext) -> dict[str, Any]:
        running.set()
        await asyncio.Event().wait()
        return {}

    attempt = asyncio.create_task(run_attempt(store, settings, work))
    await asyncio.wait_for(running.wait(), timeout=5)
    assert store.request_cancel(job_id) == "cancel_requested"
    _, handler = await attempt  # the next heartbeat, within 50 ms, sees the request
    row = store.row(job_id)
    assert handler.ended[job_id] == "CancelledError"
    assert (row.status, row.last_error) == ("cancelled", "Import cancelled.")
    assert row.finished_at is not None


async def test_a_cancel_the_handler_loses_is_sent_again_until_it_stops(
    store: MemoryJobStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Python 3.11's asyncio.wait_for (inside psycopg_pool's getconn, for one) can swallow a
    # cancel that arrives as the awaited thing completes; the handler then carries on. Such a
    # handler is imitated by one that catches the first cancel and goes back to waiting.
    monkeypatch.setattr(runner_module, "RECANCEL_SECONDS", 0.05)
    job_id = store.insert()
    running = asyncio.Event()
    swallowed = 0

    async def work(ctx: JobContext) -> dict[str, Any]:
        nonlocal swallowed
        running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed += 1
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        await asyncio.Event().wait()
        return {}

    attempt = asyncio.create_task(run_attempt(store, settings, work))
    await asyncio.wait_for(running.wait(), timeout=5)
    assert store.request_cancel(job_id) == "cancel_requested"
    _, handler = await attempt
    row = store.row(job_id)
    assert swallowed == 1
    assert handler.ended[job_id] == "CancelledError"
    assert (row.status, row.last_error) == ("cancelled", "Import cancelled.")


async def test_a_stop_noticed_after_the_handler_returned_is_still_a_success(
    store: MemoryJobStore, settings: Settings
) -> None:
    job_id = store.insert()

    async def work(ctx: JobContext) -> dict[str, Any]:
        store.request_cancel(job_id)
        ctx.stop_reason = CancelRequested("the heartbeat saw the cancel as the handler returned")
        return {"finished": True}

    await run_attempt(store, settings, work)
    row = store.row(job_id)
    assert (row.status, row.result) == ("succeeded", {"finished": True})


async def test_a_cancel_after_all_work_was_committed_is_a_success(
    store: MemoryJobStore, settings: Settings
) -> None:
    job_id = store.insert()

    async def work(ctx: JobContext) -> dict[str, Any]:
        await ctx.save_checkpoint(
            {"work": "done"}, stage="finish", percent=100, label="Done", completed=True
        )
        store.request_cancel(job_id)
        await asyncio.Event().wait()  # the heartbeat sees the cancel and stops us here
        return {"unreachable": True}

    _, handler = await run_attempt(store, settings, work)
    row = store.row(job_id)
    assert handler.ended[job_id] == "CancelledError"
    assert (row.status, row.last_error) == ("succeeded", None)


async def test_a_handler_whose_lease_was_lost_records_nothing(
    store: MemoryJobStore, settings: Settings
) -> None:
    job_id = store.insert()

    async def work(ctx: JobContext) -> dict[str, Any]:
        # The worker stalled past its lease and another took the job over.
        store.clock.advance(settings.lease_seconds + 1)
        assert (await claim(store, "w2")).id == job_id
        await ctx.save_checkpoint({"late": True}, stage="parse", percent=50, label="Late")
        return {"unreachable": True}

    _, handler = await run_attempt(store, settings, work)
    row = store.row(job_id)
    assert handler.ended[job_id] == "LeaseLost"
    assert (row.status, row.lease_owner, row.attempt) == ("running", "w2", 2)
    assert (row.checkpoint, row.errors, row.last_error) == ({}, [], None)


async def test_the_heartbeat_stops_a_handler_whose_lease_was_taken_over(
    store: MemoryJobStore, settings: Settings
) -> None:
    job_id = store.insert()
    running = asyncio.Event()

    async def work(ctx: JobContext) -> dict[str, Any]:
        running.set()
        await asyncio.Event().wait()
        return {}

    attempt = asyncio.create_task(run_attempt(store, settings, work))
    await asyncio.wait_for(running.wait(), timeout=5)
    store.clock.advance(settings.lease_seconds + 1)
    await claim(store, "w2")
    _, handler = await attempt
    row = store.row(job_id)
    assert handler.ended[job_id] == "CancelledError"
    assert (row.status, row.lease_owner, row.errors) == ("running", "w2", [])


async def test_a_lost_lease_is_reported_by_the_write_that_noticed_it(
    store: MemoryJobStore,
) -> None:
    store.insert()
    job = await claim(store)
    ctx = JobContext(job, store, progress_interval_seconds=0)
    store.clock.advance(store.lease_seconds + 1)
    await claim(store, "w2")
    with pytest.raises(LeaseLost):
        await ctx.save_checkpoint({"x": 1}, stage="parse", percent=10, label="x")
    with pytest.raises(LeaseLost):
        async with ctx.transaction() as tx:
            await tx.put_artifact("sample", {})
    assert ctx.checkpoint == {}


# --- what the claimed row says before any handler runs


async def test_a_job_whose_work_was_complete_is_recorded_as_succeeded_without_running(
    store: MemoryJobStore, settings: Settings
) -> None:
    job_id = store.insert()
    dead = await claim(store, "dead-worker")
    await store.advance(
        dead.fence, stage="finish", percent=100, label="Done", checkpoint={"completed": True}
    )
    store.clock.advance(settings.lease_seconds + 1)

    async def work(ctx: JobContext) -> dict[str, Any]:
        raise AssertionError("the work is done; it must not run again")

    _, handler = await run_attempt(store, settings, work)
    assert handler.started == []
    assert store.row(job_id).status == "succeeded"


async def test_a_job_cancelled_while_its_worker_was_dead_is_cancelled_without_running(
    store: MemoryJobStore, settings: Settings
) -> None:
    job_id = store.insert()
    await claim(store, "dead-worker")
    store.request_cancel(job_id)
    store.clock.advance(settings.lease_seconds + 1)
    _, handler = await run_attempt(store, settings, dict_result)
    assert handler.started == []
    assert (store.row(job_id).status, store.row(job_id).attempt) == ("cancelled", 2)


async def test_a_job_past_its_last_attempt_fails_without_running(
    store: MemoryJobStore, settings: Settings
) -> None:
    job_id = store.insert(max_attempts=1)
    await claim(store, "dead-worker")
    store.clock.advance(settings.lease_seconds + 1)
    _, handler = await run_attempt(store, settings, dict_result)
    row = store.row(job_id)
    assert handler.started == []
    assert (row.status, row.errors[0]["code"], row.errors[0]["permanent"]) == (
        "failed",
        "attempts_exhausted",
        True,
    )
    assert row.last_error == "The import was interrupted too many times. Please try it again later."


async def dict_result(ctx: JobContext) -> dict[str, Any]:
    return {}


# --- parking (docs/queue.md, "Parking a job")


class CancellingHandler(FunctionHandler):
    """A handler with ``on_cancel``: records the checkpoint it was given."""

    def __init__(self, work: Work) -> None:
        super().__init__(work)
        self.cancelled_with: list[dict[str, Any]] = []

    async def on_cancel(self, ctx: JobContext) -> None:
        self.cancelled_with.append(dict(ctx.checkpoint))


def park_for_a_minute(store: MemoryJobStore) -> Work:
    """Work that parks for a minute of the store's clock, then succeeds once resumed."""

    async def work(ctx: JobContext) -> dict[str, Any]:
        if ctx.resumed_from_park:
            return {"resumed": True}
        await ctx.progress("full_pass", 70, "Building deep memory")
        raise ParkJob(store.clock.now + timedelta(minutes=1), "batch b1", {"batch": "b1"})

    return work


async def test_a_park_queues_the_job_until_its_time_with_its_attempt_given_back(
    store: MemoryJobStore, settings: Settings
) -> None:
    job_id = store.insert()
    await run_attempt(store, settings, park_for_a_minute(store))
    row = store.row(job_id)
    assert (row.status, row.attempt, row.lease_owner, row.errors) == ("queued", 0, None, [])
    assert (row.stage, row.progress_percent, row.waiting_for) == ("full_pass", 70, "batch b1")
    assert row.checkpoint == {"batch": "b1"} and row.parked_at == store.clock.now
    assert await store.claim("w2") is None
    store.clock.advance(61)
    await run_attempt(store, settings, park_for_a_minute(store))
    row = store.row(job_id)
    assert (row.status, row.attempt, row.result) == ("succeeded", 1, {"resumed": True})


async def test_a_park_under_a_soft_stop_is_still_a_park(
    store: MemoryJobStore, settings: Settings
) -> None:
    """A worker shutting down lets its job park: waiting is what a release would do, and
    better, since the job keeps its time."""
    job_id = store.insert()
    await run_attempt(store, settings, park_for_a_minute(store), release=True)
    row = store.row(job_id)
    assert (row.status, row.waiting_for) == ("queued", "batch b1")
    assert row.run_after > store.clock.now


async def test_a_park_after_a_cancel_was_noticed_is_a_cancel(
    store: MemoryJobStore, settings: Settings
) -> None:
    job_id = store.insert()

    async def cancelled_then_parks(ctx: JobContext) -> dict[str, Any]:
        await ctx.save_checkpoint({"batch": "b1"}, stage="full_pass", percent=70, label="x")
        store.request_cancel(ctx.job.id)
        await asyncio.sleep(1)  # the heartbeat (every 50 ms) stops us before the park
        raise ParkJob(store.clock.now, "batch b1")

    job = await claim(store)
    handler = CancellingHandler(cancelled_then_parks)
    await asyncio.wait_for(JobRun(job, store, handler, settings).run(), timeout=5)
    assert store.row(job_id).status == "cancelled"
    assert handler.cancelled_with == [{"batch": "b1"}]


async def test_a_cancel_while_parked_calls_on_cancel_instead_of_run(
    store: MemoryJobStore, settings: Settings
) -> None:
    job_id = store.insert()
    handler = CancellingHandler(park_for_a_minute(store))
    job = await claim(store)
    await asyncio.wait_for(JobRun(job, store, handler, settings).run(), timeout=5)
    assert store.request_cancel(job_id) == "cancel_requested"
    job = await claim(store)
    await asyncio.wait_for(JobRun(job, store, handler, settings).run(), timeout=5)
    assert handler.started == [job_id], "run is not called for the cancelled job"
    assert handler.cancelled_with == [{"batch": "b1"}]
    assert (store.row(job_id).status, store.row(job_id).attempt) == ("cancelled", 1)


async def test_a_handler_without_on_cancel_is_cancelled_as_before(
    store: MemoryJobStore, settings: Settings
) -> None:
    job_id = store.insert()
    await run_attempt(store, settings, park_for_a_minute(store))
    store.request_cancel(job_id)
    _, handler = await run_attempt(store, settings, park_for_a_minute(store))
    assert handler.started == [] and store.row(job_id).status == "cancelled"
