"""Running one claimed job from start to its recorded outcome.

The handler runs in a task of its own so that the lease keeper, the time limit and the shutdown
can stop it without stopping the runner, which then records what happened:

==========================  ==================================================================
handler outcome             recorded as
==========================  ==================================================================
returned a result           ``succeeded``
PermanentJobError           ``failed`` at once
TransientJobError / other   ``queued`` again after a backoff, or ``failed`` on the last attempt
time limit                  like a transient failure
CancelRequested             ``cancelled`` (the handler's ``on_cancel`` first, if it has one)
ReleaseRequested            ``queued`` at once, attempt given back (shutdown)
ParkJob                     ``queued`` until the handler's time, attempt given back (parked)
LeaseLost                   nothing: the job belongs to someone else now
==========================  ==================================================================

A job parked by its handler (docs/queue.md, "Parking a job") is resumed by a later claim like
any queued job; the profile already shows it, so it is not marked started again. A job whose
cancel was requested before this attempt (while parked, or while no worker held it) does not
run: the handler's ``on_cancel`` stops its outside work, then the job is recorded cancelled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from soulworker.errors import JobError
from soulworker.jobs.backoff import retry_delay
from soulworker.jobs.context import COMPLETED, JobContext
from soulworker.jobs.errors import CancelRequested, JobControl, LeaseLost, ReleaseRequested
from soulworker.jobs.handler import CancelsOutsideWork, JobHandler
from soulworker.jobs.job import ClaimedJob
from soulworker.jobs.lease import DATABASE_ERRORS, keep_lease
from soulworker.jobs.park import ParkJob
from soulworker.jobs.store_interface import JobStoreInterface, Parked
from soulworker.logs import get_logger
from soulworker.settings import Settings

log = get_logger(__name__)
T = TypeVar("T")

START_LABEL = "Starting import"
# Recording an outcome is worth a few tries across a database blip; past that, the lease
# expires and another worker picks the job up again.
OUTCOME_WRITE_ATTEMPTS = 4
# How long a handler's ``on_cancel`` may take to stop the job's outside work (one or two API
# calls, retried inside it if it likes); past it the job is cancelled anyway. The lease is kept
# meanwhile; a shutdown that cannot wait this long leaves the job to its lease and the next claim.
ON_CANCEL_SECONDS = 60.0


# What a person reads after the message of a failure that was not permanent: what happens next.
# Errors say only what happened; only the runner knows whether another attempt follows
# (docs/model-answers.md, "True messages").
WILL_BE_RETRIED = "The import will be retried automatically."
STOPPED_AFTER_ATTEMPTS = "The import stopped after {attempts}; please try it again later."


def with_next_step(message: str, *, retrying: bool, permanent: bool, attempts: int) -> str:
    """``message`` followed by what happens next: a retry, or (after the last attempt of a
    transient failure) that the import stopped. A permanent failure's message already says
    what to do."""
    if permanent:
        return message
    if retrying:
        return f"{message} {WILL_BE_RETRIED}"
    counted = f"{attempts} attempt" + ("" if attempts == 1 else "s")
    return f"{message} {STOPPED_AFTER_ATTEMPTS.format(attempts=counted)}"


class TimeLimitExceeded(JobControl):
    """The attempt ran past SOULWORKER_JOB_TIMEOUT_SECONDS."""


RECANCEL_SECONDS = 1.0
"""How often a hard stop cancels the handler again while it has not ended. Python 3.11's
``asyncio.wait_for`` loses a cancel that arrives as the awaited thing completes (fixed in 3.12),
and libraries use it where a handler waits, psycopg_pool's ``getconn`` among them: such a handler
would go on to its next checkpoint. A second is short next to a lease, long next to a lost race."""


class JobRun:
    """One attempt of one job in this process."""

    def __init__(
        self, job: ClaimedJob, store: JobStoreInterface, handler: JobHandler, settings: Settings
    ) -> None:
        self.job = job
        self.store = store
        self.handler = handler
        self.settings = settings
        self.ctx = JobContext(
            job, store, progress_interval_seconds=settings.progress_interval_seconds
        )
        self._handler_task: asyncio.Task[dict[str, Any]] | None = None
        self._recancel: asyncio.Future[None] | None = None
        # Where this attempt parked the job, once recorded (``Worker.run_one`` resumes it then).
        self.parked: Parked | None = None

    def request_release(self) -> None:
        """Soft stop for shutdown: the handler releases the job at its next checkpoint."""
        self.ctx.request_release()

    def stop(self, reason: JobControl) -> None:
        """Hard stop: cancel the handler now; ``reason`` decides what is recorded."""
        if self.ctx.stop_reason is None:
            self.ctx.stop_reason = reason
        task = self._handler_task
        if task is not None and not task.done():
            task.cancel()
            if self._recancel is None:
                self._recancel = asyncio.ensure_future(self._cancel_until_done(task))

    async def _cancel_until_done(self, task: asyncio.Task[dict[str, Any]]) -> None:
        """Cancel ``task`` again every ``RECANCEL_SECONDS`` until it has ended (a lost cancel)."""
        while not task.done():
            await asyncio.wait({task}, timeout=RECANCEL_SECONDS)
            if not task.done():
                log.warning("the handler has not stopped yet; cancelling it again")
                task.cancel()

    async def run(self) -> None:
        job = self.job
        with structlog.contextvars.bound_contextvars(
            job_id=str(job.id), user_id=str(job.user_id), attempt=job.attempt
        ):
            started = time.monotonic()
            log.info(
                "job claimed",
                max_attempts=job.max_attempts,
                resumed_from=job.stage,
                resumed_from_park=job.resumed_from_park,
            )
            try:
                await self._run_and_record()
            except LeaseLost:
                log.warning("lease lost while recording the outcome; nothing more written")
            except DATABASE_ERRORS as exc:
                log.error(
                    "could not record the job's outcome; its lease will expire and it will be "
                    "picked up again",
                    error=type(exc).__name__,
                )
            except Exception as exc:
                # A bug here must not take the worker down with it; the lease covers the job.
                log.error("job runner failed", error=type(exc).__name__, exc_info=exc)
            finally:
                log.info("job attempt ended", seconds=round(time.monotonic() - started, 3))

    async def _run_and_record(self) -> None:
        job = self.job
        if job.checkpoint.get(COMPLETED):
            # The handler committed all its work, then its worker died before the success was
            # recorded: record it now (the result is already in the row), whatever else holds.
            log.info("job's work was complete; recording its success")
            await self._record(lambda: self.store.succeed(job.fence, {}))
            return
        if job.cancel_requested_at is not None:
            log.info(
                "job was cancelled while no worker held it",
                parked=job.resumed_from_park,
            )
            await self._cancel_outside_work()
            await self._record(lambda: self.store.cancel(job.fence))
            return
        if job.attempt > job.max_attempts:
            # A worker died holding the last attempt; the claim charged one more.
            await self._record_failure(
                "The import was interrupted too many times. Please try it again later.",
                code="attempts_exhausted",
                error_class="LeaseExpired",
                permanent=True,
            )
            return
        if not job.resumed_from_park:
            # A parked job's profile shows it already, with the label its handler left
            # ("Building deep memory"): resuming it is no new start.
            await self.store.mark_started(job.fence, START_LABEL)

        outcome = await self._run_handler()
        await self._record_outcome(outcome)

    async def _run_handler(self) -> dict[str, Any] | BaseException:
        self._handler_task = asyncio.create_task(self.handler.run(self.ctx), name="job-handler")
        lease_task = asyncio.create_task(
            keep_lease(
                self.store,
                self.job.fence,
                leased_at=self.job.leased_at,
                interval_seconds=self.settings.heartbeat_seconds,
                lease_seconds=self.settings.lease_seconds,
                stop_job=self.stop,
            ),
            name="job-lease",
        )
        try:
            done, _ = await asyncio.wait(
                {self._handler_task}, timeout=self.settings.job_timeout_seconds
            )
            if not done:
                self.stop(TimeLimitExceeded("the attempt ran past its time limit"))
                await asyncio.wait({self._handler_task})
        finally:
            lease_task.cancel()
            await asyncio.gather(lease_task, return_exceptions=True)
            if self._recancel is not None:
                self._recancel.cancel()
                await asyncio.gather(self._recancel, return_exceptions=True)
        task = self._handler_task
        if task.done() and not task.cancelled() and task.exception() is None:
            # The work finished: a cancel or a lost lease noticed after it changes nothing (the
            # success write is fenced, so a job that really is someone else's is not touched).
            return task.result()
        if self.ctx.checkpoint.get(COMPLETED):
            # Stopped after its last transaction committed all the work: that is a success too.
            return {}
        if self.ctx.stop_reason is not None:
            return self.ctx.stop_reason
        if task.cancelled():
            return asyncio.CancelledError()
        exc = task.exception()
        if exc is not None:
            return exc
        return task.result()

    async def _record_outcome(self, outcome: dict[str, Any] | BaseException) -> None:
        fence = self.job.fence
        if isinstance(outcome, dict):
            await self.ctx.flush_progress()
            await self._record(lambda: self.store.succeed(fence, outcome))
            log.info("job succeeded")
        elif isinstance(outcome, LeaseLost):
            log.warning("job stopped: lease lost; nothing more is written")
        elif isinstance(outcome, CancelRequested):
            await self._cancel_outside_work()
            await self._record(lambda: self.store.cancel(fence))
            log.info("job cancelled")
        elif isinstance(outcome, ParkJob):
            await self.ctx.flush_progress()
            park = outcome
            self.parked = await self._record(
                lambda: self.store.park(
                    fence,
                    resume_at=park.resume_at,
                    waiting_for=park.waiting_for,
                    checkpoint=park.checkpoint,
                )
            )
            log.info(
                "job parked",
                waiting_for=park.waiting_for,
                resume_at=self.parked.resume_at.isoformat(),
                run_after=self.parked.run_after.isoformat(),
            )
        elif isinstance(outcome, ReleaseRequested):
            await self._record(lambda: self.store.release(fence))
            log.info("job released for another worker to resume")
        elif isinstance(outcome, TimeLimitExceeded):
            minutes = self.settings.job_timeout_seconds / 60
            await self._record_failure(
                f"The import took longer than {minutes:g} minutes.",
                code="time_limit",
                error_class="TimeLimitExceeded",
                permanent=False,
            )
        elif isinstance(outcome, JobError):
            await self._record_failure(
                outcome.message,
                code=outcome.code,
                error_class=type(outcome).__name__,
                permanent=outcome.permanent,
            )
        else:
            log.error(
                "job failed with an unexpected error",
                error=type(outcome).__name__,
                exc_info=outcome,
            )
            await self._record_failure(
                "The import failed because of an internal error.",
                code="internal_error",
                error_class=type(outcome).__name__,
                permanent=False,
            )

    async def _cancel_outside_work(self, *, job_is_ours: bool = True) -> None:
        """Let the handler stop the job's outside work before the cancel is recorded.

        Runs its ``on_cancel`` (if it has one) under a lease keeper of its own that ignores the
        cancel request (it is what is being done) but not a lost lease, for at most
        ``ON_CANCEL_SECONDS``. A failure or a time-out is logged and the cancel goes ahead; a lost
        lease raises LeaseLost, and nothing more is written. With ``job_is_ours`` false the
        cancel is already recorded (it raced a failure): the hook runs without a lease, and its
        fenced writes, if it tries any, fail.
        """
        if not isinstance(self.handler, CancelsOutsideWork):
            return
        if not job_is_ours:
            await self._run_cancel_hook(keeper=None)
            return
        fence = self.job.fence
        renewed_at = time.monotonic()
        # The keeper of the attempt (if any) has stopped: renew first, so the hook starts with a
        # whole lease whatever the handler's unwinding took.
        await self._record(lambda: self.store.heartbeat(fence))
        lost: list[JobControl] = []
        hook_task: list[asyncio.Task[None]] = []

        def stop(reason: JobControl) -> None:
            lost.append(reason)
            for task in hook_task:
                task.cancel()

        keeper = keep_lease(
            self.store,
            fence,
            leased_at=renewed_at,
            interval_seconds=self.settings.heartbeat_seconds,
            lease_seconds=self.settings.lease_seconds,
            stop_job=stop,
            stop_on_cancel=False,
        )
        await self._run_cancel_hook(keeper=keeper, started=hook_task.append)
        if lost:
            raise LeaseLost("lease lost while the handler cancelled its outside work")

    async def _run_cancel_hook(
        self,
        *,
        keeper: Coroutine[Any, Any, None] | None,
        started: Callable[[asyncio.Task[None]], None] | None = None,
    ) -> None:
        """Run the handler's ``on_cancel`` for at most ``ON_CANCEL_SECONDS`` beside ``keeper``
        (the lease keeper, if the job is still ours); log how it ended, never raise its error."""
        assert isinstance(self.handler, CancelsOutsideWork)
        self.ctx.note_cancel_requested()
        hook = asyncio.create_task(self.handler.on_cancel(self.ctx), name="job-on-cancel")
        if started is not None:
            started(hook)
        keeper_task = (
            asyncio.create_task(keeper, name="job-on-cancel-lease") if keeper is not None else None
        )
        try:
            done, _ = await asyncio.wait({hook}, timeout=ON_CANCEL_SECONDS)
            if not done:
                hook.cancel()
                await asyncio.wait({hook})
        finally:
            if keeper_task is not None:
                keeper_task.cancel()
                await asyncio.gather(keeper_task, return_exceptions=True)
        if not done:
            log.warning(
                "on_cancel ran past its time limit; cancelling the job anyway",
                seconds=ON_CANCEL_SECONDS,
            )
        elif hook.cancelled():
            log.warning("on_cancel stopped: the lease was lost")
        elif (error := hook.exception()) is not None:
            # The class only: the message could hold what the handler was working on.
            log.warning("on_cancel failed; cancelling the job anyway", error=type(error).__name__)
        else:
            log.info("the handler stopped the job's outside work")

    async def _record_failure(
        self, message: str, *, code: str, error_class: str, permanent: bool
    ) -> None:
        fence = self.job.fence
        retrying = not permanent and self.job.attempt < self.job.max_attempts
        message = with_next_step(
            message, retrying=retrying, permanent=permanent, attempts=self.job.attempt
        )
        if retrying:
            delay = retry_delay(
                self.job.attempt,
                self.settings.retry_base_seconds,
                self.settings.retry_max_seconds,
            )
            status, run_after = await self._record(
                lambda: self.store.retry_later(
                    fence,
                    delay_seconds=delay,
                    message=message,
                    code=code,
                    error_class=error_class,
                )
            )
            if status == "cancelled":
                log.info("job attempt failed after a cancel was requested; job cancelled")
                # The cancel raced the failure and the statement recorded it: the job is no
                # longer ours, but its outside work must still be stopped.
                await self._cancel_outside_work(job_is_ours=False)
                return
            log.warning(
                "job attempt failed; will retry",
                code=code,
                error_class=error_class,
                retry_in_seconds=round(delay, 1),
                run_after=str(run_after),
            )
            return
        await self._record(
            lambda: self.store.fail(
                fence, message=message, code=code, error_class=error_class, permanent=permanent
            )
        )
        log.warning("job failed", code=code, error_class=error_class, permanent=permanent)

    async def _record(self, write: Callable[[], Awaitable[T]]) -> T:
        """Run an outcome write, retrying it across short database blips."""
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(OUTCOME_WRITE_ATTEMPTS),
            wait=wait_exponential(multiplier=0.5, max=5),
            retry=retry_if_exception_type(DATABASE_ERRORS),
            reraise=True,
        ):
            with attempt:
                return await write()
        raise AssertionError("unreachable: tenacity reraises the last error")
