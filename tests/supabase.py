"""Databases prepared like Supabase's, for the tests of what its API can reach.

Supabase's API (PostgREST) runs each request as one of three roles: ``anon`` (the public key),
``authenticated`` (a signed-in user, whose id ``auth.uid()`` reads from the request's JWT) and
``service_role`` (the trusted server key, which bypasses row level security). Its default
privileges give all three every privilege on each new table, function and sequence that the
database's owner creates in ``public``. :func:`supabase_database` builds that: the roles, an
``auth`` schema with ``auth.users`` and ``auth.uid()``, and the default privileges, all in place
before ``soulworker migrate`` runs, with a login role of its own as the owner that migrates and
runs the worker (not a superuser, like Supabase's ``postgres``).

Roles belong to the whole server, and other test runs (other checkouts, other people) use the
same server at the same time, with the same fixed role names. So :func:`supabase_api_roles`:

* holds a shared advisory lock on the maintenance database while the roles are in use;
* creates a missing role under a second, exclusive lock, and marks it with a comment; a role
  created meanwhile by a run that takes no lock (an older checkout) is taken as it is;
* afterwards, only when it can take the first lock exclusively (no other run of these helpers
  uses the roles), no ``soulworker migrate`` is in flight anywhere on the server (older
  checkouts' migrations look the roles up by name without any lock), and only roles carrying the
  mark: drops them, all or none, and only if no database still depends on them (PostgreSQL
  refuses the drop otherwise, which is the last word: a leftover database keeps them alive).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import make_conninfo

from soulworker.migrate import MIGRATION_LOCK_KEY
from soulworker.testing import postgres as pg

SQL_DIR = Path(__file__).parent / "integration" / "sql"

ROLE_MARK = "created by soulworker's tests; dropped by the last test run that uses it"

SUPABASE_ROLES: dict[str, str] = {
    # As Supabase creates them: no login (PostgREST switches to them), service_role above RLS.
    "anon": "nologin noinherit",
    "authenticated": "nologin noinherit",
    "service_role": "nologin noinherit bypassrls",
}
CREATE_ATTEMPTS = 5


def _lock_key(purpose: str) -> int:
    return int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:8], "big", signed=True)


@dataclass(frozen=True)
class RoleSet:
    """Roles created and dropped together, with the two advisory lock keys that guard them
    (derived from the names, so that another set never waits for this one)."""

    attributes: dict[str, str]

    @property
    def names(self) -> list[str]:
        return list(self.attributes)

    @property
    def in_use_key(self) -> int:
        return _lock_key("soulworker.tests.roles.in_use:" + ",".join(sorted(self.attributes)))

    @property
    def create_key(self) -> int:
        return _lock_key("soulworker.tests.roles.create:" + ",".join(sorted(self.attributes)))


@contextmanager
def supabase_api_roles(server_url: str, roles: dict[str, str] | None = None) -> Iterator[None]:
    """``anon``, ``authenticated`` and ``service_role`` exist while the block runs (``roles``:
    other names and attributes, for testing this very function)."""
    role_set = RoleSet(dict(SUPABASE_ROLES if roles is None else roles))
    holder = psycopg.connect(server_url, autocommit=True)
    try:
        holder.execute("select pg_advisory_lock_shared(%s)", (role_set.in_use_key,))
        _create_missing_roles(holder, role_set)
        yield
    finally:
        try:
            holder.execute("select pg_advisory_unlock_shared(%s)", (role_set.in_use_key,))
            _drop_marked_roles_if_unused(holder, role_set)
        finally:
            holder.close()


def _create_missing_roles(conn: psycopg.Connection[tuple[object, ...]], roles: RoleSet) -> None:
    for _ in range(CREATE_ATTEMPTS):
        try:
            with conn.transaction():
                conn.execute("select pg_advisory_xact_lock(%s)", (roles.create_key,))
                for name, attributes in roles.attributes.items():
                    existing = conn.execute("select 1 from pg_roles where rolname = %s", (name,))
                    if existing.fetchone():
                        continue
                    conn.execute(
                        sql.SQL("create role {} {}").format(
                            # The attributes are this module's own constants, never input.
                            sql.Identifier(name),
                            sql.SQL(attributes),
                        )
                    )
                    conn.execute(
                        sql.SQL("comment on role {} is {}").format(
                            sql.Identifier(name), sql.Literal(ROLE_MARK)
                        )
                    )
            break
        except (pg_errors.DuplicateObject, pg_errors.UniqueViolation):
            continue  # created at this moment by a run that takes no lock: look again
    rows = conn.execute(
        "select rolname, rolcanlogin, rolbypassrls from pg_roles where rolname = any(%s)",
        (roles.names,),
    ).fetchall()
    found = {str(name): (login, bypass) for name, login, bypass in rows}
    assert set(found) == set(roles.names), f"the roles could not be created: {found}"
    for name, attributes in roles.attributes.items():
        assert not found[name][0], f"{name} can log in on this server"
        wanted_bypass = "bypassrls" in attributes.split()
        assert found[name][1] == wanted_bypass, f"{name} has bypassrls={found[name][1]} here"


def _drop_marked_roles_if_unused(
    conn: psycopg.Connection[tuple[object, ...]], roles: RoleSet
) -> None:
    row = conn.execute("select pg_try_advisory_lock(%s)", (roles.in_use_key,)).fetchone()
    if not row or not row[0]:
        return  # another run uses them now; the last one drops them
    try:
        if _migration_in_flight(conn):
            return
        marked = [
            str(name)
            for (name,) in conn.execute(
                "select r.rolname from pg_roles as r "
                "join pg_shdescription as d "
                "  on d.objoid = r.oid and d.classoid = 'pg_authid'::regclass "
                "where r.rolname = any(%s) and d.description = %s",
                (roles.names, ROLE_MARK),
            ).fetchall()
        ]
        if not marked:
            return
        try:
            with conn.transaction():
                for name in marked:
                    conn.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))
        except pg_errors.DependentObjectsStillExist:
            pass  # a database (another run's, or a leftover) still grants them something
    finally:
        conn.execute("select pg_advisory_unlock(%s)", (roles.in_use_key,))


def _migration_in_flight(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Whether any session on the server holds ``soulworker migrate``'s advisory lock."""
    key = MIGRATION_LOCK_KEY & 0xFFFF_FFFF_FFFF_FFFF
    row = conn.execute(
        "select exists (select 1 from pg_locks where locktype = 'advisory' "
        "and classid::bigint = %s and objid::bigint = %s and objsubid = 1)",
        (key >> 32, key & 0xFFFF_FFFF),
    ).fetchone()
    return bool(row and row[0])


