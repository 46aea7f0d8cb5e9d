"""``soulworker migrate``: apply ``sql/migrations`` in order, once each.

* Serialized: every run takes a transaction-level advisory lock first, so two deploys (or a
  deploy and a developer) never apply the same file twice. Transaction-level, because session
  locks do not survive a transaction pooler.
* Atomic: all pending files apply in one transaction with their bookkeeping rows; a failure
  leaves the database as it was.
* Safe beside running workers: ``lock_timeout`` makes a migration that would queue behind a
  long transaction fail fast with a clear message instead of blocking every query behind it.
* Idempotent: applied files are recorded in ``soulworker_migrations`` with a checksum, and the
  files themselves are written to apply cleanly to a database that already has the app's tables.
* Quiet when there is nothing to do: a run with no pending file and an unchanged
  ``max_attempts`` default only reads (the advisory lock, the migrations table, the catalog), so
  a deploy never queues a lock that workers would wait behind: reading the migrations table
  takes ACCESS SHARE, which conflicts with nothing but ACCESS EXCLUSIVE.
* Closed to API clients by default (docs/supabase-exposure.md): every function a run creates in
  its schema loses the EXECUTE that PostgreSQL gives PUBLIC and that Supabase gives ``anon`` and
  ``authenticated``, and a run that would leave a new table, view or sequence there open to them
  is rolled back with the list of what it would expose.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.rows import DictRow

from soulworker.logs import get_logger
from soulworker.sql_files import migration_files, query

log = get_logger(__name__)

# Any 64-bit number unique to this purpose; derived from the name so it reads as what it is.
MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"soulworker.migrate").digest()[:8], "big", signed=True
)
# Long enough for a busy table's short transactions to finish, short enough not to stall a deploy.
MIGRATION_LOCK_TIMEOUT = "30s"


@dataclass(frozen=True)
class MigrationStatus:
    """How a database's applied migrations compare with this version's files."""

    files: list[str]
    pending: list[str]  # files not applied yet
    changed: list[str]  # applied, but the file differs now
    unknown: list[str]  # applied by a newer version of soulworker (no such file here)


@dataclass(frozen=True)
class MigrationReport:
    applied: list[str]
    already_applied: list[str]
    changed_since_applied: list[str]


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


async def migrate(
    conn: psycopg.AsyncConnection[DictRow],
    *,
    default_max_attempts: int | None = None,
    files: list[tuple[str, str]] | None = None,
) -> MigrationReport:
    """Apply pending migrations on ``conn`` (which must not be inside a transaction).

    ``files`` are ``(name, text)`` pairs in order, ``migration_files()`` when omitted.
    """
    files = migration_files() if files is None else files
    applied: list[str] = []
    already: list[str] = []
    changed: list[str] = []
    async with conn.transaction():
        await conn.execute(query("migrations_lock"), {"key": MIGRATION_LOCK_KEY})
        await conn.execute(
            sql.SQL("set local lock_timeout = {}").format(sql.Literal(MIGRATION_LOCK_TIMEOUT))
        )
        recorded = await applied_migrations(conn)
        pending: list[tuple[str, str]] = []
        for name, text in files:
            if name not in recorded:
                pending.append((name, text))
                continue
            already.append(name)
            if recorded[name] != checksum(text):
                changed.append(name)
        if pending:
            await _apply(conn, pending)
            applied = [name for name, _ in pending]
        if default_max_attempts is not None:
            await _set_default_max_attempts(conn, int(default_max_attempts))
    for name in changed:
        log.warning(
            "migration file changed after it was applied; the change was not applied",
            migration=name,
        )
    return MigrationReport(applied, already, changed)


async def _apply(conn: psycopg.AsyncConnection[DictRow], pending: list[tuple[str, str]]) -> None:
    """Apply ``pending`` files in order inside the caller's transaction, then close what they
    created to API clients (see ``secure_new_objects``)."""
    await conn.execute(query("migrations_table"))
    await conn.execute(query("remember_existing_objects"))
    for name, text in pending:
        log.info("applying migration", migration=name)
        await conn.execute(text)  # our own file, see sql_files
        await conn.execute(query("record_migration"), {"name": name, "checksum": checksum(text)})
    await conn.execute(query("secure_new_objects"))


async def _set_default_max_attempts(conn: psycopg.AsyncConnection[DictRow], value: int) -> None:
    """Make ``value`` the column default web-app inserts get, only if it is not already:
    ALTER TABLE takes an exclusive lock on import_jobs, which a deploy must not queue for
    nothing while workers run."""
    cur = await conn.execute(query("import_jobs_max_attempts_default"))
    row = await cur.fetchone()
    if row is not None and row["default_value"] == str(value):
        return
    # DDL cannot take parameters; the value is an int validated by Settings.
    await conn.execute(
        sql.SQL("alter table import_jobs alter column max_attempts set default {}").format(
            sql.Literal(value)
        )
    )


async def applied_migrations(conn: psycopg.AsyncConnection[DictRow]) -> dict[str, str]:
    """``{file name: checksum}`` of what was applied; empty on a never-migrated database."""
    cur = await conn.execute(query("migrations_table_exists"))
    row = await cur.fetchone()
    if not row or not row["present"]:
        return {}
    cur = await conn.execute(query("migrations_applied"))
    return {r["name"]: r["checksum"] for r in await cur.fetchall()}


async def migration_status(conn: psycopg.AsyncConnection[DictRow]) -> MigrationStatus:
    files = migration_files()
    texts = dict(files)
    recorded = await applied_migrations(conn)
    return MigrationStatus(
        files=[name for name, _ in files],
        pending=[name for name, _ in files if name not in recorded],
        changed=sorted(
            name
            for name, digest in recorded.items()
            if name in texts and digest != checksum(texts[name])
        ),
        unknown=sorted(name for name in recorded if name not in texts),
    )


async def pending_migrations(conn: psycopg.AsyncConnection[DictRow]) -> list[str]:
    """Names of migration files not yet applied (all of them on a fresh database)."""
    return (await migration_status(conn)).pending
