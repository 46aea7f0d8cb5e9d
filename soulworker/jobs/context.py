"""What a job handler sees: its job, progress and checkpoints, its own transactions, stop requests.

Progress is throttled: a handler may report as often as it likes, and at most one write per
``progress_interval`` reaches the database (a stage change or a checkpoint always does). Every
write is fenced; a lost lease surfaces as :class:`LeaseLost` from the write that noticed it.

Stopping comes in two strengths. A *soft* stop (the worker is shutting down) is honoured at the
next checkpoint: the checkpoint is saved, then :class:`ReleaseRequested` is raised so the job
is released and another worker resumes from that checkpoint. A *hard* stop (cancel requested,
lease lost, time limit, shutdown budget spent) cancels the handler's task outright.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from soulworker.jobs.errors import CancelRequested, JobControl, ReleaseRequested
from soulworker.jobs.job import ClaimedJob
from soulworker.jobs.lease import DATABASE_ERRORS
from soulworker.jobs.store import Connection
from soulworker.jobs.store_interface import FencedTransaction, JobStoreInterface
from soulworker.logs import get_logger

log = get_logger(__name__)

# Checkpoint key a handler sets, in the transaction of its last writes, when all its work is
# committed. A job found so after a crash is recorded as succeeded without running again, and a
# shutdown does not release a job whose work is done.
COMPLETED = "completed"


class JobTransaction:
    """A fenced transaction of one job: the handler's own statements plus checkpoint writes."""

    def __init__(self, context: JobContext, writes: FencedTransaction) -> None:
        self._context = context
        self._writes = writes
        self.checkpointed = False
        # Merged into the context's copy only once the transaction has committed.
        self._pending_checkpoint: dict[str, Any] = {}

    async def advance(
        self,
        *,
        stage: str | None,
        percent: int,
        label: str | None,
        checkpoint: dict[str, Any] | None = None,
        result: dict[str, Any] | None = None,
        completed: bool = False,
    ) -> None:
        """Write progress, checkpoint and partial results inside this transaction.

        ``completed`` marks the handler's work as all done (see ``COMPLETED``).
        """
        if completed:
            checkpoint = {**(checkpoint or {}), COMPLETED: True}
        await self._writes.advance(
            stage=stage, percent=percent, label=label, checkpoint=checkpoint, result=result
        )
        self.checkpointed = self.checkpointed or bool(checkpoint)
        self._pending_checkpoint.update(checkpoint or {})
        self._context.note_written(stage, percent, label)

    @property
    def committed_checkpoint(self) -> dict[str, Any]:
        return self._pending_checkpoint

    @property
    def conn(self) -> Connection:
        """The transaction's connection, for the handler's own SQL (see FencedTransaction)."""
        return self._writes.conn

    async def put_artifact(self, name: str, content: Any) -> None:
        """Store personal working data for later stages (never in the job row itself)."""
        await self._writes.put_artifact(name, content)


