"""The queue under real worker processes and real signals (docs/queue.md)."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from soulworker.testing.scripted_handler import RUNS_TABLE
from tests.acceptance.workers import (
    REPO_ROOT,
    WorkerProcess,
    handler_events,
    query,
    wait_for,
)

pytestmark = pytest.mark.db

FAST = {
    "SOULWORKER_LEASE_SECONDS": "2",  # heartbeat every 0.5 s
    "SOULWORKER_POLL_SECONDS": "0.5",
    "SOULWORKER_RETRY_BASE_SECONDS": "0.2",
    "SOULWORKER_RETRY_MAX_SECONDS": "2",
}


@pytest.fixture
def db_url(database_url: str) -> str:
    query(database_url, RUNS_TABLE)
    return database_url


def enqueue(db_url: str, script: str, **columns: Any) -> uuid.UUID:
    user = uuid.uuid4()
    values = {"user_id": user, "storage_path": f"imports/{user}/{script}", **columns}
    names = ", ".join(values)
    placeholders = ", ".join(["%s"] * len(values))
    rows = query(
        db_url,
        f"insert into import_jobs ({names}) values ({placeholders}) returning id",
        *values.values(),
    )
    job_id: uuid.UUID = rows[0]["id"]
    return job_id


def job(db_url: str, job_id: uuid.UUID) -> dict[str, Any]:
    return query(db_url, "select * from import_jobs where id = %s", job_id)[0]


def wait_for_status(
    db_url: str, job_id: uuid.UUID, status: str, timeout: float = 20
) -> dict[str, Any]:
    return wait_for(  # type: ignore[no-any-return]
        lambda: (row := job(db_url, job_id))["status"] == status and row,
        timeout=timeout,
        what=f"job {job_id} to be {status}",
    )


def test_exactly_once_across_four_workers(db_url: str) -> None:
    jobs = [enqueue(db_url, "sleep-10") for _ in range(100)]
    workers = [
        WorkerProcess(db_url, drain=True, env={**FAST, "SOULWORKER_CONCURRENCY": "2"}).start()
        for _ in range(4)
    ]
    try:
        for worker in workers:
            assert worker.wait(90) == 0, worker.output()[-3000:]
    finally:
        for worker in workers:
            worker.stop()
    statuses = query(db_url, "select status, attempt, count(*) as n from import_jobs group by 1, 2")
    assert statuses == [{"status": "succeeded", "attempt": 1, "n": 100}]
    starts = query(
        db_url,
        "select job_id, count(*) as n, count(distinct pid) as pids from test_handler_runs "
        "where event = 'start' group by job_id",
    )
    assert len(starts) == 100 and {row["job_id"] for row in starts} == set(jobs)
    assert all(row["n"] == 1 for row in starts), "every job ran exactly once"
    per_worker = Counter(
        row["pid"]
        for row in query(db_url, "select pid from test_handler_runs where event = 'start'")
    )
    assert len(per_worker) == 4, f"all four workers took part: {per_worker}"


def test_sigkill_mid_job_is_rescued_by_another_worker_with_attempt_two(db_url: str) -> None:
    job_id = enqueue(db_url, "steps-8-250")
    first = WorkerProcess(db_url, env=FAST).start()
    try:
        wait_for(
            lambda: int(job(db_url, job_id)["checkpoint"].get("steps_done", 0)) >= 2,
            timeout=20,
            what="two steps checkpointed",
            context=first.output,
        )
        first.kill()
        killed_at = time.monotonic()
        # What the dead worker had committed: a step it recorded but had not yet checkpointed
        # when it was killed is in flight, and the rescue rightly does it again.
        committed = int(job(db_url, job_id)["checkpoint"].get("steps_done", 0))
        with WorkerProcess(db_url, drain=True, env=FAST) as second:
            row = wait_for_status(db_url, job_id, "succeeded", timeout=30)
            assert second.wait(20) == 0
    finally:
        first.stop()
    assert row["attempt"] == 2, "a lease lost to a crash is charged"
    events = handler_events(db_url, job_id)
    rescued = next(e for e in events if e["attempt"] == 2 and e["event"] == "start")
    assert rescued["pid"] != first.pid
    # Rescue within lease + poll (BENCHMARKS.md), with margin for process start-up.
    restart_delay = (rescued["at"] - events[0]["at"]).total_seconds()
    assert time.monotonic() - killed_at < 30
    assert restart_delay < 2 + 0.5 + 5, restart_delay

    def steps_of(attempt: int) -> list[int]:
        return [
            int(e["event"].removeprefix("step-"))
            for e in events
            if e["attempt"] == attempt and e["event"].startswith("step-")
        ]

    assert committed >= 2, "killed after two checkpoints"
    assert steps_of(1)[:committed] == list(range(1, committed + 1))
    assert steps_of(2) == list(range(committed + 1, 9)), "checkpointed steps are not redone"


def test_sigterm_releases_the_job_uncharged_and_another_worker_completes_it(db_url: str) -> None:
    user_job = enqueue(db_url, "steps-12-300")
    worker = WorkerProcess(db_url, env={**FAST, "SOULWORKER_SHUTDOWN_SECONDS": "5"}).start()
    try:
        wait_for(
            lambda: len(handler_events(db_url, user_job)) >= 3,
            timeout=20,
            what="two steps done",
            context=worker.output,
        )
        signalled = time.monotonic()
        worker.send(signal.SIGTERM)
        assert worker.wait(10) == 0
        assert time.monotonic() - signalled < 5, "exited within the shutdown budget"
    finally:
        worker.stop()
    row = job(db_url, user_job)
    assert (row["status"], row["attempt"], row["lease_owner"]) == ("queued", 0, None)
    assert 0 < row["checkpoint"]["steps_done"] < 12
    assert any(
        e.get("event") == "job released for another worker to resume" for e in worker.events()
    )
    with WorkerProcess(db_url, drain=True, env=FAST) as second:
        assert second.wait(30) == 0
    row = job(db_url, user_job)
    assert (row["status"], row["attempt"]) == ("succeeded", 1)
    steps = [e["event"] for e in handler_events(db_url, user_job) if e["event"].startswith("step-")]
    assert len(steps) == 12 and len(set(steps)) == 12, "resumed from the checkpoint"


def test_sigterm_releases_a_job_that_never_checkpoints_after_the_budget(db_url: str) -> None:
    job_id = enqueue(db_url, "hang")
    # A lease long enough that a stall of the machine cannot make the heartbeat give up (the
    # job would then be left to its lease, correctly, and this test is about the budget).
    settings = {**FAST, "SOULWORKER_LEASE_SECONDS": "10", "SOULWORKER_SHUTDOWN_SECONDS": "1"}
    worker = WorkerProcess(db_url, env=settings).start()
    try:
        wait_for(
            lambda: handler_events(db_url, job_id),
            timeout=20,
            what="job start",
            context=worker.output,
        )
        signalled = time.monotonic()
        worker.send(signal.SIGTERM)
        assert worker.wait(10) == 0
        elapsed = time.monotonic() - signalled
    finally:
        worker.stop()
    assert 1 <= elapsed < 5, worker.output()
    row = job(db_url, job_id)
    assert (row["status"], row["attempt"]) == ("queued", 0), worker.output()


def test_second_signal_exits_at_once(db_url: str) -> None:
    job_id = enqueue(db_url, "hang")
    worker = WorkerProcess(db_url, env={**FAST, "SOULWORKER_SHUTDOWN_SECONDS": "20"}).start()
    try:
        wait_for(
            lambda: handler_events(db_url, job_id),
            timeout=20,
            what="job start",
            context=worker.output,
        )
        worker.send(signal.SIGTERM)
        worker.wait_for_event("signal received; shutting down")
        started = time.monotonic()
        worker.send(signal.SIGINT)
        assert worker.wait(5) == 128 + signal.SIGINT
        assert time.monotonic() - started < 2
    finally:
        worker.stop()


def test_listen_connection_is_restored_after_pg_terminate_backend(db_url: str) -> None:
    # A long poll: only NOTIFY can explain a fast pickup.
    env = {**FAST, "SOULWORKER_POLL_SECONDS": "60"}
    with WorkerProcess(db_url, env=env) as worker:
        worker.wait_for_event("listening for new jobs")
        first = enqueue(db_url, "ok")
        wait_for_status(db_url, first, "succeeded", timeout=3)

        terminated = query(
            db_url,
            "select pg_terminate_backend(pid) as ok from pg_stat_activity "
            "where application_name like 'soulworker-listener%%' "
            "and datname = current_database()",
        )
        assert terminated == [{"ok": True}]
        worker.wait_for_event("listening for new jobs", count=2, timeout=10)
        listeners = query(
            db_url,
            "select query from pg_stat_activity where application_name like "
            "'soulworker-listener%%' and datname = current_database()",
        )
        assert len(listeners) == 1

        inserted = time.monotonic()
        second = enqueue(db_url, "ok")
        wait_for_status(db_url, second, "succeeded", timeout=3)
        assert time.monotonic() - inserted < 3, "picked up by NOTIFY, not by the 60 s poll"


def test_lost_lease_stops_the_job_and_its_later_writes_do_not_land(db_url: str) -> None:
    job_id = enqueue(db_url, "write-after-1500")
    env = {**FAST, "SOULWORKER_LEASE_SECONDS": "8"}  # heartbeat every 2 s: the write comes first
    with WorkerProcess(db_url, env=env) as worker:
        wait_for(
            lambda: handler_events(db_url, job_id),
            timeout=20,
            what="job start",
            context=worker.output,
        )
        query(
            db_url,
            "update import_jobs set lease_owner = 'thief', attempt = attempt + 1 where id = %s",
            job_id,
        )
        worker.wait_for_event("job stopped: lease lost; nothing more is written", timeout=10)
        time.sleep(2.5)  # past the next heartbeat: nothing else may arrive
    row = job(db_url, job_id)
    assert (row["status"], row["lease_owner"], row["attempt"]) == ("running", "thief", 2)
    assert "late" not in row["checkpoint"]
    assert row["stage"] is None and row["progress_percent"] == 0
    events = [e["event"] for e in handler_events(db_url, job_id)]
    assert events == ["start", "writing"], "the write was attempted and refused"


def test_cancel_a_running_job(db_url: str) -> None:
    job_id = enqueue(db_url, "steps-100-100")
    with WorkerProcess(db_url, env=FAST) as worker:
        wait_for(
            lambda: handler_events(db_url, job_id),
            timeout=20,
            what="job start",
            context=worker.output,
        )
        assert query(db_url, "select cancel_import_job(%s) as s", job_id) == [
            {"s": "cancel_requested"}
        ]
        requested = time.monotonic()
        row = wait_for_status(db_url, job_id, "cancelled", timeout=5)
        assert time.monotonic() - requested < 0.5 + 1.5, "within about one heartbeat"
    assert row["last_error"] == "Import cancelled."
    profile = query(
        db_url,
        "select import_status, import_error from user_profiles where import_job_id = %s",
        job_id,
    )
    assert profile == [{"import_status": "failed", "import_error": "Import cancelled."}]


def test_transient_failures_back_off_then_fail_and_permanent_ones_do_not_retry(
    db_url: str,
) -> None:
    transient = enqueue(db_url, "transient", max_attempts=3)
    permanent = enqueue(db_url, "permanent", max_attempts=3)
    crash = enqueue(db_url, "crash", max_attempts=2)
    with WorkerProcess(db_url, drain=True, env=FAST) as worker:
        assert worker.wait(60) == 0, worker.output()[-3000:]

    row = job(db_url, transient)
    assert (row["status"], row["attempt"]) == ("failed", 3)
    assert [e["attempt"] for e in row["errors"]] == [1, 2, 3]
    assert [e["permanent"] for e in row["errors"]] == [False, False, False]
    said = [e["message"] for e in row["errors"]]
    assert [m.endswith("The import will be retried automatically.") for m in said] == [
        True,
        True,
        False,
    ], "only a failure that will be retried says so"
    assert row["last_error"] == said[-1]
    assert row["last_error"].endswith(
        "The import stopped after 3 attempts; please try it again later."
    )
    starts = [e["at"] for e in handler_events(db_url, transient) if e["event"] == "start"]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert gaps[0] >= 0.2 * 0.75 and gaps[1] >= 0.4 * 0.75, gaps

    row = job(db_url, permanent)
    assert (row["status"], row["attempt"], len(row["errors"])) == ("failed", 1, 1)
    assert row["last_error"] == "The export is not a ChatGPT export."

    row = job(db_url, crash)
    assert (row["status"], row["attempt"]) == ("failed", 2)
    assert row["last_error"] == (
        "The import failed because of an internal error. "
        "The import stopped after 2 attempts; please try it again later."
    )
    assert "private text" not in str(row["errors"]), "exception text never reaches job rows"
    assert row["errors"][0]["error_class"] == "RuntimeError"


def test_drain_waits_for_a_job_whose_retry_is_in_the_future(db_url: str) -> None:
    job_id = enqueue(db_url, "ok", run_after="now()")
    query(
        db_url,
        "update import_jobs set run_after = now() + interval '1.5 seconds' where id = %s",
        job_id,
    )
    started = time.monotonic()
    with WorkerProcess(db_url, drain=True, env=FAST) as worker:
        assert worker.wait(20) == 0
    assert time.monotonic() - started >= 1.5
    assert job(db_url, job_id)["status"] == "succeeded"


def test_a_database_outage_is_waited_out(db_url: str) -> None:
    """The daemon keeps running while its database refuses connections, then carries on."""
    params = conninfo_to_dict(db_url)
    name = str(params["dbname"])
    admin = make_conninfo("", **{**params, "dbname": "postgres"})
    with WorkerProcess(db_url, env=FAST) as worker:
        worker.wait_for_event("listening for new jobs")
        query(admin, f'alter database "{name}" with allow_connections false')
        query(
            admin,
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where datname = %s and pid <> pg_backend_pid()",
            name,
        )
        worker.wait_for_event("LISTEN connection lost; reconnecting", timeout=10)
        time.sleep(1.5)
        assert worker.process is not None and worker.process.poll() is None, "still running"
        query(admin, f'alter database "{name}" with allow_connections true')
        job_id = enqueue(db_url, "ok")
        wait_for_status(db_url, job_id, "succeeded", timeout=35)
        worker.send(signal.SIGTERM)
        assert worker.wait(10) == 0


def test_the_daemon_refuses_to_start_without_the_fast_json_parser(database_url: str) -> None:
    """Without ijson's C backend every export would parse ten times slower: one line, exit 2."""
    blocked = (
        "import sys; sys.modules['ijson.backends._yajl2'] = None; "
        "from soulworker.cli import main; sys.exit(main(['run']))"
    )
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SUPABASE_URL": "http://127.0.0.1:9",
        "SUPABASE_SERVICE_KEY": "sb_secret_0123456789abcdef",
        "SOULWORKER_MODEL_STAGES": "off",
    }
    finished = subprocess.run(
        [sys.executable, "-c", blocked],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO_ROOT,
    )
    assert finished.returncode == 2
    assert finished.stderr.strip().startswith("soulworker: configuration error: ijson's yajl2_c")
    assert len(finished.stderr.strip().splitlines()) == 1


