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
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.rows import DictRow

from soulworker.logs import get_logger
from soulworker.sql_files import migration_files

log = get_logger(__name__)

# Any 64-bit number unique to this purpose; derived from the name so it reads as what it is.
MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"soulworker.migrate").digest()[:8], "big", signed=True
)
# Long enough for a busy table's short transactions to finish, short enough not to stall a deploy.
MIGRATION_LOCK_TIMEOUT = "30s"

_BOOKKEEPING = """
create table if not exists soulworker_migrations (
    name text primary key,
    checksum text not null,
    applied_at timestamptz not null default now()
)
"""


@dataclass(frozen=True)
class MigrationReport:
    applied: list[str]
    already_applied: list[str]
    changed_since_applied: list[str]


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


async def migrate(
    conn: psycopg.AsyncConnection[DictRow], *, default_max_attempts: int | None = None
) -> MigrationReport:
    """Apply pending migrations on ``conn`` (which must not be inside a transaction)."""
    files = migration_files()
    applied: list[str] = []
    already: list[str] = []
    changed: list[str] = []
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        await conn.execute(
            sql.SQL("set local lock_timeout = {}").format(sql.Literal(MIGRATION_LOCK_TIMEOUT))
        )
        await conn.execute(_BOOKKEEPING)
        cur = await conn.execute("select name, checksum from soulworker_migrations")
        recorded = {row["name"]: row["checksum"] for row in await cur.fetchall()}
        for name, text in files:
            if name in recorded:
                already.append(name)
                if recorded[name] != checksum(text):
                    changed.append(name)
                continue
            log.info("applying migration", migration=name)
            await conn.execute(text)  # our own file, see sql_files
            await conn.execute(
                "insert into soulworker_migrations (name, checksum) values (%s, %s)",
                (name, checksum(text)),
            )
            applied.append(name)
        if default_max_attempts is not None:
            # DDL cannot take parameters; the value is an int validated by Settings.
            await conn.execute(
                sql.SQL("alter table import_jobs alter column max_attempts set default {}").format(
                    sql.Literal(int(default_max_attempts))
                )
            )
    for name in changed:
        log.warning(
            "migration file changed after it was applied; the change was not applied",
            migration=name,
        )
    return MigrationReport(applied, already, changed)


async def pending_migrations(conn: psycopg.AsyncConnection[DictRow]) -> list[str]:
    """Names of migration files not yet applied (all of them on a fresh database)."""
    cur = await conn.execute("select to_regclass('soulworker_migrations') is not null as present")
    row = await cur.fetchone()
    if not row or not row["present"]:
        return [name for name, _ in migration_files()]
    cur = await conn.execute("select name from soulworker_migrations")
    done = {r["name"] for r in await cur.fetchall()}
    return [name for name, _ in migration_files() if name not in done]