class JobContext:
    def __init__(
        self, job: ClaimedJob, store: JobStoreInterface, *, progress_interval_seconds: float
    ) -> None:
        self.job = job
        self.store = store
        self.progress_interval_seconds = progress_interval_seconds
        self.checkpoint: dict[str, Any] = dict(job.checkpoint)
        self.stop_reason: JobControl | None = None
        self.release_requested = False
        self._cancel_seen = False
        self._last_write_at = 0.0
        self._written: tuple[str | None, int, str | None] = (job.stage, job.progress_percent, None)
        self._pending: tuple[str | None, int, str | None] | None = None

    # --- progress and checkpoints

    async def progress(self, stage: str, percent: float, label: str) -> None:
        """Report progress; written at most once per interval, at once when the stage changes."""
        whole = max(0, min(100, int(percent)))
        report = (stage, whole, label)
        if report == self._written:
            self._pending = None
            return
        stage_changed = stage != self._written[0] or label != self._written[2]
        due = time.monotonic() - self._last_write_at >= self.progress_interval_seconds
        if stage_changed or due:
            await self._write_progress(report)
        else:
            self._pending = report

    async def flush_progress(self) -> None:
        if self._pending is not None:
            await self._write_progress(self._pending)

    async def _write_progress(self, report: tuple[str | None, int, str | None]) -> None:
        """Write a progress report. Progress is worth a write, not an attempt: when the database
        fails it for a moment, the report waits for the next one (a lost lease still stops the
        job, and checkpoints are never written here)."""
        stage, percent, label = report
        try:
            await self.store.advance(self.job.fence, stage=stage, percent=percent, label=label)
        except DATABASE_ERRORS as exc:
            log.warning("progress not written; the next report retries", error=type(exc).__name__)
            self._pending = report
            self._last_write_at = time.monotonic()  # not again at once: the interval applies
            return
        self.note_written(stage, percent, label)

    async def save_checkpoint(
        self,
        patch: dict[str, Any],
        *,
        stage: str,
        percent: float,
        label: str,
        result: dict[str, Any] | None = None,
        completed: bool = False,
    ) -> None:
        """Merge ``patch`` into the checkpoint (and ``result``), then honour a stop.

        Once a checkpoint has marked the work ``completed``, no stop is honoured here any more:
        work that finished is not undone, so the handler goes on to return its result, which
        is recorded as the success (as after :meth:`transaction`)."""
        if completed:
            patch = {**patch, COMPLETED: True}
        await self.store.advance(
            self.job.fence,
            stage=stage,
            percent=max(0, min(100, int(percent))),
            label=label,
            checkpoint=patch,
            result=result,
        )
        self.checkpoint.update(patch)
        self.note_written(stage, int(percent), label)
        if not self.checkpoint.get(COMPLETED):
            self.stop_if_requested()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[JobTransaction]:
        """A transaction on the job's behalf that commits only while the lease holds.

        Use :meth:`JobTransaction.advance` inside it to commit a checkpoint atomically with the
        handler's own writes. After a commit that saved a checkpoint, a soft stop is honoured.
        """
        async with self.store.fenced_transaction(self.job.fence) as writes:
            tx = JobTransaction(self, writes)
            yield tx
        self.checkpoint.update(tx.committed_checkpoint)
        if tx.checkpointed and not self.checkpoint.get(COMPLETED):
            self.stop_if_requested()

    def note_written(self, stage: str | None, percent: int, label: str | None) -> None:
        self._written = (stage, percent, label)
        self._pending = None
        self._last_write_at = time.monotonic()

    # --- artifacts

    async def artifact(self, name: str) -> Any | None:
        return await self.store.get_artifact(self.job.id, name)

    async def artifacts(self, prefix: str) -> list[tuple[str, Any]]:
        return await self.store.list_artifacts(self.job.id, prefix)

    async def artifact_names(self) -> set[str]:
        return await self.store.artifact_names(self.job.id)

    # --- parking and cancels (docs/queue.md, "Parking a job")

    @property
    def resumed_from_park(self) -> bool:
        """This attempt resumes a job its handler parked (``ctx.job.waiting_for`` says for what)."""
        return self.job.resumed_from_park

    @property
    def cancel_requested(self) -> bool:
        """An operator asked for this job to be cancelled: before this attempt was claimed (the
        runner then calls the handler's ``on_cancel`` instead of ``run``), or during it."""
        return (
            self._cancel_seen
            or self.job.cancel_requested_at is not None
            or isinstance(self.stop_reason, CancelRequested)
        )

    def note_cancel_requested(self) -> None:
        """The runner learnt of a cancel another way (a failure's statement recorded it)."""
        self._cancel_seen = True

    # --- stopping

    @property
    def stop_requested(self) -> bool:
        """True when the handler should stop at its next convenient point."""
        return self.release_requested or self.stop_reason is not None

    def request_release(self) -> None:
        """Soft stop: the worker is shutting down; release at the next checkpoint."""
        self.release_requested = True

    def stop_if_requested(self) -> None:
        if self.stop_reason is not None:
            raise self.stop_reason
        if self.release_requested:
            raise ReleaseRequested("released at a checkpoint for shutdown")
