"""What Supabase's API can reach of soulworker's schema (docs/supabase-exposure.md).

Each scenario is a database prepared like a Supabase project (tests/supabase.py: the API roles,
the auth schema, Supabase's default privileges for the owner, all before migrate), migrated by
its owner, the role the worker runs as, which is not a superuser. Two users, A and B, each insert
an import job the way the web app does (as ``authenticated`` with their JWT claims), and a real
worker process imports both exports through the fake Storage. Then every operation in the
matrix is tried for real, one at a time, in a transaction that is rolled back, as:

* ``anon``: the public key, nobody signed in;
* ``user A``: ``authenticated`` with A's JWT claims;
* ``service_role``: the trusted server key (bypasses row level security);
* ``worker``: the owner role that migrated the database and ran the import.

Outcomes: ``denied`` (a permission or row level security error), ``0 rows`` (allowed, but no
row of that user is visible or changed), ``rows`` / ``changed`` / ``inserted`` / ``truncated``
(it worked), ``allowed`` (a function ran, or failed for a reason other than privileges).

The scenarios: a fresh project migrated in one run; a fresh project migrated as production was
(0001-0008 by the version before these rules, the rest by this one); and a project that already
had the app's tables (with the app's own row level security and policies), migrated the same way.
A fourth checks every function and table soulworker creates against the matrix, so that a new
one cannot be forgotten.

``pytest tests/integration/test_exposure.py -s -k matrix`` prints the matrices.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import DictRow, dict_row

from soulworker.doctor.api_exposure import SOULWORKER_FUNCTIONS, inspect_exposure
from soulworker.migrate import checksum, migrate
from soulworker.sql_files import migration_files, query
from soulworker.testing.export_generator import ExportForm, GeneratorConfig, write_export
from tests.acceptance.pipeline_harness import ImportHarness
from tests.supabase import SupabaseDatabase, supabase_database

pytestmark = [pytest.mark.db, pytest.mark.usefixtures("supabase_api_roles")]

# The files applied in production before these rules existed (applied there, never edited).
BEFORE_EXPOSURE_RULES = "0008_privileges_and_retention.sql"

ROLES = ("anon", "user A", "service_role", "worker")

DENIED, ROWS, NO_ROWS, INSERTED, CHANGED, TRUNCATED, ALLOWED = (
    "denied",
    "rows",
    "0 rows",
    "inserted",
    "changed",
    "truncated",
    "allowed",
)

# --- what each operation runs ------------------------------------------------------------------
# %(a)s, %(b)s: the users; %(job_a)s, %(job_b)s: their import jobs. "A" rows are the acting
# user's own; "B" rows another user's. Each (object, operation) maps to (kind, statement).

_ROW_OPS: dict[str, dict[str, LiteralString]] = {
    "import_jobs": {
        "read A": "select count(*) from import_jobs where user_id = %(a)s",
        "read B": "select count(*) from import_jobs where user_id = %(b)s",
        "insert A": "insert into import_jobs (user_id, storage_path) "
        "values (%(a)s, 'imports/' || %(a)s || '/again.zip')",
        "update A": "update import_jobs set priority = priority where user_id = %(a)s",
        "update B": "update import_jobs set priority = priority where user_id = %(b)s",
        "delete A": "delete from import_jobs where user_id = %(a)s",
        "delete B": "delete from import_jobs where user_id = %(b)s",
        "truncate": "truncate import_jobs cascade",
    },
    "user_profiles": {
        "read A": "select count(*) from user_profiles where user_id = %(a)s",
        "read B": "select count(*) from user_profiles where user_id = %(b)s",
        "insert A": "insert into user_profiles (user_id) values (%(a)s)",
        "update A": "update user_profiles set soul_md = soul_md where user_id = %(a)s",
        "update B": "update user_profiles set soul_md = soul_md where user_id = %(b)s",
        "delete A": "delete from user_profiles where user_id = %(a)s",
        "delete B": "delete from user_profiles where user_id = %(b)s",
        "truncate": "truncate user_profiles",
    },
    "conversation_chunks": {
        "read A": "select count(*) from conversation_chunks where user_id = %(a)s",
        "read B": "select count(*) from conversation_chunks where user_id = %(b)s",
        "insert A": "insert into conversation_chunks (user_id, conversation_id, content, "
        "created_at) values (%(a)s, 'probe', 'probe', now())",
        "update A": "update conversation_chunks set title = title where user_id = %(a)s",
        "update B": "update conversation_chunks set title = title where user_id = %(b)s",
        "delete A": "delete from conversation_chunks where user_id = %(a)s",
        "delete B": "delete from conversation_chunks where user_id = %(b)s",
        "truncate": "truncate conversation_chunks",
    },
    "import_job_artifacts": {
        "read A": "select count(*) from import_job_artifacts where job_id = %(job_a)s",
        "read B": "select count(*) from import_job_artifacts where job_id = %(job_b)s",
        "insert A": "insert into import_job_artifacts (job_id, name, content) "
        "values (%(job_a)s, 'probe', '{}')",
        "update A": "update import_job_artifacts set content = content where job_id = %(job_a)s",
        "update B": "update import_job_artifacts set content = content where job_id = %(job_b)s",
        "delete A": "delete from import_job_artifacts where job_id = %(job_a)s",
        "delete B": "delete from import_job_artifacts where job_id = %(job_b)s",
        "truncate": "truncate import_job_artifacts",
    },
    "import_jobs_overview": {
        "read": "select count(*) from import_jobs_overview",
    },
    "soulworker_migrations": {
        "read": "select count(*) from soulworker_migrations",
        "insert": "insert into soulworker_migrations (name, checksum) values ('probe', 'x')",
        "update": "update soulworker_migrations set checksum = checksum",
        "delete": "delete from soulworker_migrations",
        "truncate": "truncate soulworker_migrations",
    },
    "import_jobs_legacy": {
        "read": "select count(*) from import_jobs_legacy",
        "insert": "insert into import_jobs_legacy (user_id) values (%(a)s)",
        "update": "update import_jobs_legacy set error = error",
        "delete": "delete from import_jobs_legacy",
        "truncate": "truncate import_jobs_legacy",
    },
}

# What the superuser does first, in the same rolled-back transaction, so that the operation can
# succeed where it is allowed (A already has a profile: a second one would be a unique violation).
_PREPARE: dict[tuple[str, str], LiteralString] = {
    ("user_profiles", "insert A"): "delete from user_profiles where user_id = %(a)s"
}

_FUNCTION_CALLS: dict[str, LiteralString] = {
    "import_jobs_notify_runnable()": "select import_jobs_notify_runnable()",
    "import_jobs_touch_updated_at()": "select import_jobs_touch_updated_at()",
    "import_job_profile_started(uuid,uuid,text)": (
        "select import_job_profile_started(%(b)s, %(job_b)s, 'probe')"
    ),
    "import_job_profile_progress(uuid,uuid,integer,text)": (
        "select import_job_profile_progress(%(b)s, %(job_b)s, 50, 'probe')"
    ),
    "import_job_profile_succeeded(uuid,uuid)": (
        "select import_job_profile_succeeded(%(b)s, %(job_b)s)"
    ),
    "import_job_profile_failed(uuid,uuid,text)": (
        "select import_job_profile_failed(%(b)s, %(job_b)s, 'overwritten')"
    ),
    "retry_import_job(uuid)": "select retry_import_job(%(job_b)s)",
    "cancel_import_job(uuid)": "select cancel_import_job(%(job_b)s)",
}

# --- what is expected ------------------------------------------------------------------------
# One tuple per (object, operation): the outcome for anon, user A, service_role, the worker.

# N for iNserted (I reads like 1).
D, R, Z, N, C, T, A = DENIED, ROWS, NO_ROWS, INSERTED, CHANGED, TRUNCATED, ALLOWED

_JOBS = {
    "read A": (D, R, R, R),
    "read B": (D, Z, R, R),
    "insert A": (D, N, N, N),  # the web app's insert, for the user themself only
    "update A": (D, D, C, C),
    "update B": (D, D, C, C),
    "delete A": (D, D, C, C),
    "delete B": (D, D, C, C),
    "truncate": (D, D, T, T),
}
_OWNER_READS = {  # soulworker's row level security: a user reads their own rows, writes nothing
    "read A": (D, R, R, R),
    "read B": (D, Z, R, R),
    "insert A": (D, D, N, N),
    "update A": (D, D, C, C),
    "update B": (D, D, C, C),
    "delete A": (D, D, C, C),
    "delete B": (D, D, C, C),
    "truncate": (D, D, T, T),
}
_SERVER_ONLY_ROWS = {op: (D, D, *_OWNER_READS[op][2:]) for op in _OWNER_READS} | {
    "read A": (D, D, R, R),
    "read B": (D, D, R, R),
}
_SERVER_ONLY_TABLE = {
    "read": (D, D, R, R),
    "insert": (D, D, N, N),
    "update": (D, D, C, C),
    "delete": (D, D, C, C),
    "truncate": (D, D, T, T),
}
_FUNCTIONS = {
    # Trigger functions: run by their triggers, callable by nobody (the owner always may).
    "import_jobs_notify_runnable()": (D, D, D, A),
    "import_jobs_touch_updated_at()": (D, D, D, A),
    # The operator functions and the two profile functions they call: the service role too.
    "import_job_profile_started(uuid,uuid,text)": (D, D, A, A),
    "import_job_profile_failed(uuid,uuid,text)": (D, D, A, A),
    "retry_import_job(uuid)": (D, D, A, A),
    "cancel_import_job(uuid)": (D, D, A, A),
    # Used by the worker only.
    "import_job_profile_progress(uuid,uuid,integer,text)": (D, D, D, A),
    "import_job_profile_succeeded(uuid,uuid)": (D, D, D, A),
}

Expectations = dict[tuple[str, str], tuple[str, ...]]


def _expectations(tables: Mapping[str, Mapping[str, tuple[str, ...]]]) -> Expectations:
    expected = {(obj, op): outcome for obj, ops in tables.items() for op, outcome in ops.items()}
    expected |= {(name, "execute"): outcome for name, outcome in _FUNCTIONS.items()}
    return expected


FRESH = _expectations(
    {
        "import_jobs": _JOBS,
        "user_profiles": _OWNER_READS,
        "conversation_chunks": _OWNER_READS,
        "import_job_artifacts": _SERVER_ONLY_ROWS,
        "import_jobs_overview": {"read": (D, D, R, R)},
        "soulworker_migrations": _SERVER_ONLY_TABLE,
    }
)
# The app's tables keep the app's row level security and its grants to authenticated: its
# profile policy lets a user read their own row; its chunks have no policy at all, so a user
# reads none; writes find no policy and change nothing. Only anon and TRUNCATE were taken away.
_APP_PROFILES = _OWNER_READS | {
    "insert A": (D, D, N, N),
    "update A": (D, Z, C, C),
    "update B": (D, Z, C, C),
    "delete A": (D, Z, C, C),
    "delete B": (D, Z, C, C),
}
_APP_CHUNKS = _APP_PROFILES | {"read A": (D, Z, R, R)}
APP_TABLES = _expectations(
    {
        "import_jobs": _JOBS,
        "user_profiles": _APP_PROFILES,
        "conversation_chunks": _APP_CHUNKS,
        "import_job_artifacts": _SERVER_ONLY_ROWS,
        "import_jobs_overview": {"read": (D, D, R, R)},
        "soulworker_migrations": _SERVER_ONLY_TABLE,
        "import_jobs_legacy": _SERVER_ONLY_TABLE,
    }
)


# --- scenarios -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    """A migrated Supabase-like database in which users A and B each imported an export."""

    db: SupabaseDatabase
    user_a: uuid.UUID
    user_b: uuid.UUID
    job_a: uuid.UUID
    job_b: uuid.UUID

    @property
    def params(self) -> dict[str, Any]:
        return {"a": self.user_a, "b": self.user_b, "job_a": self.job_a, "job_b": self.job_b}


async def _connect(url: str) -> psycopg.AsyncConnection[DictRow]:
    return await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)


async def apply_like_the_version_before(url: str, last: str) -> None:
    """Apply the migration files up to ``last`` the way soulworker did before these rules (file
    by file with their bookkeeping, nothing after them), as production databases were."""
    conn = await _connect(url)
    try:
        async with conn.transaction():
            await conn.execute(query("migrations_table"))
            for name, text in migration_files():
                await conn.execute(text)
                await conn.execute(
                    query("record_migration"), {"name": name, "checksum": checksum(text)}
                )
                if name == last:
                    break
    finally:
        await conn.close()


async def migrate_as(url: str, **kwargs: Any) -> list[str]:
    conn = await _connect(url)
    try:
        return (await migrate(conn, default_max_attempts=3, **kwargs)).applied
    finally:
        await conn.close()


async def act_as(
    conn: psycopg.AsyncConnection[DictRow], role: str, user: uuid.UUID | None = None
) -> None:
    """Switch this transaction to ``role``, with ``user``'s JWT claims when given."""
    await conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
    if user is not None:
        claims = json.dumps({"sub": str(user), "role": role})
        await conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))


