"""What the worker decides: which job it claims, how many at once, when a drain ends, and how a
stop ends the work (docs/queue.md, "Claim" and "Shutdown"). The real Worker on the in-memory
store, no database and no listener; signals and subprocesses are tested in
tests/acceptance/test_worker_processes.py."""

from __future__ import annotations

import asyncio
from typing import Any

from soulworker.jobs.context import JobContext
from soulworker.jobs.job import ClaimedJob
from soulworker.jobs.worker import Worker
from soulworker.settings import Settings
from tests.memory_store import MemoryJobStore
from tests.unit.job_doubles import FunctionHandler, Work, fast_settings


def make_worker(store: MemoryJobStore, work: Work, **settings: Any) -> tuple[Worker, Settings]:
    chosen = fast_settings(**settings)
    store.lease_seconds = chosen.lease_seconds
    return Worker(chosen, store, FunctionHandler(work), "w-test", listen=False), chosen


def handler_of(worker: Worker) -> FunctionHandler:
    assert isinstance(worker.handler, FunctionHandler)
    return worker.handler


async def succeed(ctx: JobContext) -> dict[str, Any]:
    return {}


async def eventually(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


# --- claims


async def test_claims_go_by_priority_then_due_time_then_age() -> None:
    store = MemoryJobStore()
    old = store.insert()
    store.clock.advance(1)
    newer = store.insert()
    urgent = store.insert(priority=5)
    overdue = store.insert(run_after_seconds=-60)
    worker, _ = make_worker(store, succeed, concurrency=1)
    await asyncio.wait_for(worker.run(drain=True), timeout=5)
    assert handler_of(worker).started == [urgent, overdue, old, newer]
    assert {store.row(job).status for job in (old, newer, urgent, overdue)} == {"succeeded"}


async def test_never_more_jobs_at_once_than_the_concurrency() -> None:
    store = MemoryJobStore()
    jobs = [store.insert() for _ in range(5)]
    running = 0
    most = 0

    async def work(ctx: JobContext) -> dict[str, Any]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02)
        running -= 1
        return {}

    worker, _ = make_worker(store, work, concurrency=2)
    await asyncio.wait_for(worker.run(drain=True), timeout=5)
    assert most == 2
    assert [store.row(job).status for job in jobs] == ["succeeded"] * 5
    assert (worker.stats.claimed, worker.stats.finished) == (5, 5)


async def test_a_retried_job_is_claimed_again_only_once_its_backoff_passed() -> None:
    store = MemoryJobStore()
    job_id = store.insert()
    attempts: list[int] = []

    async def work(ctx: JobContext) -> dict[str, Any]:
        attempts.append(ctx.job.attempt)
        if ctx.job.attempt == 1:
            raise RuntimeError("fails once")
        return {}

    worker, _ = make_worker(store, work, retry_base_seconds=30, retry_max_seconds=60)
    drain = asyncio.create_task(worker.run(drain=True))
    await eventually(lambda: store.row(job_id).status == "queued" and attempts == [1])
    await asyncio.sleep(0.05)  # several polls
    assert attempts == [1] and not drain.done(), "a drain waits for a job due later"
    store.clock.advance(60)
    await asyncio.wait_for(drain, timeout=5)
    assert attempts == [1, 2] and store.row(job_id).status == "succeeded"


# --- drain


async def test_a_drain_with_nothing_to_do_ends_at_once() -> None:
    store = MemoryJobStore()
    worker, _ = make_worker(store, succeed)
    await asyncio.wait_for(worker.run(drain=True), timeout=1)
    assert worker.stats.claimed == 0


async def test_a_drain_waits_while_another_worker_runs_a_job() -> None:
    store = MemoryJobStore(lease_seconds=60)
    store.insert()
    elsewhere = await store.claim("another-worker")
    assert elsewhere is not None
    worker, _ = make_worker(store, succeed, lease_seconds=60)
    drain = asyncio.create_task(worker.run(drain=True))
    await asyncio.sleep(0.05)
    assert not drain.done(), "a job is still running elsewhere"
    await store.succeed(elsewhere.fence, {})
    await asyncio.wait_for(drain, timeout=5)
    assert worker.stats.claimed == 0


# --- stopping