# --- one database ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SupabaseDatabase:
    """``admin_url`` connects as the server's superuser (to switch into the API roles);
    ``owner_url`` as ``owner``, the role that owns the schema, runs migrate and the worker."""

    name: str
    owner: str
    admin_url: str
    owner_url: str


def install_auth_schema(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Supabase's ``auth`` schema as far as row level security needs it (run as a superuser)."""
    conn.execute((SQL_DIR / "supabase_auth.sql").read_text())


def grant_supabase_default_privileges(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Supabase's default privileges for objects the connected role creates in ``public``."""
    conn.execute((SQL_DIR / "supabase_default_privileges.sql").read_text())


@contextmanager
def supabase_database(server_url: str, *, app_tables: bool = False) -> Iterator[SupabaseDatabase]:
    """A scratch database prepared like a Supabase project, not migrated yet; with
    ``app_tables`` it also holds the predecessor app's tables and rows, created by the owner.
    Needs :func:`supabase_api_roles` around it."""
    owner = f"sw_test_owner_{secrets.token_hex(6)}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("create role {} login").format(sql.Identifier(owner)))
    name = None
    try:
        name = pg.create_database(server_url)
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("alter database {} owner to {}").format(
                    sql.Identifier(name), sql.Identifier(owner)
                )
            )
        admin_url = pg.database_url(server_url, name)
        owner_url = make_conninfo(admin_url, user=owner)
        with psycopg.connect(admin_url, autocommit=True) as admin:
            install_auth_schema(admin)
            # Supabase's postgres may read and reference auth.users (foreign keys to it).
            admin.execute(
                sql.SQL(
                    "grant usage on schema auth to {owner}; grant all on auth.users to {owner}"
                ).format(owner=sql.Identifier(owner))
            )
        with psycopg.connect(owner_url, autocommit=True) as conn:
            grant_supabase_default_privileges(conn)
            if app_tables:
                conn.execute((SQL_DIR / "predecessor_schema.sql").read_text())
        yield SupabaseDatabase(name=name, owner=owner, admin_url=admin_url, owner_url=owner_url)
    finally:
        if name is not None:
            pg.drop_database(server_url, name)
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(owner)))
