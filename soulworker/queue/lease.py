"""The lease keeper: one heartbeat task per running job.

Every ``lease/4`` it renews the lease and reads ``cancel_requested_at``. It stops the job (a hard
stop: the handler's task is cancelled) when

* the heartbeat matched no row: another worker took the job over, so nothing more may be written;
* an operator requested a cancel;
* the database could not be reached for long enough that the lease has probably run out: the
  job might already be running elsewhere, so it must not go on spending money on model calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import psycopg
import psycopg_pool

from soulworker.logs import get_logger
from soulworker.queue.errors import CancelRequested, JobControl, LeaseLost
from soulworker.queue.job import Fence
from soulworker.queue.store import JobStore

log = get_logger(__name__)

# A failed heartbeat is retried sooner than the regular interval, so one blip costs little.
RETRY_FRACTION = 0.25
# Stop the job when the last renewal is this close to expiring (fraction of the lease).
GIVE_UP_FRACTION = 0.9

DATABASE_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout)


async def keep_lease(
    store: JobStore,
    fence: Fence,
    *,
    interval_seconds: float,
    lease_seconds: float,
    stop_job: Callable[[JobControl], None],
) -> None:
    """Run until cancelled, or until it has stopped the job."""
    renewed_at = time.monotonic()
    wait = interval_seconds
    while True:
        await asyncio.sleep(wait)
        try:
            cancel_requested_at = await store.heartbeat(fence)
        except LeaseLost as lost:
            log.warning("lease lost: another worker owns this job now; stopping it")
            stop_job(lost)
            return
        except DATABASE_ERRORS as exc:
            silent_for = time.monotonic() - renewed_at
            if silent_for >= lease_seconds * GIVE_UP_FRACTION:
                log.error(
                    "heartbeat failing for most of the lease; stopping the job",
                    error=type(exc).__name__,
                    silent_seconds=round(silent_for, 1),
                )
                stop_job(LeaseLost("the lease could not be renewed"))
                return
            log.warning("heartbeat failed; retrying", error=type(exc).__name__)
            wait = interval_seconds * RETRY_FRACTION
            continue
        renewed_at = time.monotonic()
        wait = interval_seconds
        if cancel_requested_at is not None:
            log.info("cancel requested by an operator; stopping the job")
            stop_job(CancelRequested("cancel requested"))
            return
