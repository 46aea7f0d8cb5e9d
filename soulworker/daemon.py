"""``soulworker run``: the daemon around the worker loop.

It opens the pool without waiting for the database (an outage at start is waited out like any
other), installs the signal handlers, and runs the worker until it stops.

Signals: the first SIGTERM or SIGINT stops claiming and gives running jobs the shutdown budget
to reach a checkpoint before they are released; the process then exits 0. A second signal exits
at once (status 128 + signal number); jobs still held are rescued when their lease expires.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal

from soulworker import db
from soulworker.jobs.handler import HandlerFactory
from soulworker.jobs.queue_stats import QueueStatsReporter
from soulworker.jobs.store import JobStore
from soulworker.jobs.worker import Worker
from soulworker.logs import get_logger
from soulworker.settings import Settings

log = get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def run_daemon(settings: Settings, handler_factory: HandlerFactory, *, drain: bool) -> int:
    # The handler first: a configuration problem it finds stops the daemon before anything else.
    handler = handler_factory(settings)
    mode = db.database_mode(settings)
    worker_id = db.worker_identity()
    log.info("worker identity", worker=worker_id, **db.host_of_this_process())
    log.info("database mode", mode=mode.describe())
    if mode.transaction_pooler:
        log.warning(
            "DATABASE_URL is a transaction pooler: prepared statements off, LISTEN off "
            "(polling every SOULWORKER_POLL_SECONDS)"
        )
    # Everything imported so far (the SDKs, pydantic models: ~170K objects) lives as long as the
    # process. Freezing it keeps the garbage collector from scanning it again and again while a
    # parse allocates millions of short-lived objects.
    gc.collect()
    gc.freeze()
    pool = db.create_pool(settings, f"soulworker {worker_id}"[:63])
    await pool.open(wait=False)
    worker = Worker(
        settings,
        JobStore(pool, lease_seconds=settings.lease_seconds),
        handler,
        worker_id,
        listen=mode.listen,
        # One worker reports, elected by a session lock that a transaction pooler cannot keep.
        queue_stats=QueueStatsReporter(settings, worker_id, elect=not mode.transaction_pooler),
    )
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info("signal received; shutting down", signal=signal.Signals(signum).name)
            worker.request_stop()
            return
        log.warning("second signal; exiting at once", signal=signal.Signals(signum).name)
        os._exit(128 + signum)

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await worker.run(drain=drain)
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        await handler.aclose()
        await pool.close()
    return 0
