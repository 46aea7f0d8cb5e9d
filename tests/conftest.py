"""Shared fixtures: a PostgreSQL server (soulworker/testing/postgres.py), databases, settings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from psycopg.rows import DictRow, dict_row

from soulworker.local.embedded_postgres import (
    EmbeddedPostgres,
    _pgserver_bindir,
    find_postgres_binaries,
)
from soulworker.logs import configure_logging
from soulworker.migrate import migrate
from soulworker.settings import Settings
from soulworker.testing import postgres as pg
from tests import supabase

configure_logging("console", "warning")


@pytest.fixture(scope="session")
def pg_server() -> str:
    """URL of a maintenance database on a server where tests may create databases."""
    url = pg.find_server()
    if url is None:
        pytest.skip(pg.HOW_TO_RUN)
    return url


@pytest.fixture(scope="session")
def supabase_api_roles(pg_server: str) -> Iterator[None]:
    """Supabase's API roles (anon, authenticated, service_role) on the test server for the rest
    of the session; created only if missing and dropped only when unused (tests/supabase.py)."""
    with supabase.supabase_api_roles(pg_server):
        yield


@pytest.fixture(scope="session")
def migrated_template(pg_server: str) -> Iterator[str]:
    """A database with every migration applied, used as the template for test databases."""
    name = pg.create_database(pg_server)
    url = pg.database_url(pg_server, name)

    async def apply() -> None:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(apply())
    yield name
    pg.drop_database(pg_server, name)


@pytest.fixture
def empty_database_url(pg_server: str) -> Iterator[str]:
    """A brand-new, empty database."""
    with pg.scratch_database(pg_server) as url:
        yield url


@pytest.fixture
def database_url(pg_server: str, migrated_template: str) -> Iterator[str]:
    """A fresh database with every migration applied."""
    with pg.scratch_database(pg_server, template=migrated_template) as url:
        yield url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings.from_env({"DATABASE_URL": database_url, "SOULWORKER_MODEL_STAGES": "off"})


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[DictRow]]:
    """An autocommit connection to the test's migrated database."""
    connection = await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, row_factory=dict_row
    )
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def vector_server_url() -> Iterator[str]:
    """pgserver's PostgreSQL 16 with pgvector (the ``local`` extra, part of ``dev``), started once
    for the session: the machine's own server may have no pgvector."""
    bindir = _pgserver_bindir()
    binaries = find_postgres_binaries([("pgserver", bindir)]) if bindir else None
    if binaries is None:
        pytest.skip("pgserver is not installed: pip install -e '.[dev]' brings it")
    server = EmbeddedPostgres(binaries=binaries)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def vector_database_url(vector_server_url: str) -> Iterator[str]:
    """A migrated database of its own with pgvector: ``conversation_chunks.embedding`` is
    vector(768), the column migration 0003 creates."""
    with pg.scratch_database(vector_server_url) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create extension vector")
        pg.migrate_database(url)
        yield url