def test_a_job_whose_work_was_complete_is_recorded_as_succeeded_not_retried(db_url: str) -> None:
    """Its worker died after the last stage's commit and before the success was recorded, on
    the last attempt: the rescue records the success; the handler does not run again."""
    job_id = enqueue(db_url, "permanent", max_attempts=2)
    query(
        db_url,
        "update import_jobs set status = 'running', attempt = 2, lease_owner = 'dead', "
        "lease_expires_at = now() - interval '1 second', "
        "checkpoint = '{\"completed\": true}', result = '{\"chunks\": 7}' where id = %s",
        job_id,
    )
    with WorkerProcess(db_url, drain=True, env=FAST) as worker:
        assert worker.wait(30) == 0, worker.output()[-3000:]
    row = job(db_url, job_id)
    assert (row["status"], row["attempt"], row["result"]) == ("succeeded", 3, {"chunks": 7})
    assert handler_events(db_url, job_id) == [], "the handler did not run again"


def test_job_rows_never_name_the_workers_machine(db_url: str) -> None:
    """Users may read their own import_jobs rows: the worker is named there by an opaque id,
    which its first log line pairs with the host name and pid for operators."""
    job_id = enqueue(db_url, "transient", max_attempts=2)
    with WorkerProcess(db_url, drain=True, env=FAST) as worker:
        assert worker.wait(60) == 0, worker.output()[-3000:]
        [identity] = [e for e in worker.events() if e["event"] == "worker identity"]
    assert identity["host"] == socket.gethostname()
    assert identity["pid"] == worker.pid
    row = job(db_url, job_id)
    assert [error["worker"] for error in row["errors"]] == [identity["worker"]] * 2
    assert identity["worker"].startswith("worker-")
    everything = str(query(db_url, "select to_jsonb(j) as row from import_jobs j"))
    assert socket.gethostname() not in everything


