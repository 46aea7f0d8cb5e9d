"""The chunk writer on a real Postgres: COPY types, batching by rows and bytes, deleting a
replaced duplicate's range, and replacing a user's previous chunks atomically (docs/contract.md)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow, dict_row

from soulworker.conversations.conversation import Chunk, ChunkTier
from soulworker.llm.models import estimate_tokens
from soulworker.pipeline import chunk_writer
from soulworker.pipeline.chunk_writer import ChunkWriter

pytestmark = pytest.mark.db

Conn = psycopg.AsyncConnection[DictRow]

UNICODE_TEXT = (
    "Emoji 🍞🥖 and a flag 🇫🇷; CJK 天気はどうですか。RTL שלום عليكم; combining e\u0301 "
    "and Zalgo a\u0336\u0335; astral 𝔘𝔫𝔦; quotes “…” and a tab\tand a backslash \\N \\. "
    "and a newline\nand a carriage return\r"
)


def make_chunk(
    conversation_id: str = "conv-1",
    content_body: str = "User: hi",
    *,
    title: str = "Title",
    message_count: int = 1,
    created_at: datetime | None = None,
    is_recent: bool = False,
    tier: ChunkTier = ChunkTier.MEDIUM,
) -> Chunk:
    header = f"# {title}\n"
    content = header + content_body
    return Chunk(
        conversation_id=conversation_id,
        title=title,
        content=content,
        message_count=message_count,
        token_count=estimate_tokens(content),
        chunk_index_in_conversation=0,
        created_at=created_at or datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC),
        is_recent=is_recent,
        tier=tier,
        header_chars=len(header),
        overlap_chars=0,
    )


@pytest.fixture
async def other_conn(database_url: str) -> AsyncIterator[Conn]:
    """A second session: what the chat (or any other reader) sees meanwhile."""
    connection = await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, row_factory=dict_row
    )
    try:
        yield connection
    finally:
        await connection.close()


async def rows(conn: Conn, where: str = "true", *params: Any) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"select * from conversation_chunks where {where} order by import_job_id, chunk_index",
        params or None,
    )
    return [dict(row) for row in await cur.fetchall()]


async def count(conn: Conn, user: uuid.UUID, job: uuid.UUID | None = None) -> int:
    if job is None:
        cur = await conn.execute(
            "select count(*) as n from conversation_chunks where user_id = %s", (user,)
        )
    else:
        cur = await conn.execute(
            "select count(*) as n from conversation_chunks where user_id = %s "
            "and import_job_id = %s",
            (user, job),
        )
    row = await cur.fetchone()
    assert row is not None
    n: int = row["n"]
    return n


async def seed_chunks(conn: Conn, user: uuid.UUID, job: uuid.UUID | None, how_many: int) -> None:
    """Rows written by an earlier import (or by the predecessor, with no job id at all)."""
    for index in range(how_many):
        await conn.execute(
            "insert into conversation_chunks (user_id, conversation_id, title, content, "
            "message_count, created_at, import_job_id, chunk_index) "
            "values (%s, 'old', 'Old', '# Old\nUser: old', 1, now(), %s, %s)",
            (user, job, index if job is not None else None),
        )


async def test_every_column_arrives_with_its_type_and_unicode_intact(conn: Conn) -> None:
    user, job = uuid.uuid4(), uuid.uuid4()
    created = datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC)
    chunks = [
        make_chunk(
            "c-1", UNICODE_TEXT, title="Pain “maison” 🍞", created_at=created, is_recent=True
        ),
        make_chunk("c-2", "Assistant: plain", message_count=7, tier=ChunkTier.MACRO),
    ]
    async with conn.transaction():
        writer = ChunkWriter(conn, job_id=job, user_id=user)
        await writer.start()
        assert await writer.add(chunks) == range(0, 2)
        await writer.flush()
    stored = await rows(conn, "import_job_id = %s", job)
    assert [r["chunk_index"] for r in stored] == [0, 1]
    first, second = stored
    assert first["user_id"] == user and first["import_job_id"] == job
    assert first["conversation_id"] == "c-1"
    assert first["title"] == "Pain “maison” 🍞"
    assert first["content"] == chunks[0].content, "unicode, tabs, backslashes survive exactly"
    assert first["created_at"] == created, "microseconds and the time zone are kept"
    assert first["is_recent"] is True
    assert (first["message_count"], first["token_count"]) == (1, chunks[0].token_count)
    assert first["chunk_tier"] == "medium"
    assert (second["message_count"], second["chunk_tier"], second["is_recent"]) == (
        7,
        "macro",
        False,
    )
    assert writer.rows_written == 2


async def test_indexes_continue_across_calls_in_the_order_chunks_are_added(conn: Conn) -> None:
    user, job = uuid.uuid4(), uuid.uuid4()
    async with conn.transaction():
        writer = ChunkWriter(conn, job_id=job, user_id=user)
        await writer.start()
        assert await writer.add([make_chunk("a"), make_chunk("a")]) == range(0, 2)
        assert await writer.add([]) == range(2, 2)
        assert await writer.add([make_chunk("b")]) == range(2, 3)
        await writer.flush()
    stored = await rows(conn, "import_job_id = %s", job)
    assert [(r["chunk_index"], r["conversation_id"]) for r in stored] == [
        (0, "a"),
        (1, "a"),
        (2, "b"),
    ]


def copying(writer: ChunkWriter) -> bool:
    """Read the property through a call, so the type checker does not pin its last value."""
    return writer.copy_open


async def test_a_copy_statement_ends_when_it_reaches_the_row_bound(
    conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chunk_writer, "BATCH_MAX_ROWS", 3)
    user, job = uuid.uuid4(), uuid.uuid4()
    async with conn.transaction():
        writer = ChunkWriter(conn, job_id=job, user_id=user)
        await writer.add([make_chunk(), make_chunk()])
        assert copying(writer), "rows stream into an open COPY statement"
        await writer.add([make_chunk()])
        assert not copying(writer), "the third row ends the statement"
        assert await count(conn, user) == 3
        await writer.add([make_chunk()])
        assert copying(writer)
        await writer.flush()
        assert await count(conn, user) == 4
        assert writer.rows_written == 4


async def test_a_copy_statement_ends_at_the_byte_bound_counting_utf8_bytes(
    conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chunk_writer, "BATCH_MAX_BYTES", 1000)
    user, job = uuid.uuid4(), uuid.uuid4()
    async with conn.transaction():
        writer = ChunkWriter(conn, job_id=job, user_id=user)
        await writer.add([make_chunk(content_body="x" * 500)])
        assert copying(writer)
        await writer.add([make_chunk(content_body="y" * 600)])
        assert not copying(writer), "ASCII: 1,100 bytes pass the bound"
        assert await count(conn, user) == 2
        # 400 characters of CJK are 1,200 bytes on the wire: over the bound by themselves.
        await writer.add([make_chunk(content_body="天" * 400)])
        assert not copying(writer), "the bound counts UTF-8 bytes, not characters"
        assert await count(conn, user) == 3
        await writer.add([make_chunk(content_body="🍞" * 250)])  # 1,000 bytes: 250 characters
        assert not copying(writer)
        assert await count(conn, user) == 4
        assert writer.bytes_written >= 500 + 600 + 1200 + 1000


async def test_an_error_mid_copy_aborts_it_so_the_transaction_rolls_back_cleanly(
    conn: Conn,
) -> None:
    user, job = uuid.uuid4(), uuid.uuid4()

    class Interrupted(Exception):
        pass

    with pytest.raises(Interrupted):
        async with conn.transaction(), ChunkWriter(conn, job_id=job, user_id=user) as writer:
            await writer.add([make_chunk(), make_chunk()])
            assert copying(writer)
            raise Interrupted
    assert await count(conn, user) == 0
    assert conn.info.transaction_status.name == "IDLE", "the connection is usable again"


async def test_delete_removes_a_range_including_rows_still_buffered(conn: Conn) -> None:
    user, job = uuid.uuid4(), uuid.uuid4()
    async with conn.transaction():
        writer = ChunkWriter(conn, job_id=job, user_id=user)
        await writer.add([make_chunk("keep")])
        stale = await writer.add([make_chunk("stale"), make_chunk("stale")])
        await writer.add([make_chunk("after")])
        await writer.delete(stale)  # the stale copy's rows were never flushed yet
        await writer.delete(range(4, 4))  # an empty range is nothing to do
        await writer.flush()
        assert writer.rows_written == 2
    stored = await rows(conn, "import_job_id = %s", job)
    assert [(r["chunk_index"], r["conversation_id"]) for r in stored] == [
        (0, "keep"),
        (3, "after"),
    ]


async def test_start_clears_only_this_jobs_own_rows(conn: Conn) -> None:
    user, job, other_job = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await seed_chunks(conn, user, job, 3)
    await seed_chunks(conn, user, other_job, 2)
    async with conn.transaction():
        writer = ChunkWriter(conn, job_id=job, user_id=user)
        await writer.start()
        # The same indexes can be written again: no unique violation with the old rows.
        await writer.add([make_chunk("new"), make_chunk("new")])
        await writer.flush()
    assert await count(conn, user, job) == 2
    assert await count(conn, user, other_job) == 2


async def test_previous_chunks_are_replaced_atomically_and_other_users_are_untouched(
    conn: Conn, other_conn: Conn
) -> None:
    user, bystander = uuid.uuid4(), uuid.uuid4()
    old_job, job = uuid.uuid4(), uuid.uuid4()
    await seed_chunks(conn, user, old_job, 4)
    await seed_chunks(conn, user, None, 2)  # the predecessor's rows carry no job id
    await seed_chunks(conn, bystander, uuid.uuid4(), 3)
    async with conn.transaction():
        writer = ChunkWriter(conn, job_id=job, user_id=user)
        await writer.start()
        await writer.add([make_chunk("n1"), make_chunk("n2"), make_chunk("n3")])
        replaced = await writer.replace_previous_chunks()
        assert replaced == 6
        assert await count(conn, user) == 3
        # Until the commit the chat still sees the complete old set, never a mix or nothing.
        assert await count(other_conn, user) == 6
        assert await count(other_conn, user, job) == 0
    assert await count(other_conn, user) == 3
    assert await count(other_conn, user, job) == 3
    assert await count(other_conn, bystander) == 3


async def test_a_rolled_back_parse_leaves_the_previous_set_in_place(conn: Conn) -> None:
    user, old_job, job = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await seed_chunks(conn, user, old_job, 4)

    class Interrupted(Exception):
        pass

    with pytest.raises(Interrupted):
        async with conn.transaction():
            writer = ChunkWriter(conn, job_id=job, user_id=user)
            await writer.start()
            await writer.add([make_chunk() for _ in range(5)])
            await writer.replace_previous_chunks()
            raise Interrupted
    assert await count(conn, user) == 4
    assert await count(conn, user, old_job) == 4


async def test_many_rows_go_through_in_several_batches(conn: Conn) -> None:
    user, job = uuid.uuid4(), uuid.uuid4()
    total = chunk_writer.BATCH_MAX_ROWS * 2 + 17
    base = datetime(2025, 1, 1, tzinfo=UTC)
    async with conn.transaction():
        writer = ChunkWriter(conn, job_id=job, user_id=user)
        for i in range(total):
            await writer.add(
                [make_chunk(f"c{i}", f"User: {i}", created_at=base + timedelta(minutes=i))]
            )
        await writer.flush()
    cur = await conn.execute(
        "select count(*) as n, min(chunk_index) as lo, max(chunk_index) as hi, "
        "count(distinct created_at) as times from conversation_chunks where import_job_id = %s",
        (job,),
    )
    summary = await cur.fetchone()
    assert summary == {"n": total, "lo": 0, "hi": total - 1, "times": total}
    assert writer.rows_written == total


# -- a COPY left open across a stretch with nothing to write ---------------------------------


async def test_a_copy_open_past_the_statement_timeout_is_cut_off(conn: Conn) -> None:
    # The hazard itself: the timeout counts from the COPY's start, not from its last row.
    user, job = uuid.uuid4(), uuid.uuid4()
    with pytest.raises(psycopg.errors.QueryCanceled):
        async with conn.transaction():
            await conn.execute("set local statement_timeout = 500")
            async with ChunkWriter(conn, job_id=job, user_id=user) as writer:
                await writer.start()
                await writer.add([make_chunk("c-1")])
                await asyncio.sleep(0.8)  # a stretch of the export without dialogue
                await writer.add([make_chunk("c-2")])
                await writer.flush()


async def test_a_copy_is_ended_once_open_long_enough_even_without_rows(conn: Conn) -> None:
    user, job = uuid.uuid4(), uuid.uuid4()
    async with conn.transaction():
        await conn.execute("set local statement_timeout = 500")
        writer = ChunkWriter(conn, job_id=job, user_id=user)
        await writer.start()
        await writer.add([make_chunk("c-1")])
        assert not await writer.close_if_open_for(0.125)  # too young: left open
        was_open = writer.copy_open
        assert was_open
        for _ in range(8):  # what the parse stage does while no rows come
            await asyncio.sleep(0.1)
            await writer.close_if_open_for(0.125)
        assert not writer.copy_open
        await writer.add([make_chunk("c-2")])
        await writer.flush()
    assert [r["conversation_id"] for r in await rows(conn, "import_job_id = %s", job)] == [
        "c-1",
        "c-2",
    ]
    assert writer.rows_written == 2
