"""``soulworker jobs --watch``: a real subprocess redraws the queue's health and the job list
until it receives SIGINT (Ctrl-C), then exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import DictRow

pytestmark = pytest.mark.db

REPO_ROOT = Path(__file__).resolve().parents[2]
_FOREIGN_PREFIXES = ("SOULWORKER_", "ANTHROPIC_", "SUPABASE_", "DATABASE_URL", "PG")
FRAME_HEADER = "Ctrl-C to stop"


async def test_watch_prints_frames_until_sigint_and_exits_0(
    database_url: str, conn: psycopg.AsyncConnection[DictRow]
) -> None:
    user = uuid.uuid4()
    cur = await conn.execute(
        "insert into import_jobs (user_id, storage_path, run_after) "
        "values (%s, %s, now() - interval '2 minutes') returning id",
        (user, f"imports/{user}/export.zip"),
    )
    row = await cur.fetchone()
    assert row is not None
    job_id = row["id"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}
    env.update(PYTHONPATH=str(REPO_ROOT), DATABASE_URL=database_url)
    process = subprocess.Popen(
        [sys.executable, "-m", "soulworker", "jobs", "--watch", "0.2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while sum(FRAME_HEADER in line for line in seen) < 2 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line)
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = "".join(seen) + rest
    assert output.count(FRAME_HEADER) >= 2, "two frames before the interrupt"
    assert process.returncode == 0, errors
    assert "Traceback" not in errors
    assert "queued 1 (due 1, parked 0, set aside 0; oldest due waiting 2m" in output
    assert str(job_id) in output, "the job list is part of each frame"