async def web_app_inserts_job(admin_url: str, user: uuid.UUID, *, legacy_claim: bool) -> uuid.UUID:
    """The web app's insert with the user's session: PostgREST runs it as authenticated with the
    JWT's claims (``request.jwt.claims``; before PostgREST 9, ``request.jwt.claim.sub``)."""
    conn = await _connect(admin_url)
    try:
        async with conn.transaction():
            await conn.execute("set local role authenticated")
            if legacy_claim:
                await conn.execute(
                    "select set_config('request.jwt.claim.sub', %s, true)", (str(user),)
                )
            else:
                await conn.execute(
                    "select set_config('request.jwt.claims', %s, true)",
                    (json.dumps({"sub": str(user), "role": "authenticated"}),),
                )
            cur = await conn.execute(
                "insert into import_jobs (user_id, storage_path) values (%s, %s) returning id",
                (user, f"imports/{user}/export.zip"),
            )
            row = await cur.fetchone()
    finally:
        await conn.close()
    assert row is not None
    job_id: uuid.UUID = row["id"]
    return job_id


def _import_both(project_db: SupabaseDatabase, users: list[uuid.UUID], tmp_path: Path) -> None:
    """The real worker (as the owner role) imports each user's export."""
    with ImportHarness(project_db.owner_url) as h:
        for seed, user in enumerate(users, start=1):
            export = tmp_path / f"export-{seed}.zip"
            write_export(export, GeneratorConfig(seed=seed, conversations=6, form=ExportForm.ZIP))
            h.upload(user, export)
        worker = h.worker(drain=True).start()
        assert worker.wait(120) == 0, worker.output()[-3000:]
        for user in users:
            profile = h.profile(user)
            assert profile is not None
            assert profile["import_status"] == "complete", profile
            assert h.chunk_count(user) > 0


