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


def statements_checksum(text: str) -> str:
    """The checksum of a migration without its comment-only lines: what it does, not what it
    says about it."""
    lines = (line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return checksum("\n".join(lines))


@dataclass(frozen=True)
class MigrationRevision:
    """An earlier text of a migration file, as databases recorded it when they applied it.

    ``text_checksum`` is what they recorded; ``statements_checksum`` is that text's
    ``statements_checksum``, which a test holds equal to the current file's: the file may have
    changed in its comment lines only.
    """

    text_checksum: str
    statements_checksum: str


# Applied migrations whose comment lines were edited afterwards (their pointers to documents
# outside the repository became pointers into docs/). Databases migrated before the edit
# recorded the earlier text's checksum; it still means "unchanged".
EARLIER_REVISIONS: dict[str, tuple[MigrationRevision, ...]] = {
    "0001_import_jobs.sql": (
        MigrationRevision(
            "ca7ac619388045c6997cf170a8d0332a6f62b60b341a2d023b8b0c4be5bb2cc6",
            "f20d581d40414054d45321f6811799f6a97f9b06a54664ba3d160b887f95301a",
        ),
    ),
    "0002_user_profiles.sql": (
        MigrationRevision(
            "02463a086cfa3e628bc61e424fc742f60752a56c6de88cc99f80001725461327",
            "1d8b323a6ff68218fa4e80463ab7213030d0af7620ac78248a554c06d4c5dc59",
        ),
    ),
    "0003_conversation_chunks.sql": (
        MigrationRevision(
            "6b73a6f181b86dcbba83606f566f8a369a43784479540e808fadf0b644f3f990",
            "2627609b62575139f02c84603d7ae9cccfbc84b4dab65f2ccb5ed7e8879e0fd0",
        ),
    ),
    "0004_job_functions.sql": (
        MigrationRevision(
            "75cf29ed0857e6cd60370b8e1b3409a19e07a66a95a39e66895fecdc0d51b499",
            "f76514a4617d1b433bd4d5123061f480716beeef74cd1ced70288fcdb2316676",
        ),
    ),
    "0007_row_level_security.sql": (
        MigrationRevision(
            "f00caf2d0fae281d2a179c00d1df11a419b71234b8c3fef9c30187fcb0896dbf",
            "19eaf3f5fcfd94b3cc6ca0fcdb52b13dfbfa5585a5a4108c5fca1394502181a1",
        ),
    ),
    "0008_privileges_and_retention.sql": (
        MigrationRevision(
            "3b2cbb19009c935712eb109eee5237233cf25db03d4314da713d8e0514651d36",
            "eddf761e300539edc6606037493145797d3c25c12f069630e972c3122e4719a8",
        ),
    ),
}


def is_unchanged(name: str, text: str, recorded_checksum: str) -> bool:
    """Whether the applied migration ``name`` (recorded with ``recorded_checksum``) is the one
    whose file now reads ``text``."""
    if recorded_checksum == checksum(text):
        return True
    return any(
        recorded_checksum == earlier.text_checksum for earlier in EARLIER_REVISIONS.get(name, ())
    )


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
            if not is_unchanged(name, text, recorded[name]):
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
            if name in texts and not is_unchanged(name, texts[name], digest)
        ),
        unknown=sorted(name for name in recorded if name not in texts),
    )


async def pending_migrations(conn: psycopg.AsyncConnection[DictRow]) -> list[str]:
    """Names of migration files not yet applied (all of them on a fresh database)."""
    return (await migration_status(conn)).pending
