"""What every import benchmark sets up: a migrated scratch database and one queued job whose
export is served by the fake Supabase Storage."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg

from soulworker.testing.storage_server import FAKE_SERVICE_JWT, StorageServer

REPO_ROOT = Path(__file__).resolve().parents[1]


def worker_env(database_url: str, storage: StorageServer, **settings: str) -> dict[str, str]:
    """The environment of a worker that imports from ``storage`` into ``database_url``."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "SUPABASE_URL": storage.url,
        "SUPABASE_SERVICE_KEY": FAKE_SERVICE_JWT,
        "SOULWORKER_LOG_LEVEL": "warning",
        **settings,
    }


def prepare_job(env: dict[str, str], storage: StorageServer, export: Path) -> uuid.UUID:
    """Migrate the database, upload ``export`` for a new user, queue its job; the user id."""
    subprocess.run(
        [sys.executable, "-m", "soulworker", "migrate"],
        env=env,
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    user = uuid.uuid4()
    name = f"{user}/{export.name}"
    storage.put_file("imports", name, export)
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(
            "insert into import_jobs (user_id, storage_path) values (%s, %s)",
            (user, f"imports/{name}"),
        )
    return user
