"""``match_conversation_chunks``, the app's search (migration 0011, docs/embeddings.md "The read
side"), on pgserver's PostgreSQL 16 with pgvector: a user's relevant chunk comes first and no
other user's chunk ever does; on a database prepared like Supabase's only the service role may
call it; an app's own function of that name is never replaced."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from soulworker.testing import postgres as pg
from soulworker.testing.embeddings_server import expected_vector
from tests.supabase import SupabaseDatabase, supabase_api_roles, supabase_database

pytestmark = pytest.mark.db

DIMENSIONS = 768
SIGNATURE = "match_conversation_chunks(vector, uuid, integer, double precision)"


@pytest.fixture
def supabase_vector_db(vector_server_url: str) -> Iterator[SupabaseDatabase]:
    """A database prepared like Supabase's, with pgvector, migrated by its owner."""
    with supabase_api_roles(vector_server_url), supabase_database(vector_server_url) as db:
        with psycopg.connect(db.admin_url, autocommit=True) as admin:
            admin.execute("create extension vector")
        pg.migrate_database(db.owner_url)
        yield db


def vector_text(vector: list[float]) -> str:
    """pgvector's text form, as the app's search sends its query vector."""
    return "[" + ",".join(map(repr, vector)) + "]"


def add_chunk(conn: psycopg.Connection[Any], user: uuid.UUID, text: str) -> None:
    conn.execute(
        "insert into conversation_chunks (user_id, conversation_id, content, created_at, "
        "embedding) values (%s, %s, %s, %s, %s::vector)",
        (user, f"c-{text}", text, datetime.now(UTC), vector_text(expected_vector(text, 768))),
    )


def search(
    conn: psycopg.Connection[Any], user: uuid.UUID, text: str, **options: Any
) -> list[dict[str, Any]]:
    threshold = options.get("threshold", 0.3)
    cur = conn.execute(
        "select * from match_conversation_chunks(%s::vector, %s, %s, %s)",
        (vector_text(expected_vector(text, DIMENSIONS)), user, options.get("count", 10), threshold),
    )
    return list(cur.fetchall())


def test_the_users_relevant_chunk_comes_first_and_no_one_elses_ever(
    supabase_vector_db: SupabaseDatabase,
) -> None:
    db = supabase_vector_db
    a, b = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(db.owner_url, autocommit=True, row_factory=dict_row) as conn:
        for text in ("sailing in May", "my sister's wedding", "learning chess openings"):
            add_chunk(conn, a, text)
        for text in ("learning chess openings", "a different life"):
            add_chunk(conn, b, text)

        found = search(conn, a, "learning chess openings", threshold=-1.0)
        assert found[0]["content"] == "learning chess openings"
        assert {row["user_id"] for row in found} == {a}, "never another user's chunk"
        assert len(found) == 3
        assert found[0]["similarity"] == pytest.approx(1.0, abs=1e-5)
        assert [r["similarity"] for r in found] == sorted(
            (r["similarity"] for r in found), reverse=True
        )
        # The threshold and the count bound the answer, as in the app.
        relevant = search(conn, a, "learning chess openings")
        assert [row["content"] for row in relevant] == ["learning chess openings"]
        assert len(search(conn, a, "sailing in May", threshold=-1.0, count=2)) == 2
        assert search(conn, uuid.uuid4(), "learning chess openings", threshold=-1.0) == []

        privileges = conn.execute(
            "select r.rolname, has_function_privilege(r.rolname, %s, 'EXECUTE') as may "
            "from pg_roles as r where r.rolname in ('anon', 'authenticated', 'service_role')",
            (SIGNATURE,),
        ).fetchall()
    assert {row["rolname"]: row["may"] for row in privileges} == {
        "anon": False,
        "authenticated": False,
        "service_role": True,
    }


def test_granted_to_signed_in_users_it_still_shows_each_only_their_own_chunks(
    supabase_vector_db: SupabaseDatabase,
) -> None:
    # docs/embeddings.md, "The read side": an app that calls it from the browser may grant it to
    # authenticated; it runs with the caller's rights, so row level security keeps a user to
    # their own rows whatever match_user_id they pass.
    db = supabase_vector_db
    a, b = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(db.owner_url, autocommit=True, row_factory=dict_row) as conn:
        add_chunk(conn, a, "learning chess openings")
        add_chunk(conn, b, "learning chess openings")
        conn.execute(f"grant execute on function {SIGNATURE} to authenticated")
    with psycopg.connect(db.admin_url, row_factory=dict_row) as conn:
        conn.execute("set local role authenticated")
        conn.execute(
            "select set_config('request.jwt.claims', %s, true)",
            (f'{{"sub": "{a}", "role": "authenticated"}}',),
        )
        own = search(conn, a, "learning chess openings", threshold=-1.0)
        others = search(conn, b, "learning chess openings", threshold=-1.0)
        conn.rollback()
    assert [row["user_id"] for row in own] == [a]
    assert others == [], "another user's id finds nothing"


def test_an_existing_function_of_that_name_is_never_replaced(vector_server_url: str) -> None:
    with pg.scratch_database(vector_server_url) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create extension vector")
            conn.execute(
                "create function match_conversation_chunks(query_embedding vector(768), "
                "match_user_id uuid, match_count integer, match_threshold double precision) "
                "returns integer language sql as 'select 42'"
            )
        pg.migrate_database(url)
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("select match_conversation_chunks(null, null, 1, 0.0)").fetchone()
        assert row == (42,)


def test_no_function_without_pgvector(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from pg_proc where proname = 'match_conversation_chunks'"
        ).fetchone()
    assert row == (0,)
