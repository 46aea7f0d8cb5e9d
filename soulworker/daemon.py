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

import psycopg

from soulworker import db
from soulworker.jobs.handler import HandlerFactory
from soulworker.jobs.queue_stats import QueueStatsReporter
from soulworker.jobs.store import JobStore
from soulworker.jobs.worker import Worker
from soulworker.logs import get_logger
from soulworker.settings import Settings, SettingsError

log = get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def run_daemon(settings: Settings, handler_factory: HandlerFactory, *, drain: bool) -> int:
    # The handler first: a configuration problem it finds stops the daemon before anything else.
    handler = handler_factory(settings)
    try:
        await check_embeddings_at_start(settings)
    except BaseException:
        await handler.aclose()
        raise
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


async def check_embeddings_at_start(settings: Settings) -> None:
    """With embedding on, prove once that the provider fills the ``embedding`` column, before any
    job is claimed (docs/embeddings.md, "Dimensions"): a permanent misconfiguration (a refused
    length, a contradicting setting, missing credentials) stops the daemon with the line saying
    what to change, as doctor words it. A database or provider that cannot be reached right now
    is only logged: the queue waits out outages, and the embed stage checks again."""
    if settings.embed_provider == "off":
        return
    # Imported here: with embedding off the daemon never loads the embedding code.
    from soulworker.embeddings.dimensions import (
        embedding_column,
        prove_dimensions,
        wanted_dimensions,
    )
    from soulworker.embeddings.errors import EmbeddingError
    from soulworker.embeddings.factory import embedder_from_settings
    from soulworker.embeddings.retry import EmbedRetryPolicy

    try:
        conn = await db.connect(settings, "soulworker embeddings check")
    except psycopg.Error as exc:
        log.warning("embedding check skipped: no database yet", error=type(exc).__name__)
        return
    try:
        column = await embedding_column(conn)
    finally:
        await conn.close()
    if column is None:
        log.warning(
            "the database has no conversation_chunks.embedding column (pgvector is not "
            "installed): imports will not embed chunks"
        )
        return
    try:
        dimensions = wanted_dimensions(column, settings.embed_dimensions)
        embedder = embedder_from_settings(
            settings, dimensions=dimensions,
            retry=EmbedRetryPolicy(max_attempts=1, throttle_budget_seconds=0),
        )  # fmt: skip
    except EmbeddingError as exc:
        raise SettingsError(exc.operator_line) from None
    try:
        proof = await prove_dimensions(embedder)
    except EmbeddingError as exc:
        if not exc.permanent:
            log.warning("embedding check inconclusive", code=exc.code, fix=exc.operator_line)
            return
        raise SettingsError(exc.operator_line) from None
    finally:
        await embedder.aclose()
    log.info(
        "embedding check passed",
        provider=proof.provider,
        model=proof.model,
        dimensions=proof.dimensions,
        column=column.type_name,
    )
