"""What Supabase's API can reach of the tables and functions soulworker writes and owns.

On Supabase, every request through the API runs as ``anon`` (the public key) or
``authenticated`` (a signed-in user); the rules soulworker's migrations set for them are in
docs/supabase-exposure.md. Anyone with the SQL editor can undo them later (a dashboard toggle
that disables row level security, a "grant all ... to anon" copied from a tutorial), so
:func:`inspect_exposure` reads what holds now and :func:`fix_statements` writes the SQL that
puts each finding right. ``soulworker doctor`` reports both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg.rows import DictRow

from soulworker.sql_files import query

USER_DATA_TABLES = ("import_jobs", "user_profiles", "conversation_chunks", "import_job_artifacts")
"""The tables that hold users' data: jobs (paths, errors), profiles (the soulprint), chunks (the
conversation text) and the jobs' working data."""

OWNER_READ_TABLES = frozenset({"user_profiles", "conversation_chunks"})
"""Where soulworker's policy lets a signed-in user read their own rows, if the app has none."""

SERVER_ONLY_TABLES = frozenset({"import_job_artifacts"})
"""Where authenticated may do nothing at all: only the worker and the service role."""

SOULWORKER_FUNCTIONS = (
    "import_jobs_notify_runnable()",
    "import_jobs_touch_updated_at()",
    "import_job_profile_started(uuid, uuid, text)",
    "import_job_profile_progress(uuid, uuid, integer, text)",
    "import_job_profile_succeeded(uuid, uuid)",
    "import_job_profile_failed(uuid, uuid, text)",
    "retry_import_job(uuid)",
    "cancel_import_job(uuid)",
)
"""Every function soulworker's migrations define; none is for anon or authenticated. A test
compares this list with the functions a migrated database really has."""

RLS_BYPASSING = ("TRUNCATE", "REFERENCES", "TRIGGER")
"""Table privileges that row level security does not restrict (TRUNCATE empties the table
whatever the policies say; TRIGGER lets its holder attach code to every write)."""

ANON_READS = frozenset({"SELECT"})


@dataclass(frozen=True)
class TableExposure:
    """What anon and authenticated may do with one table, and its row level security."""

    name: str
    qualified: str
    row_security: bool
    has_user_id: bool
    policies: int
    open_policies: tuple[str, ...]
    anon_privileges: tuple[str, ...]
    authenticated_privileges: tuple[str, ...]

    def problems(self) -> list[str]:
        """One short phrase per thing that is open, empty when the table is closed."""
        found = []
        if not self.row_security:
            found.append(f"row level security is off on {self.name}")
        if ANON_READS & set(self.anon_privileges):
            found.append(f"anon can read {self.name}")
        writes = sorted(set(self.anon_privileges) - ANON_READS)
        if writes:
            found.append(f"anon holds {', '.join(writes)} on {self.name}")
        for policy in self.open_policies:
            found.append(f"policy {policy!r} lets every user read every row of {self.name}")
        if self.name in SERVER_ONLY_TABLES and self.authenticated_privileges:
            found.append(
                f"authenticated holds {', '.join(self.authenticated_privileges)} on {self.name}"
            )
        else:
            bypassing = [p for p in RLS_BYPASSING if p in self.authenticated_privileges]
            if bypassing:
                found.append(
                    f"authenticated holds {', '.join(bypassing)} on {self.name}, which row level "
                    "security does not restrict"
                )
        return found


@dataclass(frozen=True)
class FunctionExposure:
    """A soulworker function that anon or authenticated may execute."""

    signature: str
    qualified: str
    callers: tuple[str, ...]


@dataclass(frozen=True)
class ExposureReport:
    """``supabase`` is false where there is no auth schema: no API, nothing checked."""

    supabase: bool
    roles_present: bool
    tables: tuple[TableExposure, ...] = ()
    functions: tuple[FunctionExposure, ...] = ()

    def problems(self) -> list[str]:
        found = [problem for table in self.tables for problem in table.problems()]
        found += [
            f"{' and '.join(f.callers)} can execute {f.signature.split('(')[0]}"
            for f in self.functions
        ]
        return found


async def inspect_exposure(conn: psycopg.AsyncConnection[DictRow]) -> ExposureReport:
    cur = await conn.execute(query("supabase_api_roles"))
    row = await cur.fetchone()
    assert row is not None
    supabase, roles_present = bool(row["supabase"]), bool(row["anon"] and row["authenticated"])
    if not supabase or not roles_present:
        return ExposureReport(supabase=supabase, roles_present=roles_present)
    cur = await conn.execute(query("api_table_exposure"), {"tables": list(USER_DATA_TABLES)})
    tables = tuple(
        TableExposure(
            name=r["name"],
            qualified=r["qualified"],
            row_security=r["row_security"],
            has_user_id=r["has_user_id"],
            policies=r["policies"],
            open_policies=tuple(r["open_policies"]),
            anon_privileges=tuple(r["anon_privileges"]),
            authenticated_privileges=tuple(r["authenticated_privileges"]),
        )
        for r in await cur.fetchall()
    )
    cur = await conn.execute(
        query("api_function_exposure"), {"functions": list(SOULWORKER_FUNCTIONS)}
    )
    functions = tuple(
        FunctionExposure(r["signature"], r["qualified"], tuple(r["callers"]))
        for r in await cur.fetchall()
    )
    return ExposureReport(True, True, tables, functions)


def fix_statements(report: ExposureReport) -> list[str]:
    """SQL for the SQL editor (run as the tables' owner, ``postgres`` on Supabase) that closes
    what ``report`` found, the same way soulworker's migrations close a fresh database."""
    statements: list[str] = []
    for table in report.tables:
        statements += _table_fixes(table)
    for function in report.functions:
        statements.append(
            f"revoke execute on function {function.qualified} from public, anon, authenticated;"
        )
    return statements


def _table_fixes(table: TableExposure) -> Sequence[str]:
    fixes = []
    if not table.row_security:
        fixes.append(f"alter table {table.qualified} enable row level security;")
        if table.name in OWNER_READ_TABLES and table.policies == 0:
            # Without a policy row level security hides every row from users: give them their
            # own rows back, read-only, as a fresh soulworker database has.
            fixes.append(
                f"revoke insert, update, delete on table {table.qualified} from authenticated;"
            )
            fixes.append(
                f"create policy {table.name}_select_own on {table.qualified} for select "
                "to authenticated using (user_id = (select auth.uid()));"
            )
    if table.anon_privileges:
        fixes.append(f"revoke all on table {table.qualified} from anon;")
    for policy in table.open_policies:
        policy_name = '"' + policy.replace('"', '""') + '"'
        if table.has_user_id:
            fixes.append(
                f"alter policy {policy_name} on {table.qualified} "
                "using (user_id = (select auth.uid()));"
            )
        else:
            fixes.append(f"drop policy {policy_name} on {table.qualified};")
    if table.name in SERVER_ONLY_TABLES and table.authenticated_privileges:
        fixes.append(f"revoke all on table {table.qualified} from authenticated;")
    else:
        bypassing = [p.lower() for p in RLS_BYPASSING if p in table.authenticated_privileges]
        if bypassing:
            fixes.append(
                f"revoke {', '.join(bypassing)} on table {table.qualified} from authenticated;"
            )
    return fixes
