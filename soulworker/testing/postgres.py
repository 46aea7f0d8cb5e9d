"""Finding a PostgreSQL server for the tests and benchmarks, and giving each a database of its own.

Order (README, "Run the tests"):
1. ``SOULWORKER_TEST_DATABASE_URL`` when set: a server where this user may create databases.
2. A local server on 127.0.0.1:5432 (user ``postgres``) when one answers.
3. testcontainers (the ``dev`` extra), when installed and a Docker engine is reachable.
4. Otherwise the database tests skip with one line saying how to run them.

Tests and benchmarks create databases named ``sw_test_…`` and drop them afterwards; they never
touch an existing database.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from soulworker.migrate import migrate

LOCAL_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
HOW_TO_RUN = (
    "no PostgreSQL server for the database tests: set SOULWORKER_TEST_DATABASE_URL, run one on "
    "127.0.0.1:5432 (user postgres), or start Docker for testcontainers"
)


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _start_container() -> str | None:
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:
        try:
            from testcontainers.postgres import PostgresContainer
        except ImportError:
            return None
    try:
        container = PostgresContainer("postgres:15-alpine", driver=None)
        container.start()
    except Exception:  # no Docker engine, no image: fall through to skipping
        return None
    atexit.register(container.stop)
    url: str = container.get_connection_url()
    return url


def find_server() -> str | None:
    """A URL for a maintenance database on a server where databases can be created."""
    explicit = os.environ.get("SOULWORKER_TEST_DATABASE_URL")
    if explicit:
        return explicit
    if _answers(LOCAL_SERVER_URL):
        return LOCAL_SERVER_URL
    return _start_container()


def database_url(server_url: str, name: str) -> str:
    params = conninfo_to_dict(server_url)
    params["dbname"] = name
    return make_conninfo("", **params)


def create_database(server_url: str, *, template: str | None = None) -> str:
    name = f"sw_test_{secrets.token_hex(6)}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        statement = sql.SQL("create database {}").format(sql.Identifier(name))
        if template:
            statement = sql.SQL("create database {} template {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        admin.execute(statement)
    return name


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )


@contextmanager
def scratch_database(server_url: str, *, template: str | None = None) -> Iterator[str]:
    """A fresh database for one test; its URL is yielded and it is dropped afterwards."""
    name = create_database(server_url, template=template)
    try:
        yield database_url(server_url, name)
    finally:
        drop_database(server_url, name)


def migrate_database(url: str) -> None:
    """Apply soulworker's migrations to the database at ``url``, as ``soulworker migrate`` does."""

    async def run() -> None:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(run())