@asynccontextmanager
async def _project(
    pg_server: str, tmp_path: Path, *, app_tables: bool, like_production: bool
) -> AsyncIterator[Project]:
    with supabase_database(pg_server, app_tables=app_tables) as db:
        user_a, user_b = uuid.uuid4(), uuid.uuid4()
        conn = await _connect(db.admin_url)
        try:
            await conn.execute("insert into auth.users (id) values (%s), (%s)", (user_a, user_b))
        finally:
            await conn.close()
        if like_production:
            await apply_like_the_version_before(db.owner_url, BEFORE_EXPOSURE_RULES)
        assert await migrate_as(db.owner_url)
        job_a = await web_app_inserts_job(db.admin_url, user_a, legacy_claim=False)
        job_b = await web_app_inserts_job(db.admin_url, user_b, legacy_claim=True)
        _import_both(db, [user_a, user_b], tmp_path)
        # Working data as a failed job keeps it (a succeeded job's is deleted), written with the
        # worker's own statement.
        worker = await _connect(db.owner_url)
        try:
            for job in (job_a, job_b):
                await worker.execute(
                    query("put_job_artifact"),
                    {"job_id": job, "name": "sample", "content": json.dumps({"text": "private"})},
                )
        finally:
            await worker.close()
        yield Project(db, user_a, user_b, job_a, job_b)


