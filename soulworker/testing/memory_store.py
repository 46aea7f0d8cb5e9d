"""The job queue's store in memory, for tests of the queue's decisions that need no database.

:class:`MemoryJobStore` does what :class:`~soulworker.jobs.store.JobStore`'s SQL does
(sql/queries/jobs/), row by row: the claim's order and lease, fenced writes, attempts charged
and given back, retry times, cancel requests, release, parking, artifacts. It keeps no
``user_profiles`` mirror and runs no SQL: a fenced transaction offers ``advance`` and
``put_artifact`` but no connection, so handlers used with it must not touch ``tx.conn`` (the
import pipeline does; it is tested on Postgres). tests/integration/test_store_contract.py runs
the same scenarios on both stores so this one cannot drift from the SQL (docs/queue.md, "Two
layers of tests").

Time is a :class:`Clock` the test moves by hand: nothing becomes due or expires by itself.
Besides the store's verbs it has the operator's side a test needs: :meth:`insert`,
:meth:`request_cancel` (``cancel_import_job``) and :meth:`row`.
"""

from __future__ import annotations

import copy
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from soulworker.jobs.errors import JobNotClaimable, LeaseLost
from soulworker.jobs.job import ClaimedJob, Fence
from soulworker.jobs.park import MAX_PARK_SECONDS
from soulworker.jobs.store import Connection, not_claimable_reason
from soulworker.jobs.store_interface import JobStoreInterface, Parked

CANCELLED_MESSAGE = "Import cancelled."
FINAL = ("succeeded", "failed", "cancelled")


