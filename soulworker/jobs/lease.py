"""The lease keeper: one heartbeat task per running job.

Every ``lease/4`` it renews the lease and reads ``cancel_requested_at``. It stops the job (a hard
stop: the handler's task is cancelled) when

* the heartbeat matched no row: another worker took the job over, so nothing more may be written;
* an operator requested a cancel;
* the lease could not be renewed for most of its length (the database is unreachable, or a
  renewal hangs): the lease has probably run out and the job may already run elsewhere, so it
  must not go on spending money on model calls. Each renewal is bounded by that deadline, so a
  hung connection cannot hold the keeper past it;
* the keeper itself failed unexpectedly: a job must never run without a lease keeper.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import psycopg
import psycopg_pool

from soulworker.jobs.errors import CancelRequested, JobControl, LeaseLost
from soulworker.jobs.job import Fence
from soulworker.jobs.store_interface import JobStoreInterface
from soulworker.logs import get_logger

log = get_logger(__name__)

# A failed heartbeat is retried sooner than the regular interval, so one blip costs little.
RETRY_FRACTION = 0.25
# Stop the job when the last renewal is this close to expiring (fraction of the lease).
GIVE_UP_FRACTION = 0.9

# Any database failure, not only a lost connection: a read-only or otherwise failing database
# must be waited out (or end the job), never crash the worker.
DATABASE_ERRORS = (psycopg.Error, psycopg_pool.PoolTimeout)


async def keep_lease(
    store: JobStoreInterface,
    fence: Fence,
    *,
    leased_at: float,
    interval_seconds: float,
    lease_seconds: float,
    stop_job: Callable[[JobControl], None],
    stop_on_cancel: bool = True,
) -> None:
    """Run until cancelled, or until it has stopped the job.

    ``leased_at`` is when the lease the job holds was granted (``time.monotonic()`` before the
    claim was sent): the deadline counts from there, not from when the keeper starts, which
    may be later (the job is marked started first). With ``stop_on_cancel`` false a cancel
    request is not a reason to stop: the runner keeps the lease so while the handler cancels
    the job's outside work (docs/queue.md, "Cancelling a parked job").
    """
    try:
        await _renew_until_stopped(
            store,
            fence,
            leased_at=leased_at,
            interval_seconds=interval_seconds,
            lease_seconds=lease_seconds,
            stop_job=stop_job,
            stop_on_cancel=stop_on_cancel,
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error("the lease keeper failed; stopping the job", error=type(exc).__name__)
        stop_job(LeaseLost("the lease keeper failed"))


async def _renew_until_stopped(
    store: JobStoreInterface,
    fence: Fence,
    *,
    leased_at: float,
    interval_seconds: float,
    lease_seconds: float,
    stop_job: Callable[[JobControl], None],
    stop_on_cancel: bool,
) -> None:
    renewed_at = leased_at
    wait = max(0.0, min(interval_seconds, renewed_at + interval_seconds - time.monotonic()))
    while True:
        await asyncio.sleep(wait)
        deadline = renewed_at + lease_seconds * GIVE_UP_FRACTION
        sent = time.monotonic()  # the renewal extends the lease from no earlier than this
        try:
            remaining = deadline - sent
            if remaining <= 0:
                raise TimeoutError
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that
            # arrives as the heartbeat returns, and the runner would wait for this task forever.
            async with asyncio.timeout(remaining):
                cancel_requested_at = await store.heartbeat(fence)
        except LeaseLost as lost:
            log.warning("lease lost: another worker owns this job now; stopping it")
            stop_job(lost)
            return
        except (*DATABASE_ERRORS, TimeoutError) as exc:
            silent_for = time.monotonic() - renewed_at
            if time.monotonic() >= deadline:
                log.error(
                    "heartbeat failing for most of the lease; stopping the job",
                    error=type(exc).__name__,
                    silent_seconds=round(silent_for, 1),
                )
                stop_job(LeaseLost("the lease could not be renewed"))
                return
            log.warning("heartbeat failed; retrying", error=type(exc).__name__)
            wait = min(interval_seconds * RETRY_FRACTION, max(deadline - time.monotonic(), 0))
            continue
        renewed_at = sent
        wait = interval_seconds
        if cancel_requested_at is not None and stop_on_cancel:
            log.info("cancel requested by an operator; stopping the job")
            stop_job(CancelRequested("cancel requested"))
            return
