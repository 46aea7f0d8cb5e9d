"""A claimed job: the row as the claim returned it, and the fence that guards its writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class Fence:
    """Identifies one attempt of one job by one worker.

    Every write a worker makes to a job it runs matches on all three plus ``status =
    'running'``; if another worker has taken the job over, the attempt number or owner no
    longer match, the write touches no row, and the worker knows it lost the lease.
    """

    job_id: UUID
    attempt: int
    owner: str

    def params(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "attempt": self.attempt, "owner": self.owner}


@dataclass(frozen=True)
class ClaimedJob:
    id: UUID
    user_id: UUID
    storage_path: str
    file_type: str | None
    stage: str | None
    progress_percent: int
    attempt: int
    max_attempts: int
    priority: int
    cancel_requested_at: datetime | None
    created_at: datetime
    checkpoint: dict[str, Any]
    result: dict[str, Any]
    fence: Fence
    # ``time.monotonic()`` just before the claim was sent: the lease the claim granted runs
    # from no earlier than this, so the lease keeper counts its deadline from here.
    leased_at: float
    # When the job was parked and what it waited for, as the row said before this claim cleared
    # them (docs/queue.md, "Parking a job"); None when the job was not parked.
    parked_at: datetime | None = None
    waiting_for: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any], owner: str, *, leased_at: float) -> ClaimedJob:
        return cls(
            id=row["id"],
            user_id=row["user_id"],
            storage_path=row["storage_path"],
            file_type=row["file_type"],
            stage=row["stage"],
            progress_percent=row["progress_percent"],
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            priority=row["priority"],
            cancel_requested_at=row["cancel_requested_at"],
            created_at=row["created_at"],
            checkpoint=dict(row["checkpoint"] or {}),
            result=dict(row["result"] or {}),
            fence=Fence(row["id"], row["attempt"], owner),
            leased_at=leased_at,
            parked_at=row.get("parked_at"),
            waiting_for=row.get("waiting_for"),
        )

    @property
    def resumed_from_park(self) -> bool:
        """The job was parked until this claim: its handler asked to be resumed."""
        return self.parked_at is not None

    @property
    def attempts_left(self) -> int:
        return self.max_attempts - self.attempt
