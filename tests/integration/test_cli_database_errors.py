"""Every command says why the database could not be reached and what to do, as doctor does: a
real ``soulworker`` subprocess against a closed port and a real PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo

REPO_ROOT = Path(__file__).resolve().parents[2]
_FOREIGN_PREFIXES = ("SOULWORKER_", "ANTHROPIC_", "SUPABASE_", "DATABASE_URL", "PG")


def soulworker(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}
    env.update(PYTHONPATH=str(REPO_ROOT), DATABASE_URL=database_url)
    return subprocess.run(
        [sys.executable, "-m", "soulworker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_refused_connection_names_the_target_and_the_fix() -> None:
    port = closed_port()
    run = soulworker(f"postgresql://postgres:hunter2secret@127.0.0.1:{port}/x", "jobs")

    assert run.returncode == 1
    assert run.stdout == ""
    assert f"cannot reach the database at 127.0.0.1:{port}/x: Connection refused" in run.stderr
    assert "check the host and port in DATABASE_URL" in run.stderr
    assert "hunter2secret" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


@pytest.mark.db
def test_a_user_the_server_does_not_know_is_told_apart(pg_server: str) -> None:
    url = make_conninfo(pg_server, user="no_such_user_for_soulworker", password="wrong-pw-12345")
    run = soulworker(url, "jobs")

    assert run.returncode == 1
    assert 'role "no_such_user_for_soulworker" does not exist' in run.stderr
    assert "check the database and user names in DATABASE_URL" in run.stderr
    assert "wrong-pw-12345" not in run.stderr
