"""The exposure check: what Supabase's API can reach of soulworker's tables and functions
(``api_exposure`` reads it), with the SQL that closes each gap (docs/supabase-exposure.md)."""

from __future__ import annotations

from soulworker.doctor.api_exposure import USER_DATA_TABLES, fix_statements, inspect_exposure
from soulworker.doctor.core import Check, DoctorContext, Outcome, ok, warn
from soulworker.doctor.database import SLOW_DATABASE_HINT, database_settings, open_connection

EXPOSURE_DOC = "docs/supabase-exposure.md"
"""Where the exposure check's rules and fixes are explained."""


async def check_exposure(context: DoctorContext) -> Outcome:
    """On Supabase: the tables with users' data have row level security on, give ``anon``
    nothing and ``authenticated`` nothing that row level security cannot restrict; no
    soulworker function is callable by either. Each finding comes with the SQL that fixes it."""
    settings = database_settings(context)
    if isinstance(settings, Outcome):
        return settings
    conn = await open_connection(settings)
    try:
        report = await inspect_exposure(conn)
    finally:
        await conn.close()
    if not report.supabase:
        return ok(
            "no Supabase auth schema: no API roles can reach this database's tables",
            supabase=False,
        )
    if not report.roles_present:
        return warn(
            "the auth schema exists but the anon or authenticated role does not",
            "nothing to fix for soulworker; this is not how a Supabase project looks",
            supabase=True,
        )
    problems = report.problems()
    fixes = fix_statements(report)
    details = {
        "supabase": True,
        "tables": {
            table.name: {
                "row_security": table.row_security,
                "anon": list(table.anon_privileges),
                "authenticated": list(table.authenticated_privileges),
                "open_policies": list(table.open_policies),
            }
            for table in report.tables
        },
        "callable_functions": [f.signature for f in report.functions],
        "problems": problems,
        "fix_sql": fixes,
    }
    if problems:
        return warn(
            "; ".join(problems),
            f"run in the Supabase SQL editor: {' '.join(fixes)} (why: {EXPOSURE_DOC})",
            **details,
        )
    checked = ", ".join(table.name for table in report.tables) or "none of " + ", ".join(
        USER_DATA_TABLES
    )
    return ok(
        f"row level security on and nothing for anon: {checked}; soulworker's functions are not "
        "callable through the API",
        **details,
    )


EXPOSURE = Check("exposure", check_exposure, needs=("database",), timeout_hint=SLOW_DATABASE_HINT)
