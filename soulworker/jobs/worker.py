"""The worker loop: claim while there are free slots, run jobs, stop cleanly.

Two separate paths end the work, as in River:

* **Stop claiming** (:meth:`Worker.request_stop`, on SIGTERM/SIGINT): no new claims at once;
  running jobs are asked to release themselves at their next checkpoint.
* **Cancel work** (when the shutdown budget is spent): handlers still running are cancelled and
  their jobs released, attempt not charged, so another worker resumes them from the checkpoint.

:meth:`Worker.run_one` works one named job instead of the queue (``soulworker import``;
docs/queue.md, "One named job"): it claims that job by id, runs it with the same
:class:`JobRun`, and returns when it ends; it never claims anything else (a job its handler
parks is claimed again by id when it asked to resume). Both stop paths hold there as well.

A parked job (docs/queue.md, "Parking a job") is an ordinary queued job with a later ``run_after``:
``has_active_jobs`` counts it, so ``run --drain`` waits for it, and the jittered poll claims it
once it is due (no NOTIFY is sent when time passes).

Wake-ups come from the listener (NOTIFY), from a job finishing (a slot is free), and from a
jittered poll, which is the source of truth. A database outage never crashes the loop: a failed
claim is logged and retried with backoff until the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from soulworker.jobs.errors import JobNotClaimable, ReleaseRequested
from soulworker.jobs.handler import JobHandler
from soulworker.jobs.lease import DATABASE_ERRORS
from soulworker.jobs.listener import Listener
from soulworker.jobs.queue_stats import QueueStatsReporter
from soulworker.jobs.runner import JobRun
from soulworker.jobs.store_interface import JobStoreInterface
from soulworker.logs import get_logger
from soulworker.settings import Settings

log = get_logger(__name__)

POLL_JITTER = 0.2
OUTAGE_BACKOFF_MIN_SECONDS = 0.5
OUTAGE_BACKOFF_MAX_SECONDS = 30.0
# After the shutdown budget, cancelled handlers get this long to unwind and write the release.
RELEASE_GRACE_SECONDS = 3.0
# How often a worker deletes working data that no retry can use any more. Any worker may do it;
# the delete is idempotent, so several instances doing it is harmless.
MAINTENANCE_INTERVAL_SECONDS = 3600.0
# A job task cancelled after that grace gets this long to unwind (its lease covers the job).
CANCEL_GRACE_SECONDS = 1.0


@dataclass
class WorkerStats:
    claimed: int = 0
    finished: int = 0
    claim_errors: int = 0
    runs: dict[str, JobRun] = field(default_factory=dict)


class Worker:
    def __init__(
        self,
        settings: Settings,
        store: JobStoreInterface,
        handler: JobHandler,
        worker_id: str,
        *,
        listen: bool,
        queue_stats: QueueStatsReporter | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.handler = handler
        self.worker_id = worker_id
        self.listen = listen
        self.stats = WorkerStats()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: dict[asyncio.Task[None], JobRun] = {}
        self.listener: Listener | None = None
        # The queue_stats side task (docs/queue.md, "Queue health"); None runs without it.
        self.queue_stats = queue_stats

    # --- control

    def wake(self) -> None:
        self._wake.set()

    def request_stop(self) -> None:
        """Stop claiming now; running jobs release themselves at their next checkpoint."""
        if self._stopping.is_set():
            return
        log.info(
            "stopping: no new claims; running jobs release at their next checkpoint",
            running=len(self._tasks),
            budget_seconds=self.settings.shutdown_seconds,
        )
        self._stopping.set()
        for run in self._tasks.values():
            run.request_release()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # --- the loop

    async def run(self, *, drain: bool = False) -> None:
        """Work until asked to stop (or, with ``drain``, until nothing is queued or running)."""
        side_tasks: list[asyncio.Task[None]] = []
        if self.listen:
            self.listener = Listener(self.settings, self.worker_id, self.wake)
            side_tasks.append(asyncio.create_task(self._supervise_listener(), name="listener"))
        if self.queue_stats is not None and self.settings.queue_stats_seconds > 0:
            side_tasks.append(
                asyncio.create_task(self._supervise_queue_stats(), name="queue-stats")
            )
        log.info(
            "worker started",
            worker=self.worker_id,
            concurrency=self.settings.concurrency,
            listen=self.listen,
            drain=drain,
        )
        try:
            await self._claim_loop(drain=drain)
        finally:
            await self._shut_down()
            for task in side_tasks:
                task.cancel()
            await asyncio.gather(*side_tasks, return_exceptions=True)
            log.info("worker stopped", claimed=self.stats.claimed, finished=self.stats.finished)

    async def run_one(self, job_id: uuid.UUID) -> None:
        """Claim the job ``job_id``, run it, and return once its outcome is recorded.

        No claim loop, no listener, no maintenance: no other job is ever claimed. Raises
        :class:`~soulworker.jobs.errors.JobNotClaimable` when the job cannot be claimed.
        :meth:`request_stop` works as in :meth:`run`: the job is asked to release itself, and
        cancelled and released once the shutdown budget is spent.
        """
        if self.stopping:
            return
        log.info("worker started for one job", worker=self.worker_id, job_id=str(job_id))
        try:
            job = await self.store.claim_by_id(self.worker_id, job_id)
            while True:
                run = JobRun(job, self.store, self.handler, self.settings)
                self._start(run)
                while self._tasks and not self.stopping:
                    self._wake.clear()
                    # Woken when the job ends (_finished) or a stop is requested.
                    await self._sleep(self.settings.poll_seconds)
                if run.parked is None or self.stopping:
                    break
                # The handler parked the job (docs/queue.md, "Parking a job"): it stays set
                # aside for this command, which claims it again when it asked to resume, or at
                # once when a cancel requested meanwhile made it due now.
                await self._sleep_until(min(run.parked.resume_at, run.parked.run_after))
                if self._stopping.is_set():  # (not self.stopping: mypy narrowed that above)
                    break
                try:
                    job = await self.store.claim_by_id(self.worker_id, job_id)
                except JobNotClaimable as exc:
                    # Taken while parked: a cancel made it due, and a daemon cancelled it.
                    log.info("the parked job is no longer this worker's", reason=exc.reason)
                    break
        finally:
            await self._shut_down()
            log.info("worker stopped", claimed=self.stats.claimed, finished=self.stats.finished)

    async def _claim_loop(self, *, drain: bool) -> None:
        outage_delay = OUTAGE_BACKOFF_MIN_SECONDS
        next_maintenance = 0.0
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                if time.monotonic() >= next_maintenance:
                    next_maintenance = time.monotonic() + MAINTENANCE_INTERVAL_SECONDS
                    await self._maintain()
                while len(self._tasks) < self.settings.concurrency and not self.stopping:
                    job = await self.store.claim(self.worker_id)
                    if job is None:
                        break
                    self._start(JobRun(job, self.store, self.handler, self.settings))
                if drain and not self._tasks and not await self.store.has_active_jobs():
                    log.info("drained: no job is queued or running")
                    return
                outage_delay = OUTAGE_BACKOFF_MIN_SECONDS
                timeout = self.settings.poll_seconds * random.uniform(
                    1 - POLL_JITTER, 1 + POLL_JITTER
                )
            except DATABASE_ERRORS as exc:
                self.stats.claim_errors += 1
                log.warning(
                    "database unavailable; waiting before claiming again",
                    error=type(exc).__name__,
                    retry_in_seconds=round(outage_delay, 2),
                )
                timeout = outage_delay
                outage_delay = min(outage_delay * 2, OUTAGE_BACKOFF_MAX_SECONDS)
            await self._sleep(timeout)

    async def _maintain(self) -> None:
        pruned = await self.store.prune_artifacts(self.settings.artifact_retention_days)
        if pruned:
            log.info("deleted working data of old failed or cancelled imports", artifacts=pruned)

    async def _sleep_until(self, when: datetime) -> None:
        """Sleep until ``when`` (the worker's clock) or a stop."""
        while not self.stopping:
            remaining = (when - datetime.now(UTC)).total_seconds()
            if remaining <= 0:
                return
            self._wake.clear()
            await self._sleep(min(remaining, self.settings.poll_seconds))

    async def _sleep(self, seconds: float) -> None:
        """Sleep until woken (NOTIFY, a finished job, a stop) or ``seconds`` pass."""
        with contextlib.suppress(TimeoutError):
            # asyncio.timeout, not wait_for, which can swallow a cancel on Python 3.11.
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    def _start(self, run: JobRun) -> None:
        self.stats.claimed += 1
        if self.stopping:
            run.request_release()
        task = asyncio.create_task(run.run(), name=f"job-{run.job.id}")
        self._tasks[task] = run
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self.stats.finished += 1
        if not task.cancelled() and task.exception() is not None:
            log.error("job runner crashed", exc_info=task.exception())
        self._wake.set()

    async def _shut_down(self) -> None:
        if not self._tasks:
            return
        for run in self._tasks.values():
            run.request_release()
        _, still_running = await asyncio.wait(
            set(self._tasks), timeout=self.settings.shutdown_seconds
        )
        if not still_running:
            return
        log.warning(
            "shutdown budget spent; cancelling running jobs and releasing them",
            jobs=len(still_running),
        )
        for task in still_running:
            self._tasks[task].stop(ReleaseRequested("shutdown budget spent"))
        _, stuck = await asyncio.wait(still_running, timeout=RELEASE_GRACE_SECONDS)
        for task in stuck:
            task.cancel()
        if stuck:
            # Let them unwind before the pool and the handler's clients are closed under them.
            await asyncio.wait(stuck, timeout=CANCEL_GRACE_SECONDS)

    async def _supervise_listener(self) -> None:
        """Keep the listener alive: it heals its own connection; this heals the task itself."""
        assert self.listener is not None
        while True:
            try:
                await self.listener.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("listener crashed; restarting it")
                await asyncio.sleep(1)

    async def _supervise_queue_stats(self) -> None:
        """Keep the queue_stats reporter alive: a bug in it is logged, never fatal to the worker."""
        assert self.queue_stats is not None
        while True:
            try:
                await self.queue_stats.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("queue stats reporter crashed; restarting it")
                await asyncio.sleep(self.settings.queue_stats_seconds)
