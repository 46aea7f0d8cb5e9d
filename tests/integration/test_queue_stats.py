"""``queue_stats``: the queue's health read from a database in a known state, and the side task
that logs it once per interval from one worker among several (docs/queue.md, "Queue health")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
import structlog
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from soulworker import db
from soulworker.jobs.context import JobContext
from soulworker.jobs.queue_stats import EVENT, QueueStatsReporter, read_queue_stats
from soulworker.jobs.store import JobStore
from soulworker.jobs.worker import Worker
from soulworker.settings import Settings

pytestmark = pytest.mark.db

Conn = psycopg.AsyncConnection[DictRow]
SET_ASIDE = "9999-01-01 00:00:00+00"
# The stats run in a later transaction than the inserts, so ages grow by the time between them.
AGE_TOLERANCE_SECONDS = 5.0


async def insert_job(conn: Conn, status: str, **seconds_ago: float | str | None) -> None:
    """A job in ``status`` whose time columns are ``now() - N seconds`` (a str is taken as is)."""
    user = uuid.uuid4()
    columns: dict[str, Any] = {"user_id": user, "storage_path": f"imports/{user}/x.zip"}
    columns["status"] = status
    expressions = {name: "%(" + name + ")s" for name in columns}
    for name, value in seconds_ago.items():
        if isinstance(value, str):
            columns[name] = value
            expressions[name] = f"%({name})s::timestamptz"
        else:
            columns[name] = value
            expressions[name] = f"now() - make_interval(secs => %({name})s)"
    if status == "running":
        columns["lease_owner"] = "some-worker"
        columns["attempt"] = 1
        expressions["lease_owner"] = "%(lease_owner)s"
        expressions["attempt"] = "%(attempt)s"
    await conn.execute(
        f"insert into import_jobs ({', '.join(expressions)}) "
        f"values ({', '.join(expressions.values())})",
        columns,
    )


async def test_queue_stats_fields_from_a_known_state(conn: Conn) -> None:
    # Queued: two due (waiting 300 s and 10 s), one waiting for its retry, one set aside long ago.
    await insert_job(conn, "queued", run_after=300, created_at=400)
    await insert_job(conn, "queued", run_after=10)
    await insert_job(conn, "queued", run_after=-60)
    await insert_job(conn, "queued", run_after=SET_ASIDE, created_at=86_400)
    # Parked a week ago (as if) until an hour from now: waiting, neither due nor overdue.
    user = uuid.uuid4()
    await conn.execute(
        "insert into import_jobs (user_id, storage_path, created_at, run_after, parked_at, "
        "waiting_for) values (%s, %s, now() - interval '7 days', now() + interval '1 hour', "
        "now() - interval '7 days', 'message batch b (processing)')",
        (user, f"imports/{user}/x.zip"),
    )
    # Running: one healthy, one whose worker stopped beating 90 s ago and whose lease ran out.
    await insert_job(conn, "running", heartbeat_at=5, lease_expires_at=-55, started_at=60)
    await insert_job(conn, "running", heartbeat_at=90, lease_expires_at=30, started_at=600)
    # Ended: a failure in the last hour, one older, a success and a cancel.
    await insert_job(conn, "failed", finished_at=600)
    await insert_job(conn, "failed", finished_at=7200)
    await insert_job(conn, "succeeded", finished_at=600)
    await insert_job(conn, "cancelled", finished_at=0)

    stats = await read_queue_stats(conn)

    ages = {
        name: stats.pop(name) for name in ("oldest_queued_seconds", "max_heartbeat_age_seconds")
    }
    assert stats == {
        "queued": 5,
        "queued_due": 2,
        "set_aside": 1,
        "parked": 1,
        "running": 2,
        "succeeded": 1,
        "failed": 2,
        "cancelled": 1,
        "stale_running": 1,
        "failed_last_hour": 1,
    }
    # The set-aside job was created a day ago: it is not the oldest queued one, the 300 s one is.
    assert 300 <= ages["oldest_queued_seconds"] < 300 + AGE_TOLERANCE_SECONDS
    assert 90 <= ages["max_heartbeat_age_seconds"] < 90 + AGE_TOLERANCE_SECONDS


async def test_queue_stats_of_an_empty_queue_are_zero(conn: Conn) -> None:
    await insert_job(conn, "queued", run_after=SET_ASIDE)
    stats = await read_queue_stats(conn)
    assert stats["oldest_queued_seconds"] == 0
    assert stats["max_heartbeat_age_seconds"] == 0
    assert (stats["queued"], stats["queued_due"], stats["set_aside"]) == (1, 0, 1)


@contextlib.contextmanager
def captured_logs() -> Iterator[list[structlog.typing.EventDict]]:
    """Every structlog event at any level, whatever level the session configured."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**saved)