async def test_a_stop_before_the_first_claim_claims_nothing() -> None:
    store = MemoryJobStore()
    job_id = store.insert()
    worker, _ = make_worker(store, succeed)
    worker.request_stop()
    await asyncio.wait_for(worker.run(), timeout=1)
    assert store.row(job_id).attempt == 0 and handler_of(worker).started == []


async def test_a_stop_ends_claiming_and_releases_a_running_job_at_its_checkpoint() -> None:
    store = MemoryJobStore()
    first = store.insert(priority=1)
    second = store.insert()
    started = asyncio.Event()
    may_go_on = asyncio.Event()

    async def work(ctx: JobContext) -> dict[str, Any]:
        started.set()
        await may_go_on.wait()
        await ctx.save_checkpoint({"step": 1}, stage="parse", percent=50, label="Step 1")
        await ctx.save_checkpoint({"step": 2}, stage="parse", percent=90, label="Step 2")
        return {}

    worker, _ = make_worker(store, work, concurrency=1, shutdown_seconds=5)
    loop = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), timeout=5)
    worker.request_stop()
    await asyncio.sleep(0.02)
    assert not loop.done(), "the running job is given its budget to reach a checkpoint"
    may_go_on.set()
    await asyncio.wait_for(loop, timeout=5)
    row = store.row(first)
    assert handler_of(worker).ended[first] == "ReleaseRequested"
    assert (row.status, row.attempt, row.checkpoint) == ("queued", 0, {"step": 1})
    assert handler_of(worker).started == [first], "nothing is claimed after the stop"
    assert store.row(second).attempt == 0


async def test_a_job_that_finishes_within_the_shutdown_budget_succeeds() -> None:
    store = MemoryJobStore()
    job_id = store.insert()
    started = asyncio.Event()
    may_go_on = asyncio.Event()

    async def work(ctx: JobContext) -> dict[str, Any]:
        started.set()
        await may_go_on.wait()
        return {"done": True}

    worker, _ = make_worker(store, work, shutdown_seconds=5)
    loop = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), timeout=5)
    worker.request_stop()
    may_go_on.set()
    await asyncio.wait_for(loop, timeout=5)
    assert (store.row(job_id).status, store.row(job_id).result) == ("succeeded", {"done": True})


async def test_a_job_without_a_checkpoint_is_cancelled_and_released_when_the_budget_is_spent() -> (
    None
):
    store = MemoryJobStore()
    job_id = store.insert()
    started = asyncio.Event()

    async def work(ctx: JobContext) -> dict[str, Any]:
        started.set()
        await asyncio.Event().wait()  # never reaches a checkpoint
        return {}

    worker, settings = make_worker(store, work, shutdown_seconds=0.1)
    loop = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), timeout=5)
    stop_at = asyncio.get_running_loop().time()
    worker.request_stop()
    await asyncio.wait_for(loop, timeout=5)
    waited = asyncio.get_running_loop().time() - stop_at
    row = store.row(job_id)
    assert handler_of(worker).ended[job_id] == "CancelledError"
    assert (row.status, row.attempt, row.errors) == ("queued", 0, []), "released, not charged"
    assert settings.shutdown_seconds <= waited < settings.shutdown_seconds + 1


class StopRequestedDuringTheClaim(MemoryJobStore):
    """The stop arrives while a claim is in flight (asks ``worker`` to stop as it returns)."""

    worker: Worker | None = None

    async def claim(self, owner: str) -> ClaimedJob | None:
        job = await super().claim(owner)
        assert self.worker is not None
        self.worker.request_stop()
        return job


async def test_a_job_claimed_as_the_stop_arrived_is_released_at_its_checkpoint() -> None:
    store = StopRequestedDuringTheClaim()
    job_id = store.insert(priority=1)
    other = store.insert()

    async def work(ctx: JobContext) -> dict[str, Any]:
        await ctx.save_checkpoint({"step": 1}, stage="parse", percent=10, label="Step")
        return {}

    worker, _ = make_worker(store, work, concurrency=2)
    store.worker = worker
    await asyncio.wait_for(worker.run(), timeout=5)
    row = store.row(job_id)
    assert handler_of(worker).ended[job_id] == "ReleaseRequested"
    assert handler_of(worker).started == [job_id], "a free slot is not filled once stopping"
    assert store.row(other).attempt == 0
    assert (row.status, row.attempt, row.checkpoint) == ("queued", 0, {"step": 1})
