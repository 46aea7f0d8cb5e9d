"""tests/supabase.py shares server-wide roles with other test runs: it creates them only when
missing, and drops only the ones it created, only when nobody uses them any more.

These tests use role names of their own (and so lock keys of their own), never Supabase's: the
real ones may be in use by another run on the same server right now.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from soulworker.migrate import MIGRATION_LOCK_KEY
from soulworker.testing import postgres as pg
from tests.supabase import supabase_api_roles

pytestmark = pytest.mark.db


@pytest.fixture
def role_names(pg_server: str) -> Iterator[dict[str, str]]:
    """Two roles no one else uses, removed at the end whatever the test left."""
    prefix = f"sw_test_role_{secrets.token_hex(4)}"
    roles = {f"{prefix}_anon": "nologin noinherit", f"{prefix}_service": "nologin bypassrls"}
    yield roles
    with psycopg.connect(pg_server, autocommit=True) as admin:
        for name in roles:
            admin.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(name)))


def existing(server_url: str, roles: dict[str, str]) -> set[str]:
    with psycopg.connect(server_url) as conn:
        rows = conn.execute(
            "select rolname from pg_roles where rolname = any(%s)", (list(roles),)
        ).fetchall()
    return {str(name) for (name,) in rows}


def test_missing_roles_are_created_and_dropped_after(
    pg_server: str, role_names: dict[str, str]
) -> None:
    assert existing(pg_server, role_names) == set()
    with supabase_api_roles(pg_server, role_names):
        assert existing(pg_server, role_names) == set(role_names)
        with psycopg.connect(pg_server) as conn:
            rows = conn.execute(
                "select rolname, rolbypassrls from pg_roles where rolname = any(%s)",
                (list(role_names),),
            ).fetchall()
        bypass = {str(name): bool(flag) for name, flag in rows}
        assert sorted(bypass.values()) == [False, True]
    assert existing(pg_server, role_names) == set()


def test_roles_stay_while_another_run_still_uses_them(
    pg_server: str, role_names: dict[str, str]
) -> None:
    with supabase_api_roles(pg_server, role_names):
        with supabase_api_roles(pg_server, role_names):
            pass
        # The inner run ended first: the outer one still holds them.
        assert existing(pg_server, role_names) == set(role_names)
    assert existing(pg_server, role_names) == set()


def test_roles_a_database_depends_on_are_kept(pg_server: str, role_names: dict[str, str]) -> None:
    with pg.scratch_database(pg_server) as url:
        with supabase_api_roles(pg_server, role_names), psycopg.connect(url) as conn:
            conn.execute(
                sql.SQL("grant usage on schema public to {}").format(
                    sql.Identifier(next(iter(role_names)))
                )
            )
            conn.commit()
        # A leftover database (or another run's) still grants them something: no drop.
        assert existing(pg_server, role_names) == set(role_names)
    # Once it is gone, the next run that uses them removes them.
    with supabase_api_roles(pg_server, role_names):
        pass
    assert existing(pg_server, role_names) == set()


def test_roles_that_existed_before_are_never_dropped(
    pg_server: str, role_names: dict[str, str]
) -> None:
    with psycopg.connect(pg_server, autocommit=True) as admin:
        for name, attributes in role_names.items():
            admin.execute(
                sql.SQL("create role {} {}").format(sql.Identifier(name), sql.SQL(attributes))
            )
    with supabase_api_roles(pg_server, role_names):
        pass
    assert existing(pg_server, role_names) == set(role_names)


def test_roles_are_kept_while_a_migration_runs_anywhere(
    pg_server: str, role_names: dict[str, str]
) -> None:
    """Older checkouts' migrations look the roles up without taking any of these locks."""
    with pg.scratch_database(pg_server) as url, psycopg.connect(url) as migrating:
        migrating.execute("select pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        with supabase_api_roles(pg_server, role_names):
            pass
        assert existing(pg_server, role_names) == set(role_names)
        migrating.rollback()
    with supabase_api_roles(pg_server, role_names):
        pass
    assert existing(pg_server, role_names) == set()
