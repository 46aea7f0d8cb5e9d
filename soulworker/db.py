"""Connections to Postgres: pooler detection, session set-up, the pool and dedicated connections.

Supabase offers three ways in (docs/platform.md). The direct host and the session pooler (port
5432) behave like plain Postgres. The transaction pooler (port 6543) hands each transaction to
any backend, so prepared statements, session ``SET`` and ``LISTEN`` do not work there: with such
a URL soulworker turns prepared statements off and polls instead of listening. Its session
timeouts (``SOULWORKER_STATEMENT_TIMEOUT_SECONDS``) cannot be set there either; the database
role's own timeout applies (Supabase caps the ``postgres`` role's statements at two minutes),
and the job's lease and time limit bound the rest.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from soulworker.logs import get_logger
from soulworker.settings import Settings

log = get_logger(__name__)

SUPABASE_TRANSACTION_POOLER_PORT = 6543
# TCP keepalives find a dead peer in about a minute instead of the kernel's two hours; without
# them a connection lost to a network partition hangs a job until the lease runs out.
KEEPALIVE_PARAMS: Mapping[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
CONNECT_TIMEOUT_SECONDS = 10
# A transaction left open by a bug must not hold locks forever.
IDLE_IN_TRANSACTION_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class DatabaseMode:
    """What the server at DATABASE_URL supports, decided once at start."""

    transaction_pooler: bool
    listen: bool

    def describe(self) -> str:
        pooler = "transaction pooler" if self.transaction_pooler else "session connection"
        wakeup = "LISTEN + poll" if self.listen else "poll only"
        return f"{pooler}, {wakeup}"


def is_transaction_pooler(database_url: str, override: str = "auto") -> bool:
    """Supabase's transaction pooler listens on 6543; the setting can say otherwise."""
    if override != "auto":
        return override == "true"
    params = conninfo_to_dict(database_url)
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    # A multi-host URL lists ports comma-separated; any 6543 means a pooler may answer.
    return str(SUPABASE_TRANSACTION_POOLER_PORT) in port.split(",")


def database_mode(settings: Settings) -> DatabaseMode:
    url = settings.require_database_url()
    pooled = is_transaction_pooler(url, settings.transaction_pooler)
    listen = settings.listen == "on" or (settings.listen == "auto" and not pooled)
    return DatabaseMode(transaction_pooler=pooled, listen=listen)


# How a worker is named in job rows (lease_owner, the error history): users may read their own
# import_jobs rows, so the name says nothing about the machine. The worker's first log line
# pairs it with the host name and pid for operators.
WORKER_ID_PREFIX = "worker-"


def worker_identity() -> str:
    """An opaque, unique name for this process: ``worker-`` and 12 random hex digits."""
    return f"{WORKER_ID_PREFIX}{os.urandom(6).hex()}"


def host_of_this_process() -> dict[str, Any]:
    """Where this process runs, for the operators' log line that names its worker id."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def connect_kwargs(settings: Settings, application_name: str) -> dict[str, Any]:
    """Keyword arguments for every connection soulworker opens."""
    mode = database_mode(settings)
    params = conninfo_to_dict(settings.require_database_url())
    kwargs: dict[str, Any] = {
        "application_name": application_name,
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "row_factory": dict_row,
    }
    for key, value in KEEPALIVE_PARAMS.items():
        kwargs.setdefault(key, params.get(key, value))
    if mode.transaction_pooler:
        # psycopg would prepare statements after 5 runs; the pooler cannot keep them.
        kwargs["prepare_threshold"] = None
    return kwargs


def session_setup_sql(settings: Settings) -> str:
    """Timeouts for a session (not used behind a transaction pooler, where SET does not stick)."""
    statement_ms = int(settings.statement_timeout_seconds * 1000)
    idle_ms = IDLE_IN_TRANSACTION_TIMEOUT_SECONDS * 1000
    return (
        f"set statement_timeout = {statement_ms}; "
        f"set idle_in_transaction_session_timeout = {idle_ms}"
    )


async def connect(
    settings: Settings, application_name: str, *, autocommit: bool = True
) -> psycopg.AsyncConnection[DictRow]:
    """One dedicated connection (the LISTEN connection, migrations, CLI commands)."""
    conn = await psycopg.AsyncConnection.connect(
        settings.require_database_url(),
        autocommit=autocommit,
        **connect_kwargs(settings, application_name),
    )
    if not database_mode(settings).transaction_pooler:
        async with conn.transaction() if not autocommit else _nullcontext():
            await conn.execute(session_setup_sql(settings))
    return conn


class _nullcontext:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def create_pool(
    settings: Settings, application_name: str, *, max_size: int | None = None
) -> AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]:
    """The worker's pool, not yet opened (``await pool.open()``).

    Connections are checked before use, because after a database outage the pool may hold
    connections whose server side is gone (procrastinate #1180).
    """
    mode = database_mode(settings)
    size = max_size if max_size is not None else pool_size_for(settings.concurrency)

    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.set_autocommit(True)
        if not mode.transaction_pooler:
            await conn.execute(session_setup_sql(settings))

    kwargs = connect_kwargs(settings, application_name)
    return AsyncConnectionPool(
        settings.require_database_url(),
        min_size=1,
        max_size=size,
        kwargs=kwargs,
        configure=configure,
        check=AsyncConnectionPool.check_connection,
        open=False,
        name=application_name,
        reconnect_timeout=float("inf"),
        timeout=30,
    )


def pool_size_for(concurrency: int) -> int:
    """Each job needs a connection for its writes and one for its heartbeat; plus the claimer.

    A job's parse stage holds one connection for its chunk transaction while its progress and
    heartbeat writes use others, so three per job keeps them from waiting on each other.
    """
    return concurrency * 3 + 1
