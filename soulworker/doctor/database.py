"""The database checks: the connection (``database``), the pooler mode (``pooler``), wake-ups
(``listen``) and the schema (``migrations``). Why a connection failed is the database layer's own
description (``soulworker.db_failures``), the same one every command gives."""

from __future__ import annotations

import secrets
import time

import psycopg
from psycopg import sql
from psycopg.rows import DictRow

from soulworker import db
from soulworker.db_failures import DatabaseTarget, describe_connection_failure
from soulworker.doctor.core import Check, DoctorContext, Outcome, fail, merge, ok, skip, warn
from soulworker.jobs.listener import CHANNEL
from soulworker.migrate import migration_status
from soulworker.settings import Settings
from soulworker.sql_files import query

APPLICATION_NAME = "soulworker doctor"
"""How doctor's connections show up in ``pg_stat_activity``."""

DB_CONNECT_TIMEOUT_SECONDS = 5
"""A database that has not accepted within 5 s will not do better for the daemon (libpq's
minimum is 2 s)."""

LISTEN_WAIT_SECONDS = 3.0
"""A NOTIFY normally arrives within milliseconds; 3 s allows for a slow link."""

MIN_POSTGRES_VERSION_NUM = 150000
"""The schema targets PostgreSQL 15+ (docs/contract.md) (``server_version_num`` form)."""

SECURE_SSLMODES = frozenset({"require", "verify-ca", "verify-full"})
"""sslmodes that never fall back to plain text (libpq's default ``prefer`` does)."""

PENDING_SHOWN = 3
"""Pending migration names listed in the finding; the JSON details list them all."""

SLOW_DATABASE_HINT = "the database is very slow to answer; check its load"


async def open_connection(settings: Settings) -> psycopg.AsyncConnection[DictRow]:
    """A dedicated autocommit connection with doctor's short connect timeout."""
    kwargs = db.connect_kwargs(settings, APPLICATION_NAME)
    kwargs["connect_timeout"] = DB_CONNECT_TIMEOUT_SECONDS
    return await psycopg.AsyncConnection.connect(
        settings.require_database_url(), autocommit=True, **kwargs
    )


def database_settings(context: DoctorContext) -> Settings | Outcome:
    """The settings when a database can be checked, else the skip that says why not."""
    if context.settings is None:
        return skip("skipped: the settings could not be read (see configuration)")
    if not context.settings.database_url:
        return skip("skipped: DATABASE_URL is not set (see configuration)")
    return context.settings


# --- database ------------------------------------------------------------------------------------


async def check_database(context: DoctorContext) -> Outcome:
    """Connect with a short timeout; PostgreSQL 15+; TLS when the host is remote."""
    settings = database_settings(context)
    if isinstance(settings, Outcome):
        return settings
    target = DatabaseTarget.of(settings.require_database_url(), context.environ)
    try:
        conn = await open_connection(settings)
    except psycopg.OperationalError as exc:
        failure = describe_connection_failure(
            exc, target, connect_timeout=DB_CONNECT_TIMEOUT_SECONDS
        )
        return fail(
            f"cannot connect to {target.describe()}: {failure.reason}",
            failure.hint,
            target=target.describe(),
        )
    try:
        cur = await conn.execute(query("server_version"))
        row = await cur.fetchone()
        ssl_in_use = bool(conn.pgconn.ssl_in_use)
    finally:
        await conn.close()
    assert row is not None
    version_num, version = int(row["num"]), str(row["version"]).split(" ")[0]
    details = {
        "target": target.describe(),
        "server_version": version,
        "server_version_num": version_num,
        "ssl": ssl_in_use,
        "sslmode": target.sslmode,
    }
    where = f"PostgreSQL {version} at {target.describe()}"
    if version_num < MIN_POSTGRES_VERSION_NUM:
        return fail(
            f"{where} is too old",
            "soulworker needs PostgreSQL 15 or newer; upgrade the database",
            **details,
        )
    if not target.is_local and (target.sslmode not in SECURE_SSLMODES or not ssl_in_use):
        encrypted = "encrypted" if ssl_in_use else "NOT encrypted"
        return warn(
            f"{where}; sslmode={target.sslmode} may fall back to plain text (this connection "
            f"is {encrypted})",
            "append ?sslmode=require to DATABASE_URL (or verify-full with Supabase's CA "
            "certificate)",
            **details,
        )
    tls = ", TLS" if ssl_in_use else ""
    return ok(f"{where}{tls}", **details)


# --- pooler mode ---------------------------------------------------------------------------------