# --- running the matrix ------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    obj: str
    op: str
    role: str
    expected: str
    actual: str


async def _attempt(
    conn: psycopg.AsyncConnection[DictRow],
    project: Project,
    role: str,
    obj: str,
    op: str,
) -> str:
    params = project.params
    role_name = {"user A": "authenticated", "worker": project.db.owner}.get(role, role)
    user = project.user_a if role == "user A" else None
    if op == "execute":
        return await _attempt_call(conn, params, role_name, user, obj)
    statement = _ROW_OPS[obj][op]
    try:
        async with conn.transaction(force_rollback=True):
            if (obj, op) in _PREPARE:
                await conn.execute(_PREPARE[obj, op], params)
            await act_as(conn, role_name, user)
            cur = await conn.execute(statement, params)
            if statement.startswith("select count"):
                row = await cur.fetchone()
                assert row is not None
                return ROWS if row["count"] else NO_ROWS
            if statement.startswith("insert"):
                return INSERTED
            if statement.startswith("truncate"):
                return TRUNCATED
            return CHANGED if cur.rowcount else NO_ROWS
    except pg_errors.InsufficientPrivilege:  # no privilege, or row level security refused
        return DENIED


async def _attempt_call(
    conn: psycopg.AsyncConnection[DictRow],
    params: Mapping[str, Any],
    role_name: str,
    user: uuid.UUID | None,
    signature: str,
) -> str:
    """``allowed`` when the role may execute the function, whatever the function then does (a
    function that runs and fails on a table privilege inside is still callable); ``denied``
    when the call itself is refused."""
    may_execute = None
    try:
        async with conn.transaction(force_rollback=True):
            await act_as(conn, role_name, user)
            cur = await conn.execute(
                "select has_function_privilege(%s::regprocedure, 'EXECUTE') as may",
                (signature,),
            )
            row = await cur.fetchone()
            assert row is not None
            may_execute = bool(row["may"])
            await conn.execute(_FUNCTION_CALLS[signature], params)
    except pg_errors.InsufficientPrivilege:
        return ALLOWED if may_execute else DENIED
    except psycopg.Error:
        pass  # it ran and refused for its own reasons: a finished job, a trigger function
    assert may_execute, f"{role_name} called {signature} without the EXECUTE privilege"
    return ALLOWED


