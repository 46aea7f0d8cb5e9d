"""Parked jobs under real worker processes, real signals and the real operator commands
(docs/queue.md, "Parking a job"). The scripted handler's ``park-N-MS`` parks its job N times."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

from soulworker.testing.scripted_handler import RUNS_TABLE
from tests.acceptance.workers import REPO_ROOT, WorkerProcess, handler_events, query, wait_for

pytestmark = pytest.mark.db

FAST = {
    "SOULWORKER_LEASE_SECONDS": "2",  # heartbeat every 0.5 s
    "SOULWORKER_POLL_SECONDS": "0.5",
}
_FOREIGN_PREFIXES = ("SOULWORKER_", "ANTHROPIC_", "SUPABASE_", "DATABASE_URL", "PG")


@pytest.fixture
def db_url(database_url: str) -> str:
    query(database_url, RUNS_TABLE)
    return database_url


def enqueue(db_url: str, script: str) -> uuid.UUID:
    user = uuid.uuid4()
    rows = query(
        db_url,
        "insert into import_jobs (user_id, storage_path) values (%s, %s) returning id",
        user,
        f"imports/{user}/{script}",
    )
    job_id: uuid.UUID = rows[0]["id"]
    return job_id


def job(db_url: str, job_id: uuid.UUID) -> dict[str, Any]:
    return query(db_url, "select * from import_jobs where id = %s", job_id)[0]


def wait_until_parked(db_url: str, job_id: uuid.UUID, worker: WorkerProcess) -> dict[str, Any]:
    return wait_for(  # type: ignore[no-any-return]
        lambda: (row := job(db_url, job_id))["parked_at"] is not None and row,
        timeout=20,
        what=f"job {job_id} to be parked",
        context=worker.output,
    )


def events(db_url: str, job_id: uuid.UUID) -> list[str]:
    return [e["event"] for e in handler_events(db_url, job_id)]


def soulworker_jobs(db_url: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}
    env.update(PYTHONPATH=str(REPO_ROOT), DATABASE_URL=db_url)
    run = subprocess.run(
        [sys.executable, "-m", "soulworker", "jobs", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_drain_does_not_exit_while_a_job_is_parked_and_completes_it_once_due(
    db_url: str,
) -> None:
    job_id = enqueue(db_url, "park-2-1500")
    started = time.monotonic()
    with WorkerProcess(db_url, drain=True, env=FAST) as worker:
        row = wait_until_parked(db_url, job_id, worker)
        assert (row["status"], row["attempt"], row["waiting_for"]) == (
            "queued",
            0,
            "test wait 1 of 2",
        )
        time.sleep(1.0)  # two polls: a drain that saw nothing to run would have exited
        assert worker.process is not None and worker.process.poll() is None, "drain waits"
        assert worker.wait(30) == 0, worker.output()[-3000:]
    assert time.monotonic() - started >= 3.0, "two parks of 1.5 s each"
    row = job(db_url, job_id)
    assert (row["status"], row["attempt"], row["errors"]) == ("succeeded", 1, [])
    assert (row["parked_at"], row["waiting_for"]) == (None, None)
    assert events(db_url, job_id) == [
        "start",
        "parking-1",
        "start",
        "resumed-1",
        "parking-2",
        "start",
        "resumed-2",
        "end",
    ]


def test_sigterm_while_the_only_job_is_parked_exits_at_once_and_changes_nothing(
    db_url: str,
) -> None:
    job_id = enqueue(db_url, "park-1-600000")
    worker = WorkerProcess(db_url, env={**FAST, "SOULWORKER_SHUTDOWN_SECONDS": "20"}).start()
    try:
        parked = wait_until_parked(db_url, job_id, worker)
        # What an operator sees meanwhile: waiting, for what, since when, until when.
        listing = soulworker_jobs(db_url)
        line = next(line for line in listing.splitlines() if str(job_id) in line)
        assert " waiting " in line and "full_pass" in line and "70%" in line and "0/3" in line
        assert "test wait 1 of 1 (parked " in line and ", resumes in 9m" in line
        assert str(job_id) in soulworker_jobs(db_url, "--status", "waiting")
        assert str(job_id) not in soulworker_jobs(db_url, "--status", "running")
        overview = query(db_url, "select * from import_jobs_overview where job_id = %s", job_id)
        assert [(r["section"], r["waiting_for"]) for r in overview] == [
            ("waiting", "test wait 1 of 1")
        ]
        assert overview[0]["next_run_at"] == parked["run_after"]
        signalled = time.monotonic()
        worker.send(signal.SIGTERM)
        assert worker.wait(10) == 0, worker.output()[-3000:]
        assert time.monotonic() - signalled < 3, "nothing to wait for: no job is running"
    finally:
        worker.stop()
    assert job(db_url, job_id) == parked, "the parked row is left exactly as it was"


def test_a_cancel_while_parked_wakes_a_worker_whose_hook_runs_and_the_job_ends_cancelled(
    db_url: str,
) -> None:
    job_id = enqueue(db_url, "park-1-3600000")
    # A poll far longer than the test: only the NOTIFY of the cancel can wake the worker.
    env = {**FAST, "SOULWORKER_POLL_SECONDS": "60"}
    with WorkerProcess(db_url, env=env) as worker:
        wait_until_parked(db_url, job_id, worker)
        time.sleep(0.3)
        assert query(db_url, "select cancel_import_job(%s) as s", job_id) == [
            {"s": "cancel_requested"}
        ]
        requested = time.monotonic()
        wait_for(
            lambda: job(db_url, job_id)["status"] == "cancelled",
            timeout=10,
            what="the cancel to be recorded",
            context=worker.output,
        )
        assert time.monotonic() - requested < 5, "claimed promptly, not at the next poll"
    row = job(db_url, job_id)
    assert (row["last_error"], row["attempt"], row["parked_at"]) == ("Import cancelled.", 1, None)
    assert events(db_url, job_id) == ["start", "parking-1", "on-cancel-1"], "run not called again"
    profile = query(
        db_url,
        "select import_status, import_error from user_profiles where import_job_id = %s",
        job_id,
    )
    assert profile == [{"import_status": "failed", "import_error": "Import cancelled."}]