class IdleHandler:
    async def run(self, ctx: JobContext) -> dict[str, Any]:
        return {}

    async def aclose(self) -> None:
        pass


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[JobStore]:
    pool: AsyncConnectionPool[Conn] = db.create_pool(settings, "test queue stats", max_size=4)
    await pool.open(wait=True)
    try:
        yield JobStore(pool, lease_seconds=30)
    finally:
        await pool.close()


def a_worker(settings: Settings, store: JobStore, worker_id: str) -> Worker:
    chosen = settings.replace(queue_stats_seconds=0.05, poll_seconds=0.05)
    reporter = QueueStatsReporter(chosen, worker_id, elect=True)
    return Worker(chosen, store, IdleHandler(), worker_id, listen=False, queue_stats=reporter)


async def run_for(seconds: float, worker: Worker) -> None:
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(seconds)
    worker.request_stop()
    await asyncio.wait_for(task, timeout=10)


async def test_one_of_two_workers_logs_queue_stats_and_the_other_takes_over(
    settings: Settings, store: JobStore
) -> None:
    workers = {w.worker_id: w for w in (a_worker(settings, store, f"w-{n}") for n in (1, 2))}
    tasks = {worker_id: asyncio.create_task(w.run()) for worker_id, w in workers.items()}
    with captured_logs() as logs:
        await asyncio.sleep(0.6)
        reporters = [entry["worker"] for entry in logs if entry["event"] == EVENT]
        assert len(reporters) >= 3, "an event per interval"
        assert len(set(reporters)) == 1, f"only one worker reports: {set(reporters)}"
        event = next(entry for entry in logs if entry["event"] == EVENT)
        assert event["log_level"] == "info"
        assert {"queued", "oldest_queued_seconds", "stale_running", "failed_last_hour"} <= set(
            event
        )

        # The reporting worker stops: its connection, and the lock with it, go; the other
        # worker, still running, takes over at its next interval.
        leader = reporters[0]
        (other,) = set(workers) - {leader}
        workers[leader].request_stop()
        await asyncio.wait_for(tasks[leader], timeout=10)
        seen = len(logs)
        await asyncio.sleep(0.5)
        workers[other].request_stop()
        await asyncio.wait_for(tasks[other], timeout=10)
    later = [entry["worker"] for entry in logs[seen:] if entry["event"] == EVENT]
    assert later, "the other worker reports once the first is gone"
    assert set(later) == {other}


async def test_a_failing_stats_query_is_logged_and_the_worker_goes_on(
    settings: Settings, store: JobStore
) -> None:
    unreachable = settings.replace(
        database_url="postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2",
        queue_stats_seconds=0.05,
        poll_seconds=0.05,
    )
    reporter = QueueStatsReporter(unreachable, "w-blind", elect=True)
    worker = Worker(
        settings.replace(queue_stats_seconds=0.05, poll_seconds=0.05),
        store,
        IdleHandler(),
        "w-blind",
        listen=False,
        queue_stats=reporter,
    )
    with captured_logs() as logs:
        await run_for(0.4, worker)
    events = [entry["event"] for entry in logs]
    assert "queue stats unavailable" in events
    assert EVENT not in events
    assert events[-1] == "worker stopped", "the worker ran on and stopped when asked"


async def test_a_reporter_whose_connection_was_closed_reconnects_without_a_warning(
    settings: Settings, conn: Conn
) -> None:
    reporter = QueueStatsReporter(settings, "w-kept", elect=True)
    try:
        assert await reporter.report_once()
        await conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where application_name = %s",
            (reporter.application_name,),
        )
        with captured_logs() as logs:
            assert await reporter.report_once(), "a fresh connection, the lock taken again"
        assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == []
        assert reporter.reports == 2
    finally:
        await reporter.aclose()
