"""What the queue's logic needs from a job store: the worker, the runner, the lease keeper and
the job context are written against these protocols, not against the Postgres store.

:class:`~soulworker.jobs.store.JobStore` (every verb one SQL file) is the store the daemon runs
on; an in-memory store with the same semantics runs the tests of the queue's decisions in
milliseconds (docs/queue.md, "Two layers of tests"). A contract test runs the same scenarios on
both, so the two cannot drift apart.

Every write that takes a :class:`~soulworker.jobs.job.Fence` is fenced: when the job is no
longer this attempt's (another worker took it over, or it has ended), it raises
:class:`~soulworker.jobs.errors.LeaseLost` and changes nothing.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from soulworker.jobs.job import ClaimedJob, Fence

if TYPE_CHECKING:
    from soulworker.jobs.store import Connection


@dataclass(frozen=True)
class Parked:
    """Where a park left the job: ``resume_at`` is the handler's time as clamped (never before
    now, never more than ``MAX_PARK_SECONDS`` ahead); ``run_after`` is when the queue's claim may
    take the job: the same, later for a job set aside for one named worker, and now when a cancel
    was requested meanwhile."""

    run_after: datetime
    resume_at: datetime


class FencedTransaction(Protocol):
    """The writes of one job that commit together, and only while its fence still holds.

    If the lease is lost before the commit, the transaction raises ``LeaseLost`` and none of
    its writes happen; an exception inside it undoes them too.
    """

    @property
    def conn(self) -> Connection:
        """The transaction's SQL connection, for a handler's own statements (the pipeline's
        chunk and profile writes). A store that runs no SQL raises here: use it only with
        handlers that write through ``advance`` and ``put_artifact`` alone."""
        ...

    async def advance(
        self,
        *,
        stage: str | None,
        percent: int,
        label: str | None,
        checkpoint: dict[str, Any] | None = None,
        result: dict[str, Any] | None = None,
    ) -> int:
        """As :meth:`JobStoreInterface.advance`, committed with the rest of the transaction."""
        ...

    async def put_artifact(self, name: str, content: Any) -> None:
        """Store (or replace) one named piece of the job's personal working data."""
        ...


class JobStoreInterface(Protocol):
    """The job lifecycle's verbs (docs/queue.md). Times are the store's own clock."""

    async def claim(self, owner: str) -> ClaimedJob | None:
        """Take the best runnable job for ``owner``, or None: a due queued job or a running one
        whose lease expired; higher ``priority`` first, then earlier ``run_after``, then older.
        The claim charges an attempt and grants a lease."""
        ...

    async def claim_by_id(self, owner: str, job_id: UUID) -> ClaimedJob:
        """Take the job ``job_id`` and never another (docs/queue.md, "One named job"): the same
        claim as :meth:`claim` for one row, queued whatever its ``run_after``, or running with
        an expired lease. Raises ``JobNotClaimable``, saying why, for any other."""
        ...

    async def mark_started(self, fence: Fence, label: str) -> None:
        """The attempt begins (the profile shows the job). Fenced."""
        ...

    async def heartbeat(self, fence: Fence) -> datetime | None:
        """Renew the lease; return when a cancel was requested (None if not). Fenced."""
        ...

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
        """Write progress (never decreasing), merge ``checkpoint`` and ``result`` key by key;
        return the job's progress. Fenced."""
        ...

    async def succeed(self, fence: Fence, result: dict[str, Any]) -> None:
        """``succeeded``, progress 100, ``result`` merged; the job's working data (and that of
        the user's older failed or cancelled jobs) deleted. Fenced."""
        ...

    async def retry_later(
        self, fence: Fence, *, delay_seconds: float, message: str, code: str, error_class: str
    ) -> tuple[str, datetime]:
        """``queued`` again after ``delay_seconds``, the error recorded; return ``(status,
        run_after)``. The status is ``cancelled`` when a cancel was requested meanwhile."""
        ...

    async def fail(
        self, fence: Fence, *, message: str, code: str, error_class: str, permanent: bool
    ) -> None:
        """``failed`` for good, the error recorded (``cancelled`` if a cancel was requested)."""
        ...

    async def cancel(self, fence: Fence) -> None:
        """``cancelled``, as an operator asked. Fenced."""
        ...

    async def release(self, fence: Fence) -> None:
        """``queued`` again at once, the attempt given back, the checkpoint kept. Fenced."""
        ...

    async def park(
        self,
        fence: Fence,
        *,
        resume_at: datetime,
        waiting_for: str,
        checkpoint: dict[str, Any] | None = None,
    ) -> Parked:
        """``queued`` again, due at ``resume_at`` clamped to [now, now + ``MAX_PARK_SECONDS``]
        (a set-aside job stays set aside; a job with a cancel requested is due now), the lease
        released, the attempt given back, ``checkpoint`` merged, stage and progress kept,
        ``parked_at = now`` and ``waiting_for`` recorded. The next claim returns and clears both.
        Fenced (docs/queue.md, "Parking a job")."""
        ...

    async def prune_artifacts(self, retention_days: int) -> int:
        """Delete working data no retry can use any more; return how many artifacts went."""
        ...

    async def has_active_jobs(self) -> bool:
        """Whether any job is queued (due or not) or running."""
        ...

    async def get_artifact(self, job_id: Any, name: str) -> Any | None: ...

    async def artifact_names(self, job_id: Any) -> set[str]: ...

    async def list_artifacts(self, job_id: Any, prefix: str) -> list[tuple[str, Any]]:
        """The job's artifacts whose name starts with ``prefix``, in name order."""
        ...

    def fenced_transaction(self, fence: Fence) -> AbstractAsyncContextManager[FencedTransaction]:
        """A transaction on the job's behalf that commits only while ``fence`` holds."""
        ...
