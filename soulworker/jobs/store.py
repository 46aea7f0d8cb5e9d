"""Every database verb of the queue, one named SQL file each.

The store knows the ``import_jobs`` table and how job states show in ``user_profiles``; it knows
nothing about exports. Writes that a worker makes to a job it runs are *fenced* (see
:class:`~soulworker.jobs.job.Fence`): when one matches no row the store raises
:class:`~soulworker.jobs.errors.LeaseLost` and the caller must write nothing more.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from soulworker.jobs.errors import JobNotClaimable, LeaseLost
from soulworker.jobs.job import ClaimedJob, Fence
from soulworker.jobs.park import MAX_PARK_SECONDS
from soulworker.jobs.store_interface import JobStoreInterface, Parked
from soulworker.sql_files import query

Connection = psycopg.AsyncConnection[DictRow]


class JobStore:
    def __init__(self, pool: AsyncConnectionPool[Connection], *, lease_seconds: float) -> None:
        self.pool = pool
        self.lease_seconds = lease_seconds

    async def claim(self, owner: str) -> ClaimedJob | None:
        async with self.pool.connection() as conn:
            sent = time.monotonic()
            cur = await conn.execute(
                query("claim_job"), {"owner": owner, "lease_seconds": self.lease_seconds}
            )
            row = await cur.fetchone()
        return ClaimedJob.from_row(row, owner, leased_at=sent) if row else None

    async def claim_by_id(self, owner: str, job_id: UUID) -> ClaimedJob:
        """Claim the job ``job_id`` and never another one (docs/queue.md, "One named job").

        The same claim as :meth:`claim` (lease, attempt charge, returned row) for one row: a
        queued job, whatever its ``run_after``, or a running one whose lease expired. Raises
        :class:`~soulworker.jobs.errors.JobNotClaimable`, saying why, for any other.
        """
        async with self.pool.connection() as conn:
            sent = time.monotonic()
            cur = await conn.execute(
                query("claim_job_by_id"),
                {"owner": owner, "lease_seconds": self.lease_seconds, "job_id": job_id},
            )
            row = await cur.fetchone()
            if row is not None:
                return ClaimedJob.from_row(row, owner, leased_at=sent)
            cur = await conn.execute(query("claim_state"), {"job_id": job_id})
            state = await cur.fetchone()
        raise JobNotClaimable(job_id, not_claimable_reason(state))

    async def mark_started(self, fence: Fence, label: str) -> None:
        await self._fenced(query("mark_job_started"), {**fence.params(), "label": label})

    async def heartbeat(self, fence: Fence) -> datetime | None:
        """Renew the lease; return when a cancel was requested (None if not). LeaseLost if lost."""
        row = await self._fenced(
            query("heartbeat"), {**fence.params(), "lease_seconds": self.lease_seconds}
        )
        cancel_requested_at: datetime | None = row["cancel_requested_at"]
        return cancel_requested_at

    async def advance(
        self,
        fence: Fence,
        *,
        stage: str | None,
        percent: int,
        label: str | None,
        checkpoint: dict[str, Any] | None = None,
        result: dict[str, Any] | None = None,
        conn: Connection | None = None,
    ) -> int:
        """Write progress (and optionally checkpoint and partial results); return the progress."""
        params = {
            **fence.params(),
            "stage": stage,
            "percent": percent,
            "label": label,
            "checkpoint": Jsonb(checkpoint or {}),
            "result": Jsonb(result or {}),
        }
        row = await self._fenced(query("advance_job"), params, conn=conn)
        progress: int = row["progress_percent"]
        return progress

    async def succeed(self, fence: Fence, result: dict[str, Any]) -> None:
        await self._fenced(query("finish_succeeded"), {**fence.params(), "result": Jsonb(result)})

    async def retry_later(
        self, fence: Fence, *, delay_seconds: float, message: str, code: str, error_class: str
    ) -> tuple[str, datetime]:
        """Queue the job again after ``delay_seconds``; return ``(status, run_after)``.

        The status is ``cancelled`` instead when an operator asked for a cancel meanwhile.
        """
        row = await self._fenced(
            query("finish_retry"),
            {
                **fence.params(),
                "delay_seconds": delay_seconds,
                "message": message,
                "code": code,
                "error_class": error_class,
            },
        )
        return str(row["status"]), row["run_after"]

    async def fail(
        self, fence: Fence, *, message: str, code: str, error_class: str, permanent: bool
    ) -> None:
        await self._fenced(
            query("finish_failed"),
            {
                **fence.params(),
                "message": message,
                "code": code,
                "error_class": error_class,
                "permanent": permanent,
            },
        )

    async def cancel(self, fence: Fence) -> None:
        await self._fenced(query("finish_cancelled"), fence.params())

    async def release(self, fence: Fence) -> None:
        await self._fenced(query("release_job"), fence.params())

    async def park(
        self,
        fence: Fence,
        *,
        resume_at: datetime,
        waiting_for: str,
        checkpoint: dict[str, Any] | None = None,
    ) -> Parked:
        """Park the job until ``resume_at`` (docs/queue.md, "Parking a job"); see
        :meth:`JobStoreInterface.park`. LeaseLost, writing nothing, if the lease was lost."""
        row = await self._fenced(
            query("park_job"),
            {
                **fence.params(),
                "resume_at": resume_at,
                "max_park_seconds": MAX_PARK_SECONDS,
                "waiting_for": waiting_for,
                "checkpoint": Jsonb(checkpoint or {}),
            },
        )
        return Parked(run_after=row["run_after"], resume_at=row["resume_at"])

    async def prune_artifacts(self, retention_days: int) -> int:
        """Delete working data no retry can use any more; return how many artifacts went."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                query("prune_job_artifacts"), {"retention_days": retention_days}
            )
            return cur.rowcount

    async def has_active_jobs(self) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute(query("queue_has_active_jobs"))
            row = await cur.fetchone()
        return bool(row and row["active"])

    async def get_artifact(self, job_id: Any, name: str) -> Any | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(query("get_job_artifact"), {"job_id": job_id, "name": name})
            row = await cur.fetchone()
        return row["content"] if row else None

    async def artifact_names(self, job_id: Any) -> set[str]:
        """The names of the job's artifacts: which of its working data still exists."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(query("list_job_artifact_names"), {"job_id": job_id})
            return {row["name"] for row in await cur.fetchall()}

    async def list_artifacts(self, job_id: Any, prefix: str) -> list[tuple[str, Any]]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                query("list_job_artifacts"), {"job_id": job_id, "prefix": prefix}
            )
            rows = await cur.fetchall()
        return [(row["name"], row["content"]) for row in rows]

    @asynccontextmanager
    async def fenced_transaction(self, fence: Fence) -> AsyncIterator[SqlFencedTransaction]:
        """A transaction that commits only while ``fence`` still holds.

        The job row is locked just before commit (not at the start: the transaction may be
        long, and heartbeats on other connections must keep renewing the lease meanwhile). If
        the lease was lost, LeaseLost is raised and everything written inside rolls back.
        """
        async with self.pool.connection() as conn, conn.transaction():
            yield SqlFencedTransaction(self, fence, conn)
            await self._fenced(query("lock_job_lease"), fence.params(), conn=conn)

    async def _fenced(
        self, statement: Any, params: dict[str, Any], *, conn: Connection | None = None
    ) -> DictRow:
        if conn is not None:
            cur = await conn.execute(statement, params)
            row = await cur.fetchone()
        else:
            async with self.pool.connection() as pooled:
                cur = await pooled.execute(statement, params)
                row = await cur.fetchone()
        if row is None:
            job, attempt = params["job_id"], params["attempt"]
            raise LeaseLost(f"job {job} attempt {attempt} is no longer ours")
        return row


class SqlFencedTransaction:
    """One job's writes on one connection, in :meth:`JobStore.fenced_transaction`."""

    def __init__(self, store: JobStore, fence: Fence, conn: Connection) -> None:
        self._store = store
        self._fence = fence
        self.conn = conn

    async def advance(
        self,
        *,
        stage: str | None,
        percent: int,
        label: str | None,
        checkpoint: dict[str, Any] | None = None,
        result: dict[str, Any] | None = None,
    ) -> int:
        return await self._store.advance(
            self._fence,
            stage=stage,
            percent=percent,
            label=label,
            checkpoint=checkpoint,
            result=result,
            conn=self.conn,
        )

    async def put_artifact(self, name: str, content: Any) -> None:
        await self.conn.execute(
            query("put_job_artifact"),
            {"job_id": self._fence.job_id, "name": name, "content": Jsonb(content)},
        )


def not_claimable_reason(state: DictRow | None) -> str:
    """Why a job in ``state`` (``claim_state``'s row, None when missing) cannot be claimed."""
    if state is None:
        return "no import job has this id"
    status = state["status"]
    if status == "running":
        until = state["lease_expires_at"]
        return (
            f"it is running, held by {state['lease_owner']} until "
            f"{until:%Y-%m-%d %H:%M:%S %Z}".rstrip()
        )
    if status in ("succeeded", "failed", "cancelled"):
        return f"it has already ended ({status})"
    # Claimable a moment ago and taken meanwhile, or a status this code does not know.
    return f"it is {status} and was not claimable just now; try again"


# The Postgres store is one the queue's logic can run on (mypy checks this line).
_conforms: type[JobStoreInterface] = JobStore
