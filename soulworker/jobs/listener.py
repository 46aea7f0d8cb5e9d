"""The self-healing LISTEN connection that wakes the worker when a job is inserted.

NOTIFY is only a hint: notifications sent while the connection is down are lost, so the poll
remains the source of truth. What this adds is speed (a pickup in milliseconds rather than a poll
interval) and resilience: when the connection dies (server restart, ``pg_terminate_backend``, a
network partition found by TCP keepalives or the health check), it reconnects with backoff,
LISTENs again, and wakes the worker at once so anything inserted meanwhile is claimed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import psycopg

from soulworker import db
from soulworker.logs import get_logger
from soulworker.settings import Settings
from soulworker.sql_files import query

log = get_logger(__name__)

CHANNEL = "import_jobs"  # as in sql/queries/jobs/listen_for_jobs.sql and the trigger
# How long to wait for notifications before proving the connection is alive with a query; a
# half-open connection would otherwise wait forever.
HEALTH_CHECK_SECONDS = 15.0
HEALTH_CHECK_TIMEOUT_SECONDS = 10.0
RECONNECT_MIN_SECONDS = 0.2
RECONNECT_MAX_SECONDS = 30.0


class Listener:
    def __init__(self, settings: Settings, worker_id: str, wake: Callable[[], None]) -> None:
        self.settings = settings
        self.application_name = f"soulworker-listener {worker_id}"[:63]
        self.wake = wake
        self.connected = asyncio.Event()
        self.connections_made = 0

    async def run(self) -> None:
        """Listen forever (until cancelled), reconnecting whenever the connection is lost."""
        delay = RECONNECT_MIN_SECONDS
        while True:
            made_before = self.connections_made
            try:
                await self._listen_once()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                log.warning("LISTEN connection lost; reconnecting", error=type(exc).__name__)
            if self.connections_made > made_before:
                # It worked for a while: the next outage starts from a short delay again.
                delay = RECONNECT_MIN_SECONDS
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    async def _listen_once(self) -> None:
        conn = await db.connect(self.settings, self.application_name)
        try:
            await conn.execute(query("listen_for_jobs"))
            self.connections_made += 1
            self.connected.set()
            log.info("listening for new jobs", channel=CHANNEL, connection=self.connections_made)
            # Anything inserted while we were not listening is only found by a poll.
            self.wake()
            while True:
                async for _ in conn.notifies(timeout=HEALTH_CHECK_SECONDS):
                    self.wake()
                # asyncio.timeout, not wait_for, which can swallow a cancel on Python 3.11.
                async with asyncio.timeout(HEALTH_CHECK_TIMEOUT_SECONDS):
                    await conn.execute(query("connection_alive"))
        finally:
            self.connected.clear()
            await conn.close()