async def run_matrix(project: Project, expected: Expectations) -> list[Cell]:
    conn = await _connect(project.db.admin_url)
    try:
        cells = []
        for (obj, op), outcomes in expected.items():
            for role, outcome in zip(ROLES, outcomes, strict=True):
                actual = await _attempt(conn, project, role, obj, op)
                cells.append(Cell(obj, op, role, outcome, actual))
        return cells
    finally:
        await conn.close()


def render_matrix(title: str, cells: list[Cell]) -> str:
    """One line per (object, operation), one column per role; ``expected≠actual`` marks a
    difference (flagged with ``!!`` at the line's end)."""
    rows: dict[tuple[str, str], dict[str, Cell]] = {}
    for cell in cells:
        rows.setdefault((cell.obj, cell.op), {})[cell.role] = cell
    obj_width = max(len(obj) for obj, _ in rows)
    op_width = max(len("operation"), *(len(op) for _, op in rows))
    lines = [
        title,
        f"{'object'.ljust(obj_width)}  {'operation'.ljust(op_width)}  "
        + "  ".join(role.ljust(12) for role in ROLES),
    ]
    for (obj, op), by_role in rows.items():
        shown = []
        for role in ROLES:
            cell = by_role[role]
            text = cell.actual if cell.actual == cell.expected else f"{cell.expected}≠{cell.actual}"
            shown.append(text.ljust(12))
        bad = any(c.actual != c.expected for c in by_role.values())
        lines.append(
            f"{obj.ljust(obj_width)}  {op.ljust(op_width)}  {'  '.join(shown)}"
            + ("  !!" if bad else "")
        )
    return "\n".join(line.rstrip() for line in lines)


async def enumerate_our_objects(
    project: Project,
) -> tuple[dict[str, set[str]], set[str]]:
    """``({function signature: roles that may execute it}, {relations})`` of everything in
    ``public`` that is not part of an extension: in these databases, all of it is soulworker's
    (or the app's legacy table)."""
    conn = await _connect(project.db.admin_url)
    try:
        cur = await conn.execute(
            """
            select p.oid::regprocedure::text as signature,
                   array(select coalesce(r.rolname::text, 'PUBLIC')
                         from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) as acl
                         left join pg_roles as r on r.oid = acl.grantee
                         where acl.privilege_type = 'EXECUTE'
                         order by 1) as executors
            from pg_proc as p
            where p.pronamespace = 'public'::regnamespace
              and not exists (select 1 from pg_depend as d where d.classid = 'pg_proc'::regclass
                              and d.objid = p.oid and d.deptype = 'e')
            """
        )
        functions = {
            row["signature"].replace(", ", ","): set(row["executors"])
            for row in await cur.fetchall()
        }
        cur = await conn.execute(
            "select relname from pg_class where relnamespace = 'public'::regnamespace "
            "and relkind in ('r', 'p', 'v', 'm', 'S', 'f')"
        )
        relations = {row["relname"] for row in await cur.fetchall()}
    finally:
        await conn.close()
    return functions, relations


def check_inventory(
    project: Project,
    expected: Expectations,
    functions: dict[str, set[str]],
    relations: set[str],
) -> None:
    """Every function and relation soulworker created is in the matrix, and each function's
    ACL says exactly what the matrix says: a new one cannot be added without a decision."""
    in_matrix_functions = {obj for obj, op in expected if op == "execute"}
    in_matrix_relations = {obj for obj, op in expected if op != "execute"}
    assert set(functions) == in_matrix_functions, (
        "functions in the database and in the exposure matrix differ: decide who may execute "
        f"each new one: {sorted(set(functions) ^ in_matrix_functions)}"
    )
    assert relations == in_matrix_relations, (
        f"relations not in the exposure matrix: {sorted(relations ^ in_matrix_relations)}"
    )
    # doctor checks the functions soulworker.doctor.api_exposure lists: that list must be
    # complete too.
    assert {s.replace(", ", ",") for s in SOULWORKER_FUNCTIONS} == set(functions)
    for signature, executors in functions.items():
        roles = dict(zip(ROLES, expected[signature, "execute"], strict=True))
        wanted = {project.db.owner} | ({"service_role"} if roles["service_role"] == A else set())
        assert executors == wanted, f"{signature} is executable by {sorted(executors)}"


