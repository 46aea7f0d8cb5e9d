"""Pickup latency: from a committed insert into import_jobs to the job's ``running`` state.

An idle ``soulworker run`` (default settings: LISTEN on, 5 s poll) in its own process; this script
inserts jobs one at a time, each only after the previous one was picked up and a short pause,
so the worker is idle at every insert. Latency = the claim's ``started_at`` (set by the claim
statement) minus the wall-clock time right after the insert's commit returned; both clocks are
this machine's.

    python bench/pickup_latency.py [--jobs 200] [--database-url URL]

Target: median under 100 ms, p95 under 500 ms (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from soulworker.testing import postgres as pg  # noqa: E402 - after the path set-up above


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--pause", type=float, default=0.05, help="idle time between inserts (s)")
    parser.add_argument("--database-url", default=None, help="server to create a scratch db on")
    args = parser.parse_args()

    server = args.database_url or pg.find_server()
    if server is None:
        print(pg.HOW_TO_RUN, file=sys.stderr)
        return 2
    with pg.scratch_database(server) as url:
        migrate = subprocess.run(
            [sys.executable, "-m", "soulworker", "migrate"],
            env={**os.environ, "DATABASE_URL": url, "SOULWORKER_LOG_LEVEL": "warning"},
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
        )
        del migrate
        log_path = REPO_ROOT / "bench" / "out" / "pickup_latency_worker.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "soulworker",
                    "run",
                    "--handler",
                    "soulworker.testing.scripted_handler:create_scripted_handler",
                ],
                env={
                    **os.environ,
                    "DATABASE_URL": url,
                    "SOULWORKER_LOG_FORMAT": "json",
                    "SOULWORKER_MODEL_STAGES": "off",
                    "PYTHONPATH": str(REPO_ROOT),
                },
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            latencies, observed = measure(url, args.jobs, args.pause)
        finally:
            worker.terminate()
            worker.wait(30)
    median = statistics.median(latencies)
    p95 = percentile(latencies, 0.95)
    print(f"date: {datetime.now(UTC):%Y-%m-%d}")
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
        f"Python {platform.python_version()}"
    )
    print(f"jobs: {len(latencies)}")
    print(f"median: {median * 1000:.1f} ms")
    print(f"p95: {p95 * 1000:.1f} ms")
    print(f"max: {max(latencies) * 1000:.1f} ms")
    seen_median, seen_p95 = statistics.median(observed), percentile(observed, 0.95)
    print(
        f"seen running by a 2 ms poller (upper bound): median {seen_median * 1000:.1f} ms, "
        f"p95 {seen_p95 * 1000:.1f} ms"
    )
    print(
        f"target: median < 100 ms, p95 < 500 ms -> "
        f"{'met' if median < 0.1 and p95 < 0.5 else 'NOT met'}"
    )
    return 0


def measure(url: str, jobs: int, pause: float) -> tuple[list[float], list[float]]:
    """(claim started − commit, first seen running by this client − commit) per job."""
    latencies: list[float] = []
    observed: list[float] = []
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(
            "create table if not exists test_handler_runs (job_id uuid, attempt int, pid int, "
            "event text, at timestamptz default clock_timestamp())"
        )
        wait_until_listening(conn)
        for _ in range(jobs):
            user = uuid.uuid4()
            cur = conn.execute(
                "insert into import_jobs (user_id, storage_path) values (%s, %s) returning id",
                (user, f"imports/{user}/ok"),
            )
            committed = time.time()
            row = cur.fetchone()
            assert row is not None
            started = wait_for_start(conn, row["id"])
            observed.append(time.time() - committed)
            latencies.append(started - committed)
            time.sleep(pause)
    return latencies, observed


def wait_until_listening(conn: psycopg.Connection[dict[str, object]]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = conn.execute(
            "select count(*) as n from pg_stat_activity where application_name like "
            "'soulworker-listener%%' and query ilike '%%listen import_jobs%%' "
            "and datname = current_database()"
        ).fetchone()
        if row and row["n"]:
            return
        time.sleep(0.05)
    raise SystemExit("the worker never started listening; see bench/out/pickup_latency_worker.log")


def wait_for_start(conn: psycopg.Connection[dict[str, object]], job_id: uuid.UUID) -> float:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = conn.execute("select started_at from import_jobs where id = %s", (job_id,)).fetchone()
        if row and row["started_at"] is not None:
            started_at = row["started_at"]
            assert isinstance(started_at, datetime)
            return started_at.timestamp()
        time.sleep(0.002)
    raise SystemExit(f"job {job_id} was not picked up within 30 s")


if __name__ == "__main__":
    raise SystemExit(main())