async def check_pooler(context: DoctorContext) -> Outcome:
    """Whether DATABASE_URL is a transaction-mode pooler, and what that means for the daemon."""
    settings = database_settings(context)
    if isinstance(settings, Outcome):
        return settings
    mode = db.database_mode(settings)
    target = DatabaseTarget.of(settings.require_database_url(), context.environ)
    details = {
        "transaction_pooler": mode.transaction_pooler,
        "listen": mode.listen,
        "mode": mode.describe(),
    }
    if mode.transaction_pooler:
        why = (
            "SOULWORKER_TRANSACTION_POOLER=true"
            if settings.transaction_pooler == "true"
            else f"port {db.SUPABASE_TRANSACTION_POOLER_PORT}"
        )
        finding = f"transaction-mode pooler ({why}): poll only, prepared statements off"
        hint = (
            "jobs are still found by polling every "
            f"{settings.poll_seconds:g} s; for instant pickup use Supabase's session pooler "
            "(port 5432), where LISTEN works"
        )
        if settings.listen == "on":
            finding += "; SOULWORKER_LISTEN=on cannot work through it"
            hint = "set SOULWORKER_LISTEN=auto; " + hint
        return warn(finding, hint, **details)
    if not mode.listen:
        return ok(
            f"session connection to {target.host}:{target.port}; poll only (SOULWORKER_LISTEN=off)",
            **details,
        )
    return ok(
        f"session connection to {target.host}:{target.port}: LISTEN + poll, prepared statements on",
        **details,
    )


# --- LISTEN/NOTIFY -------------------------------------------------------------------------------


async def check_listen(context: DoctorContext) -> Outcome:
    """LISTEN on a private channel on one connection, NOTIFY from another, wait for it."""
    settings = database_settings(context)
    if isinstance(settings, Outcome):
        return settings
    mode = db.database_mode(settings)
    if mode.transaction_pooler:
        return warn(
            "skipped: LISTEN does not work through a transaction pooler; the daemon polls "
            f"every {settings.poll_seconds:g} s instead",
            "use Supabase's session pooler (port 5432) so a new job wakes a worker at once",
            listen=False,
        )
    if not mode.listen:
        return skip(
            f"skipped: SOULWORKER_LISTEN=off (the daemon polls every {settings.poll_seconds:g} s)",
            listen=False,
        )
    # A channel of its own: a NOTIFY on the real channel would wake every worker for nothing.
    channel = f"soulworker_doctor_{secrets.token_hex(6)}"
    payload = secrets.token_hex(8)
    listener = await open_connection(settings)
    try:
        await listener.execute(sql.SQL("listen {}").format(sql.Identifier(channel)))
        sender = await open_connection(settings)
        try:
            started = time.monotonic()
            await sender.execute(query("notify"), {"channel": channel, "payload": payload})
        finally:
            await sender.close()
        async for notify in listener.notifies(timeout=LISTEN_WAIT_SECONDS):
            if notify.channel == channel and notify.payload == payload:
                latency_ms = round((time.monotonic() - started) * 1000, 1)
                return ok(
                    f"a NOTIFY arrived in {latency_ms:g} ms; workers listen on channel {CHANNEL!r}",
                    latency_ms=latency_ms,
                    channel=CHANNEL,
                )
    finally:
        await listener.close()
    return fail(
        f"LISTEN was accepted but no NOTIFY arrived within {LISTEN_WAIT_SECONDS:g} s",
        "this connection does not deliver notifications (a transaction pooler on another "
        "port?): set SOULWORKER_TRANSACTION_POOLER=true or SOULWORKER_LISTEN=off to poll only, "
        "or use Supabase's session pooler (port 5432)",
    )


# --- migrations ----------------------------------------------------------------------------------


async def check_migrations(context: DoctorContext) -> Outcome:
    """Every migration file applied; none changed after it was applied; none unknown."""
    settings = database_settings(context)
    if isinstance(settings, Outcome):
        return settings
    conn = await open_connection(settings)
    try:
        status = await migration_status(conn)
    finally:
        await conn.close()
    files, pending, changed, unknown = status.files, status.pending, status.changed, status.unknown
    details = {
        "files": len(files),
        "applied": len(files) - len(pending),
        "pending": pending,
        "changed": changed,
        "unknown": unknown,
    }
    if pending:
        what = (
            "the schema is not installed"
            if len(pending) == len(files)
            else f"{len(pending)} of {len(files)} migrations not applied"
        )
        shown = ", ".join(pending[:PENDING_SHOWN])
        if len(pending) > PENDING_SHOWN:
            shown += f" and {len(pending) - PENDING_SHOWN} more"
        return fail(
            f"{what} (pending: {shown})",
            "run `soulworker migrate` (on Render it is the pre-deploy command)",
            **details,
        )
    problems: list[Outcome] = []
    if unknown:
        problems.append(
            warn(
                f"the database has migrations this version does not know: {', '.join(unknown)}",
                "a newer soulworker migrated this database; deploy that version instead of "
                "this one",
            )
        )
    if changed:
        problems.append(
            warn(
                f"changed after they were applied: {', '.join(changed)}",
                "applied migrations are never re-run: put schema changes in a new file",
            )
        )
    if problems:
        return merge(problems, details)
    latest = files[-1].removesuffix(".sql") if files else "none"
    return ok(f"all {len(files)} migrations applied (latest {latest})", **details)


DATABASE = Check(
    "database",
    check_database,
    timeout_hint="check the host and port in DATABASE_URL and any firewall or IP allow-list",
)
POOLER = Check("pooler", check_pooler)
LISTEN = Check(
    "listen",
    check_listen,
    needs=("database",),
    timeout_hint="the database accepted LISTEN but did not deliver; see the pooler check",
)
MIGRATIONS = Check(
    "migrations", check_migrations, needs=("database",), timeout_hint=SLOW_DATABASE_HINT
)
