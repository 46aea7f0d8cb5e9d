"""Migrations where pgvector exists (docs/contract.md: pgvector is used when present).

The machine's PostgreSQL has no pgvector; ``pgserver`` (a dev dependency) bundles PostgreSQL 16 with
pgvector, started once for the session (``vector_server_url`` in tests/conftest.py).
"""

from __future__ import annotations

import psycopg
import pytest

from soulworker.testing import postgres as pg

pytestmark = pytest.mark.db


def _fresh_database(server_url: str, name: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'drop database if exists "{name}"')
        admin.execute(f'create database "{name}"')
    params = psycopg.conninfo.conninfo_to_dict(server_url)
    params["dbname"] = name
    return psycopg.conninfo.make_conninfo("", **params)


def test_a_new_chunks_table_gets_the_embedding_column(vector_server_url: str) -> None:
    url = _fresh_database(vector_server_url, "sw_vector_new")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create extension vector")
    pg.migrate_database(url)
    pg.migrate_database(url)  # and again: nothing changes
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "select format_type(atttypid, atttypmod) from pg_attribute "
            "where attrelid = 'conversation_chunks'::regclass and attname = 'embedding'"
        ).fetchone()
    assert row == ("vector(768)",)


def test_an_existing_embedding_column_and_its_vectors_are_kept(vector_server_url: str) -> None:
    url = _fresh_database(vector_server_url, "sw_vector_existing")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create extension vector")
        conn.execute(
            "create table conversation_chunks (id uuid primary key default gen_random_uuid(), "
            "user_id uuid not null, conversation_id text not null, title text, "
            "content text not null, message_count integer, created_at timestamptz not null, "
            "is_recent boolean default false, chunk_tier text default 'medium', "
            "embedding vector(768))"
        )
        conn.execute("create index on conversation_chunks using hnsw (embedding vector_cosine_ops)")
        conn.execute(
            "insert into conversation_chunks (user_id, conversation_id, content, created_at, "
            "embedding) values (gen_random_uuid(), 'c1', 'text', now(), "
            "array_fill(0.5::real, array[768])::vector)"
        )
    pg.migrate_database(url)
    with psycopg.connect(url, autocommit=True) as conn:
        kept = conn.execute(
            "select vector_dims(embedding), import_job_id is null from conversation_chunks"
        ).fetchall()
    assert kept == [(768, True)]