class Clock:
    """The store's ``now()``: fixed until a test moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class JobRow:
    """One row of ``import_jobs``, with the columns the queue reads and writes."""

    id: uuid.UUID
    user_id: uuid.UUID
    storage_path: str
    created_at: datetime
    run_after: datetime
    sequence: int  # insertion order: breaks ties that Postgres breaks by created_at's microseconds
    status: str = "queued"
    file_type: str | None = None
    stage: str | None = None
    progress_percent: int = 0
    attempt: int = 0
    max_attempts: int = 3
    priority: int = 0
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    heartbeat_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_error: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] = field(default_factory=dict)
    parked_at: datetime | None = None
    waiting_for: str | None = None

    def held_by(self, fence: Fence) -> bool:
        """The fence of every write: this attempt, this owner, still running."""
        return (
            self.id == fence.job_id
            and self.attempt == fence.attempt
            and self.lease_owner == fence.owner
            and self.status == "running"
        )


class MemoryFencedTransaction:
    """Writes held back until the transaction commits under its fence (see
    :meth:`MemoryJobStore.fenced_transaction`)."""

    def __init__(self, store: MemoryJobStore, fence: Fence) -> None:
        self._store = store
        self._fence = fence
        self.advances: list[dict[str, Any]] = []
        self.artifacts: dict[str, Any] = {}
        self._progress = 0

    @property
    def conn(self) -> Connection:
        raise NotImplementedError(
            "the in-memory job store runs no SQL: use it with handlers that write through "
            "tx.advance and tx.put_artifact only"
        )

    async def advance(
        self,
        *,
        stage: str | None,
        percent: int,
        label: str | None,
        checkpoint: dict[str, Any] | None = None,
        result: dict[str, Any] | None = None,
    ) -> int:
        # As in SQL, the statement itself is fenced: a lost lease shows at once.
        row = self._store._held(self._fence)
        write = {"stage": stage, "percent": percent, "checkpoint": checkpoint, "result": result}
        self.advances.append(write)
        self._progress = max(self._progress, row.progress_percent, percent)
        return self._progress

    async def put_artifact(self, name: str, content: Any) -> None:
        self.artifacts[name] = copy.deepcopy(content)


class MemoryJobStore:
    def __init__(self, *, lease_seconds: float = 60, clock: Clock | None = None) -> None:
        self.lease_seconds = lease_seconds
        self.clock = clock or Clock()
        self.jobs: dict[uuid.UUID, JobRow] = {}
        self.artifacts: dict[uuid.UUID, dict[str, Any]] = {}
        self._sequence = itertools.count()

    # --- the operator's side (the web app's insert, cancel_import_job, reading a row)

    def insert(
        self,
        user_id: uuid.UUID | None = None,
        *,
        priority: int = 0,
        run_after_seconds: float = 0,
        max_attempts: int = 3,
        storage_path: str | None = None,
    ) -> uuid.UUID:
        """A new queued job, due ``run_after_seconds`` from now; return its id."""
        user_id = user_id or uuid.uuid4()
        now = self.clock.now
        job = JobRow(
            id=uuid.uuid4(),
            user_id=user_id,
            storage_path=storage_path or f"imports/{user_id}/export.zip",
            created_at=now,
            run_after=now + timedelta(seconds=run_after_seconds),
            sequence=next(self._sequence),
            priority=priority,
            max_attempts=max_attempts,
        )
        self.jobs[job.id] = job
        return job.id

    def request_cancel(self, job_id: uuid.UUID) -> str:
        """As ``cancel_import_job``: a queued job ends at once, a running one is asked to stop, a
        parked one is asked to stop and made due now (its handler cancels its outside work)."""
        job = self.jobs[job_id]
        now = self.clock.now
        if job.status == "queued" and job.parked_at is not None:
            job.cancel_requested_at = job.cancel_requested_at or now
            job.run_after = min(job.run_after, now)
            return "cancel_requested"
        if job.status == "queued":
            job.status, job.finished_at, job.last_error = "cancelled", now, CANCELLED_MESSAGE
            job.cancel_requested_at = job.cancel_requested_at or now
            return "cancelled"
        if job.status == "running":
            job.cancel_requested_at = job.cancel_requested_at or now
            return "cancel_requested"
        raise ValueError(f"import job {job_id} already finished ({job.status})")

    def row(self, job_id: uuid.UUID) -> JobRow:
        return self.jobs[job_id]

    # --- the queue's verbs (JobStoreInterface), one SQL file each in JobStore

    async def claim(self, owner: str) -> ClaimedJob | None:
        leased_at = time.monotonic()
        now = self.clock.now
        runnable = [
            job
            for job in self.jobs.values()
            if (job.status == "queued" and job.run_after <= now) or self._lease_expired(job)
        ]
        if not runnable:
            return None
        job = min(runnable, key=lambda j: (-j.priority, j.run_after, j.created_at, j.sequence))
        return self._take(job, owner, leased_at)

    async def claim_by_id(self, owner: str, job_id: uuid.UUID) -> ClaimedJob:
        """As ``claim_job_by_id.sql``: this job if queued (whatever its run_after) or rescuable."""
        leased_at = time.monotonic()
        job = self.jobs.get(job_id)
        if job is None or not (job.status == "queued" or self._lease_expired(job)):
            state = (
                None
                if job is None
                else {
                    "status": job.status,
                    "lease_owner": job.lease_owner,
                    "lease_expires_at": job.lease_expires_at,
                }
            )
            raise JobNotClaimable(job_id, not_claimable_reason(state))
        return self._take(job, owner, leased_at)

    def _lease_expired(self, job: JobRow) -> bool:
        return (
            job.status == "running"
            and job.lease_expires_at is not None
            and job.lease_expires_at < self.clock.now
        )

    def _take(self, job: JobRow, owner: str, leased_at: float) -> ClaimedJob:
        """The claim's update of one row and the row it returns."""
        now = self.clock.now
        parked_at, waiting_for = job.parked_at, job.waiting_for
        job.parked_at, job.waiting_for = None, None
        job.status = "running"
        job.attempt += 1
        job.lease_owner = owner
        job.lease_expires_at = now + timedelta(seconds=self.lease_seconds)
        job.heartbeat_at = now
        job.started_at = job.started_at or now
        return ClaimedJob(
            id=job.id,
            user_id=job.user_id,
            storage_path=job.storage_path,
            file_type=job.file_type,
            stage=job.stage,
            progress_percent=job.progress_percent,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            priority=job.priority,
            cancel_requested_at=job.cancel_requested_at,
            created_at=job.created_at,
            checkpoint=copy.deepcopy(job.checkpoint),
            result=copy.deepcopy(job.result),
            fence=Fence(job.id, job.attempt, owner),
            leased_at=leased_at,
            parked_at=parked_at,
            waiting_for=waiting_for,
        )

    async def mark_started(self, fence: Fence, label: str) -> None:
        self._held(fence)

    async def heartbeat(self, fence: Fence) -> datetime | None:
        job = self._held(fence)
        job.heartbeat_at = self.clock.now
        job.lease_expires_at = self.clock.now + timedelta(seconds=self.lease_seconds)
        return job.cancel_requested_at

    async def advance(
        self,
        fence: Fence,
        *,
        stage: str | None,
        percent: int,
        label: str | None,
        checkpoint: dict[str, Any] | None = None,
        result: dict[str, Any] | None = None,
    ) -> int:
        job = self._held(fence)
        job.stage = stage if stage is not None else job.stage
        job.progress_percent = max(job.progress_percent, percent)
        job.checkpoint.update(copy.deepcopy(checkpoint or {}))
        job.result.update(copy.deepcopy(result or {}))
        return job.progress_percent

    async def succeed(self, fence: Fence, result: dict[str, Any]) -> None:
        job = self._held(fence)
        job.status, job.finished_at, job.progress_percent = "succeeded", self.clock.now, 100
        job.result.update(copy.deepcopy(result))
        job.lease_expires_at, job.last_error = None, None
        # The job's working data, and that of the user's older jobs no retry can use now.
        for other in self.jobs.values():
            older_ended = other.status in ("failed", "cancelled") and (
                other.created_at,
                other.sequence,
            ) < (job.created_at, job.sequence)
            if other.user_id == job.user_id and (other is job or older_ended):
                self.artifacts.pop(other.id, None)

    async def retry_later(
        self, fence: Fence, *, delay_seconds: float, message: str, code: str, error_class: str
    ) -> tuple[str, datetime]:
        job = self._held(fence)
        self._record_error(job, message=message, code=code, error_class=error_class)
        if job.cancel_requested_at is None:
            job.status, job.finished_at, job.last_error = "queued", None, message
            job.run_after = self.clock.now + timedelta(seconds=delay_seconds)
            job.lease_owner = None
        else:
            # A cancel requested meanwhile wins; the failure stays on record.
            job.status, job.finished_at = "cancelled", self.clock.now
            job.last_error = CANCELLED_MESSAGE
        job.lease_expires_at, job.heartbeat_at = None, None
        return job.status, job.run_after

    async def fail(
        self, fence: Fence, *, message: str, code: str, error_class: str, permanent: bool
    ) -> None:
        job = self._held(fence)
        self._record_error(
            job, message=message, code=code, error_class=error_class, permanent=permanent
        )
        cancelled = job.cancel_requested_at is not None
        job.status = "cancelled" if cancelled else "failed"
        job.last_error = CANCELLED_MESSAGE if cancelled else message
        job.finished_at, job.lease_expires_at = self.clock.now, None

    async def cancel(self, fence: Fence) -> None:
        job = self._held(fence)
        job.status, job.finished_at, job.last_error = "cancelled", self.clock.now, CANCELLED_MESSAGE
        job.lease_expires_at = None

    async def release(self, fence: Fence) -> None:
        job = self._held(fence)
        # At once, unless the job was set aside for one named worker (release_job.sql).
        job.status, job.attempt = "queued", max(job.attempt - 1, 0)
        job.run_after = max(job.run_after, self.clock.now)
        job.lease_owner, job.lease_expires_at, job.heartbeat_at = None, None, None

    async def park(
        self,
        fence: Fence,
        *,
        resume_at: datetime,
        waiting_for: str,
        checkpoint: dict[str, Any] | None = None,
    ) -> Parked:
        job = self._held(fence)
        now = self.clock.now
        # As park_job.sql: clamped to [now, now + MAX_PARK_SECONDS]; a set-aside job stays set
        # aside; a cancel requested meanwhile makes the job due now.
        resume = min(max(resume_at, now), now + timedelta(seconds=MAX_PARK_SECONDS))
        job.status, job.attempt = "queued", max(job.attempt - 1, 0)
        job.run_after = max(job.run_after, resume) if job.cancel_requested_at is None else now
        job.lease_owner, job.lease_expires_at, job.heartbeat_at = None, None, None
        job.checkpoint.update(copy.deepcopy(checkpoint or {}))
        job.parked_at, job.waiting_for = now, waiting_for
        return Parked(run_after=job.run_after, resume_at=resume)

    async def prune_artifacts(self, retention_days: int) -> int:
        cutoff = self.clock.now - timedelta(days=retention_days)
        pruned = 0
        for job in list(self.jobs.values()):
            if job.status not in ("failed", "cancelled") or job.id not in self.artifacts:
                continue
            superseded = any(
                later.user_id == job.user_id
                and later.status == "succeeded"
                and (later.created_at, later.sequence) > (job.created_at, job.sequence)
                for later in self.jobs.values()
            )
            if superseded or (job.finished_at is not None and job.finished_at < cutoff):
                pruned += len(self.artifacts.pop(job.id))
        return pruned

    async def has_active_jobs(self) -> bool:
        return any(job.status in ("queued", "running") for job in self.jobs.values())

    async def get_artifact(self, job_id: Any, name: str) -> Any | None:
        return copy.deepcopy(self.artifacts.get(job_id, {}).get(name))

    async def artifact_names(self, job_id: Any) -> set[str]:
        return set(self.artifacts.get(job_id, {}))

    async def list_artifacts(self, job_id: Any, prefix: str) -> list[tuple[str, Any]]:
        stored = self.artifacts.get(job_id, {})
        return [
            (name, copy.deepcopy(stored[name]))
            for name in sorted(stored)
            if name.startswith(prefix)
        ]

    @asynccontextmanager
    async def fenced_transaction(self, fence: Fence) -> AsyncIterator[MemoryFencedTransaction]:
        """Writes are held back and applied at the end only if the fence still holds then (as
        the row lock before commit in SQL); an exception inside drops them."""
        tx = MemoryFencedTransaction(self, fence)
        yield tx
        self._held(fence)
        for write in tx.advances:
            await self.advance(fence, label=None, **write)
        self.artifacts.setdefault(fence.job_id, {}).update(tx.artifacts)

    # --- helpers

    def _held(self, fence: Fence) -> JobRow:
        job = self.jobs.get(fence.job_id)
        if job is None or not job.held_by(fence):
            raise LeaseLost(f"job {fence.job_id} attempt {fence.attempt} is no longer ours")
        return job

    def _record_error(
        self, job: JobRow, *, message: str, code: str, error_class: str, permanent: bool = False
    ) -> None:
        job.errors.append(
            {
                "attempt": job.attempt,
                "stage": job.stage,
                "error_class": error_class,
                "code": code,
                "message": message,
                "permanent": permanent,
                "worker": job.lease_owner,
                "at": self.clock.now,
            }
        )


# The in-memory store stands in for JobStore wherever the queue's logic runs (mypy checks this).
_conforms: type[JobStoreInterface] = MemoryJobStore
