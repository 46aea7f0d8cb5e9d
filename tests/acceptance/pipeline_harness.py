"""Running real imports in tests: a migrated database, a fake Supabase Storage, optionally a fake
Messages API, and ``soulworker run`` as a real subprocess with the default (import) handler.

    with ImportHarness(database_url) as h:
        user = h.new_user()
        h.upload(user, export_path)                      # imports/<user>/export.zip
        job_id = h.enqueue(user)
        worker = h.worker(drain=True).start(); worker.wait(60)
        h.job(job_id)["status"], h.profile(user), h.chunk_count(user)

With ``model_api=True`` a ``FakeMessagesAPI`` runs too and the worker has model stages on;
without it ``SOULWORKER_MODEL_STAGES=off``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from soulworker.testing.messages_api import FakeMessagesAPI
from soulworker.testing.storage_server import FAKE_SERVICE_JWT, StorageServer
from tests.acceptance.workers import WorkerProcess, query

FAST_QUEUE = {
    "SOULWORKER_LEASE_SECONDS": "2",
    "SOULWORKER_POLL_SECONDS": "0.5",
    "SOULWORKER_RETRY_BASE_SECONDS": "0.2",
    "SOULWORKER_RETRY_MAX_SECONDS": "1",
}
TEST_ANTHROPIC_KEY = "sk-ant-test-0123456789abcdef"


class ImportHarness:
    def __init__(
        self,
        database_url: str,
        *,
        model_api: bool = False,
        api_latency_seconds: float = 0.0,
        bucket: str = "imports",
    ) -> None:
        self.database_url = database_url
        self.bucket = bucket
        self.storage = StorageServer()
        self.api = FakeMessagesAPI(latency_seconds=api_latency_seconds) if model_api else None
        self.workers: list[WorkerProcess] = []

    def __enter__(self) -> ImportHarness:
        self.storage.__enter__()
        if self.api is not None:
            self.api.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers:
            worker.stop()
        if self.api is not None:
            self.api.stop()
        self.storage.__exit__(None, None, None)

    # --- setup

    @staticmethod
    def new_user() -> uuid.UUID:
        return uuid.uuid4()

    def upload(self, user: uuid.UUID, export: Path, name: str = "export.zip") -> str:
        """Put ``export`` in the fake Storage; return the job's storage_path."""
        self.storage.put_file(self.bucket, f"{user}/{name}", export)
        return f"{self.bucket}/{user}/{name}"

    def enqueue(
        self, user: uuid.UUID, storage_path: str | None = None, **columns: Any
    ) -> uuid.UUID:
        values = {
            "user_id": user,
            "storage_path": storage_path or f"{self.bucket}/{user}/export.zip",
            **columns,
        }
        names = ", ".join(values)
        placeholders = ", ".join(["%s"] * len(values))
        rows = query(
            self.database_url,
            f"insert into import_jobs ({names}) values ({placeholders}) returning id",
            *values.values(),
        )
        job_id: uuid.UUID = rows[0]["id"]
        return job_id

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            **FAST_QUEUE,
            "SUPABASE_URL": self.storage.url,
            "SUPABASE_SERVICE_KEY": FAKE_SERVICE_JWT,
        }
        if self.api is not None:
            env |= {
                "SOULWORKER_MODEL_STAGES": "on",
                # The stage tests count direct calls; the batch path has its own tests
                # (test_full_pass_batches.py), which set batch.
                "SOULWORKER_FULL_PASS_MODE": "direct",
                "ANTHROPIC_API_KEY": TEST_ANTHROPIC_KEY,
                "ANTHROPIC_BASE_URL": self.api.base_url,
            }
        else:
            env["SOULWORKER_MODEL_STAGES"] = "off"
        return env | overrides

    def worker(self, *, drain: bool = True, **env: str) -> WorkerProcess:
        """A worker running the real import handler (not started yet)."""
        worker = WorkerProcess(self.database_url, handler=None, drain=drain, env=self.env(**env))
        self.workers.append(worker)
        return worker

    # --- inspection

    def job(self, job_id: uuid.UUID) -> dict[str, Any]:
        return query(self.database_url, "select * from import_jobs where id = %s", job_id)[0]

    def profile(self, user: uuid.UUID) -> dict[str, Any] | None:
        rows = query(self.database_url, "select * from user_profiles where user_id = %s", user)
        return rows[0] if rows else None

    def chunks(self, user: uuid.UUID) -> list[dict[str, Any]]:
        return query(
            self.database_url,
            "select * from conversation_chunks where user_id = %s order by chunk_index",
            user,
        )

    def chunk_count(self, user: uuid.UUID) -> int:
        rows = query(
            self.database_url,
            "select count(*) as n from conversation_chunks where user_id = %s",
            user,
        )
        count: int = rows[0]["n"]
        return count

    def artifacts(self, job_id: uuid.UUID) -> dict[str, Any]:
        rows = query(
            self.database_url,
            "select name, content from import_job_artifacts where job_id = %s",
            job_id,
        )
        return {row["name"]: row["content"] for row in rows}