FAIL_PROGRESS_WRITES = """
create table test_fail_progress (failing boolean);
create function test_fail_progress_writes() returns trigger language plpgsql as $$
begin
    -- A progress write of a running job (no checkpoint, no heartbeat, no outcome) fails while
    -- the flag row exists: a database blip that hits exactly the progress writes.
    if exists (select 1 from test_fail_progress)
       and old.status = 'running' and new.status = 'running'
       and new.checkpoint = old.checkpoint
       and new.progress_percent is distinct from old.progress_percent then
        raise exception 'simulated database blip';
    end if;
    return new;
end $$;
create trigger test_fail_progress_writes before update on import_jobs
    for each row execute function test_fail_progress_writes();
"""


def test_a_database_blip_during_progress_writes_does_not_charge_the_attempt(db_url: str) -> None:
    query(db_url, FAIL_PROGRESS_WRITES)
    query(db_url, "insert into test_fail_progress values (true)")
    job_id = enqueue(db_url, "progress-30-50", max_attempts=1)
    env = {**FAST, "SOULWORKER_PROGRESS_INTERVAL_SECONDS": "0.1"}
    with WorkerProcess(db_url, drain=True, env=env) as worker:
        worker.wait_for_event("progress not written; the next report retries", count=3)
        query(db_url, "delete from test_fail_progress")
        assert worker.wait(60) == 0, worker.output()[-3000:]
    row = job(db_url, job_id)
    assert (row["status"], row["attempt"], row["errors"]) == ("succeeded", 1, [])
    assert row["progress_percent"] == 100