SCENARIOS = {
    "fresh project, one run": (False, False, FRESH),
    "fresh project, upgraded like production": (False, True, FRESH),
    "app tables, upgraded like production": (True, True, APP_TABLES),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_exposure_matrix(pg_server: str, tmp_path: Path, scenario: str) -> None:
    app_tables, like_production, expected = SCENARIOS[scenario]
    async with _project(
        pg_server, tmp_path, app_tables=app_tables, like_production=like_production
    ) as project:
        cells = await run_matrix(project, expected)
        table = render_matrix(f"exposure matrix: {scenario}", cells)
        print("\n" + table)
        assert all(cell.actual == cell.expected for cell in cells), table

        functions, relations = await enumerate_our_objects(project)
        check_inventory(project, expected, functions, relations)

        # Nothing any probe did stuck (each ran in a rolled-back transaction), and the worker's
        # results are intact: B's profile was not overwritten by anyone.
        conn = await _connect(project.db.admin_url)
        try:
            cur = await conn.execute(
                "select import_status, import_error from user_profiles where user_id = %s",
                (project.user_b,),
            )
            assert await cur.fetchone() == {"import_status": "complete", "import_error": None}
        finally:
            await conn.close()


@pytest.fixture
def supabase_db(pg_server: str) -> Iterator[SupabaseDatabase]:
    with supabase_database(pg_server) as db:
        yield db


async def _scalar(url: str, statement: LiteralString, *params: object) -> Any:
    conn = await _connect(url)
    try:
        cur = await conn.execute(statement, params or None)
        row = await cur.fetchone()
    finally:
        await conn.close()
    assert row is not None
    return next(iter(row.values()))


async def _policies(url: str, table: str) -> dict[str, tuple[str, list[str], str | None]]:
    """``{policy name: (command, roles, USING expression)}`` of ``table``."""
    conn = await _connect(url)
    try:
        cur = await conn.execute(
            "select policyname, cmd, roles::text[] as roles, qual from pg_policies "
            "where schemaname = 'public' and tablename = %s",
            (table,),
        )
        rows = await cur.fetchall()
    finally:
        await conn.close()
    return {r["policyname"]: (r["cmd"], r["roles"], r["qual"]) for r in rows}


OWN_ROWS = "(user_id = ( SELECT auth.uid() AS uid))"


async def test_a_function_a_later_migration_creates_is_closed_to_api_clients(
    supabase_db: SupabaseDatabase,
) -> None:
    await migrate_as(supabase_db.owner_url)
    later = (
        "9901_later_function.sql",
        "create function later_helper(p uuid) returns uuid language sql as $$ select p $$;\n"
        "create procedure later_procedure() language sql as $$ select 1 $$;\n"
        "grant execute on function later_helper(uuid) to service_role;\n"
        # Like an extension's event trigger creating something in a schema of Supabase's.
        "create schema elsewhere;\n"
        "create function elsewhere.not_ours() returns int language sql as $$ select 1 $$;",
    )

    assert await migrate_as(supabase_db.owner_url, files=[*migration_files(), later]) == [
        "9901_later_function.sql"
    ]

    for routine in ("later_helper(uuid)", "later_procedure()"):
        for role in ("anon", "authenticated"):
            assert not await _scalar(
                supabase_db.admin_url,
                "select has_function_privilege(%s, %s::regprocedure, 'EXECUTE')",
                role,
                routine,
            ), f"{role} may execute {routine}"
        public = await _scalar(
            supabase_db.admin_url,
            "select count(*) from pg_proc as p, aclexplode(p.proacl) as acl "
            "where p.oid = %s::regprocedure and acl.grantee = 0",
            routine,
        )
        assert public == 0, f"PUBLIC may execute {routine}"
    # Other schemas belong to Supabase and its extensions: left as PostgreSQL made them.
    assert await _scalar(
        supabase_db.admin_url,
        "select count(*) from pg_proc as p, aclexplode(coalesce(p.proacl, "
        "acldefault('f', p.proowner))) as acl "
        "where p.oid = 'elsewhere.not_ours()'::regprocedure and acl.grantee = 0",
    )
    # What the migration granted on purpose stays.
    assert await _scalar(
        supabase_db.admin_url,
        "select has_function_privilege('service_role', 'later_helper(uuid)', 'EXECUTE')",
    )


async def test_a_later_migration_that_would_open_a_table_is_rolled_back(
    supabase_db: SupabaseDatabase,
) -> None:
    await migrate_as(supabase_db.owner_url)
    careless = (
        "9902_later_table.sql",
        "create table later_notes (user_id uuid, note text);\n"
        "create view later_view as select 1 as x;\n"
        "create sequence later_sequence;",
    )

    with pytest.raises(pg_errors.RaiseException) as caught:
        await migrate_as(supabase_db.owner_url, files=[*migration_files(), careless])

    message = str(caught.value)
    for name in ("later_notes", "later_view", "later_sequence"):
        assert f"{name} (anon may use it)" in message
    assert "docs/supabase-exposure.md" in (caught.value.diag.message_hint or "")
    # Nothing of it was applied or recorded.
    assert await _scalar(supabase_db.admin_url, "select to_regclass('later_notes') is null")
    assert not await _scalar(
        supabase_db.admin_url,
        "select exists (select 1 from soulworker_migrations where name = '9902_later_table.sql')",
    )

    # Revoking anon but leaving authenticated on a table without row level security is still
    # refused; with row level security it passes.
    half = (
        "9902_later_table.sql",
        "create table later_notes (user_id uuid, note text);\nrevoke all on later_notes from anon;",
    )
    with pytest.raises(pg_errors.RaiseException) as caught:
        await migrate_as(supabase_db.owner_url, files=[*migration_files(), half])
    assert "later_notes (authenticated may use it without row level security)" in str(caught.value)
    careful = (
        "9902_later_table.sql",
        "create table later_notes (user_id uuid, note text);\n"
        "alter table later_notes enable row level security;\n"
        "revoke all on later_notes from anon;\n"
        "create view later_view as select 1 as x;\n"
        "revoke all on later_view from anon, authenticated;",
    )
    assert await migrate_as(supabase_db.owner_url, files=[*migration_files(), careful]) == [
        "9902_later_table.sql"
    ]
    # And a run with nothing left to apply changes nothing.
    assert await migrate_as(supabase_db.owner_url, files=[*migration_files(), careful]) == []


async def test_app_tables_without_row_level_security_get_it_and_keep_the_apps_policies(
    pg_server: str,
) -> None:
    with supabase_database(pg_server, app_tables=True) as db:
        conn = await _connect(db.owner_url)
        try:
            # The app's profile table with its select policy but row level security off (so
            # that policy enforced nothing), and its chunks table without either.
            await conn.execute("alter table user_profiles disable row level security")
            await conn.execute("alter table conversation_chunks disable row level security")
        finally:
            await conn.close()
        app_policy = await _policies(db.admin_url, "user_profiles")
        assert list(app_policy) == ["Users read own profile"]

        await apply_like_the_version_before(db.owner_url, BEFORE_EXPOSURE_RULES)
        assert await migrate_as(db.owner_url)

        for table in ("user_profiles", "conversation_chunks"):
            assert await _scalar(
                db.admin_url, "select relrowsecurity from pg_class where oid = %s::regclass", table
            ), table
        # The app's policy is what now applies, unchanged, and nothing was added beside it; the
        # app's grants to authenticated stay (its policies decide), except TRUNCATE.
        assert await _policies(db.admin_url, "user_profiles") == app_policy
        assert await _scalar(
            db.admin_url, "select has_table_privilege('authenticated', 'user_profiles', 'UPDATE')"
        )
        # The table without any policy gets soulworker's: a user reads their own chunks.
        assert await _policies(db.admin_url, "conversation_chunks") == {
            "conversation_chunks_select_own": ("SELECT", ["authenticated"], OWN_ROWS)
        }
        for privilege, held in [
            ("SELECT", True),
            ("INSERT", False),
            ("UPDATE", False),
            ("DELETE", False),
            ("TRUNCATE", False),
        ]:
            assert (
                await _scalar(
                    db.admin_url,
                    "select has_table_privilege('authenticated', 'conversation_chunks', %s)",
                    privilege,
                )
                is held
            ), privilege
        for table in ("user_profiles", "conversation_chunks", "import_jobs_legacy"):
            assert not await _scalar(
                db.admin_url,
                "select has_any_column_privilege('anon', %s::regclass, "
                "'SELECT, INSERT, UPDATE, REFERENCES')",
                table,
            ), table


async def test_a_fresh_project_gets_owner_only_read_policies(
    supabase_db: SupabaseDatabase,
) -> None:
    await migrate_as(supabase_db.owner_url)

    for table in ("user_profiles", "conversation_chunks"):
        assert await _policies(supabase_db.admin_url, table) == {
            f"{table}_select_own": ("SELECT", ["authenticated"], OWN_ROWS)
        }


async def test_app_tables_without_the_auth_schema_are_left_alone(empty_database_url: str) -> None:
    conn = await _connect(empty_database_url)
    try:
        await conn.execute(
            "create table user_profiles (id uuid primary key default gen_random_uuid(), "
            "user_id uuid unique, import_status text)"
        )
        report = await migrate(conn)
        assert "0009_user_data_row_level_security.sql" in report.applied
        cur = await conn.execute(
            "select relname, relrowsecurity from pg_class "
            "where relname in ('user_profiles', 'conversation_chunks') order by relname"
        )
        assert [(r["relname"], r["relrowsecurity"]) for r in await cur.fetchall()] == [
            ("conversation_chunks", False),
            ("user_profiles", False),
        ]
        assert (await migrate(conn)).applied == []
    finally:
        await conn.close()


def operators_sql() -> str:
    """The first SQL block under "SQL for operators" in docs/supabase-exposure.md."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "supabase-exposure.md").read_text()
    section = doc.split("## SQL for operators", 1)[1]
    return section.split("```sql\n", 1)[1].split("```", 1)[0]


async def test_the_operators_sql_in_the_docs_closes_an_opened_database(
    supabase_db: SupabaseDatabase,
) -> None:
    """The by-hand SQL of the docs restores exactly what migrate sets, from a database where
    everything was opened again."""
    await migrate_as(supabase_db.owner_url)
    conn = await _connect(supabase_db.owner_url)
    try:
        for statement in (
            "grant all on all tables in schema public to anon, authenticated",
            "grant all on all functions in schema public to anon, authenticated, service_role",
            "alter table user_profiles disable row level security",
            "alter table conversation_chunks disable row level security",
        ):
            await conn.execute(statement)
        before = await inspect_exposure(conn)
        assert len(before.problems()) > 10
        await conn.execute(operators_sql().encode())
        await conn.execute(operators_sql().encode())  # idempotent
        after = await inspect_exposure(conn)
    finally:
        await conn.close()
    assert after.problems() == []
    project = Project(supabase_db, uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    functions, relations = await enumerate_our_objects(project)
    check_inventory(project, FRESH, functions, relations)


async def test_replacing_cancel_and_the_overview_for_parked_jobs_keeps_their_privileges(
    supabase_db: SupabaseDatabase,
) -> None:
    """Migration 0012 replaces ``cancel_import_job`` and ``import_jobs_overview``: who may call or
    read them is what 0008 and 0010 made it, and the view still runs with its reader's rights
    (``create or replace view`` would drop ``security_invoker`` unless given again)."""
    files = migration_files()
    parked = next(i for i, (name, _) in enumerate(files) if name.startswith("0012_"))
    privileges: LiteralString = (
        "select (select proacl::text from pg_proc "
        "        where oid = 'cancel_import_job(uuid)'::regprocedure) as function_acl, "
        "       relacl::text as view_acl, reloptions as view_options "
        "from pg_class where oid = 'import_jobs_overview'::regclass"
    )
    assert await migrate_as(supabase_db.owner_url, files=files[:parked])
    conn = await _connect(supabase_db.admin_url)
    try:
        before = await (await conn.execute(privileges)).fetchone()
        assert await migrate_as(supabase_db.owner_url, files=files) == [files[parked][0]]
        after = await (await conn.execute(privileges)).fetchone()
        assert after == before
        assert before is not None and before["view_options"] == ["security_invoker=true"]
        for role, may in (("anon", False), ("authenticated", False), ("service_role", True)):
            cur = await conn.execute(
                "select has_function_privilege(%s, 'cancel_import_job(uuid)', 'EXECUTE') as f, "
                "has_table_privilege(%s, 'import_jobs_overview', 'SELECT') as v",
                (role, role),
            )
            assert await cur.fetchone() == {"f": may, "v": may}, role
    finally:
        await conn.close()
