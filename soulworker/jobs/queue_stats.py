"""Queue health without asking: one ``queue_stats`` log event per interval from one worker.

A log drain can alert on it (docs/queue.md, "Queue health"; README, "Alerting on a stuck
queue"). The numbers come from one statement (``sql/queries/jobs/queue_stats.sql``).

Which worker logs: the one holding a session advisory lock (``queue_stats_leader.sql``) on a
dedicated connection. It keeps the lock, and the connection, for as long as it lives; when it dies
or its connection breaks, the server drops the lock and the next worker to try takes it over at
its next interval. The others open a connection, try, close it and stay quiet, so only the
reporting worker holds one more connection than before. Behind a transaction pooler a session
lock would stay on whichever backend ran it, so there every worker reports, with its worker id.

A failing stats query is logged and retried at the next interval; it never stops the worker.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg.rows import DictRow

from soulworker import db
from soulworker.jobs.lease import DATABASE_ERRORS
from soulworker.logs import get_logger
from soulworker.settings import Settings
from soulworker.sql_files import query

log = get_logger(__name__)

EVENT = "queue_stats"
# The advisory lock's key: any constant bigint no other part of soulworker uses (the migrations
# lock has its own). It reads "soulqstat" in ASCII, more or less.
LEADER_LOCK_KEY = 0x736F756C71737461

Connection = psycopg.AsyncConnection[DictRow]


async def read_queue_stats(conn: Connection) -> dict[str, Any]:
    """The fields of one ``queue_stats`` event, read on ``conn``."""
    cur = await conn.execute(query("queue_stats"))
    row = await cur.fetchone()
    assert row is not None, "an aggregate always returns one row"
    return {
        name: round(value, 1) if isinstance(value, float) else value for name, value in row.items()
    }


class QueueStatsReporter:
    """Logs ``queue_stats`` every ``settings.queue_stats_seconds`` while it is the reporter."""

    def __init__(self, settings: Settings, worker_id: str, *, elect: bool) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.elect = elect
        self.application_name = f"soulworker stats {worker_id}"[:63]
        self.reports = 0
        self._conn: Connection | None = None

    async def run(self) -> None:
        """Report every interval until cancelled."""
        try:
            while True:
                await self.report_once()
                await asyncio.sleep(self.settings.queue_stats_seconds)
        finally:
            await self._drop_connection()

    async def report_once(self) -> bool:
        """Log one ``queue_stats`` event if this worker is the reporter; say whether it did."""
        # A kept connection may have been closed while idle (a pooler's idle timeout, a server
        # restart): that is worth one fresh try before saying the stats are unavailable.
        tries = 2 if self._conn is not None else 1
        for tried in range(1, tries + 1):
            try:
                conn = await self._reporting_connection()
                if conn is None:
                    return False
                stats = await read_queue_stats(conn)
                break
            except (*DATABASE_ERRORS, OSError, TimeoutError) as exc:
                await self._drop_connection()
                if tried == tries:
                    log.warning("queue stats unavailable", error=type(exc).__name__)
                    return False
        self.reports += 1
        log.info(EVENT, worker=self.worker_id, **stats)
        return True

    async def _reporting_connection(self) -> Connection | None:
        """The connection holding the reporter's lock, or None when another worker holds it."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = await db.connect(self.settings, self.application_name)
        if self.elect:
            try:
                cur = await conn.execute(query("queue_stats_leader"), {"key": LEADER_LOCK_KEY})
                row = await cur.fetchone()
            except BaseException:
                await conn.close()
                raise
            if row is None or not row["leader"]:
                await conn.close()
                return None
            log.info("this worker reports queue_stats", worker=self.worker_id)
        self._conn = conn
        return conn

    async def aclose(self) -> None:
        """Give up the reporter's connection, and with it the lock (``run`` does it on exit)."""
        await self._drop_connection()

    async def _drop_connection(self) -> None:
        """Close the connection; the server releases the lock with it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
