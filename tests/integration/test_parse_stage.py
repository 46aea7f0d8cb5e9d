"""The parse stage in-process against a real Postgres (docs/pipeline.md): duplicates across shards,
the counts it reports, what reaches ``conversation_chunks``, and that nothing is visible unless
the whole export was read."""

from __future__ import annotations

import json
import re
import shutil
import uuid
import zipfile
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from soulworker import db
from soulworker.export.errors import EmptyExport, ExportError
from soulworker.jobs.context import JobContext
from soulworker.jobs.job import ClaimedJob
from soulworker.jobs.store import JobStore
from soulworker.pipeline.export_source import LocalFileExportSource
from soulworker.pipeline.handoffs import PARSE_OUTPUT_ARTIFACT
from soulworker.pipeline.import_run import ImportRun
from soulworker.pipeline.parse_stage import ParseStage
from soulworker.settings import Settings
from soulworker.testing.export_generator import (
    ConversationFacts,
    DuplicateKind,
    ExportForm,
    Feature,
    GeneratorConfig,
    write_export,
)

pytestmark = pytest.mark.db

Conn = psycopg.AsyncConnection[DictRow]
TAG = re.compile(r"\(#\d+\.\d+\)")
"""The generator ends every dialogue text with a unique tag such as ``(#12.3)``."""


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[JobStore]:
    pool: AsyncConnectionPool[Conn] = db.create_pool(settings, "test parse", max_size=4)
    await pool.open(wait=True)
    try:
        yield JobStore(pool, lease_seconds=30)
    finally:
        await pool.close()


async def claimed_job(conn: Conn, store: JobStore, user: uuid.UUID | None = None) -> ClaimedJob:
    user = user or uuid.uuid4()
    await conn.execute(
        "insert into import_jobs (user_id, storage_path) values (%s, %s)",
        (user, f"imports/{user}/export.zip"),
    )
    job = await store.claim("parse-test")
    assert job is not None
    return job


async def parse(store: JobStore, settings: Settings, job: ClaimedJob, export: Path) -> ImportRun:
    """Run the parse stage on a copy of ``export``, as the pipeline runs it on the attempt's own
    downloaded copy (which the stage removes once it has read it)."""
    ctx = JobContext(job, store, progress_interval_seconds=0)
    attempt_copy = export.with_name(f"{export.name}.{job.id}.download")
    shutil.copyfile(export, attempt_copy)
    run = ImportRun(
        ctx=ctx,
        settings=settings,
        export_path=attempt_copy,
        export_source=LocalFileExportSource(export),  # unused: the parse reads export_path
        result=dict(job.result),
    )
    await ParseStage().run(run)
    return run


async def fetch(conn: Conn, statement: str, *params: Any) -> list[dict[str, Any]]:
    cur = await conn.execute(statement, params or None)
    return [dict(row) for row in await cur.fetchall()]


async def chunks_of(conn: Conn, job_id: uuid.UUID) -> list[dict[str, Any]]:
    return await fetch(
        conn,
        "select * from conversation_chunks where import_job_id = %s order by chunk_index",
        job_id,
    )


def tags(texts: Iterable[str]) -> set[str]:
    return {tag for text in texts for tag in TAG.findall(text)}


def expected_tags(facts: ConversationFacts) -> set[str]:
    return tags(part for message in facts.messages for part in message.parts)


def write_json(path: Path, conversations: list[Any]) -> Path:
    path.write_text(json.dumps(conversations), encoding="utf-8")
    return path


def node(node_id: str, parent: str | None, role: str | None, text: str = "") -> dict[str, Any]:
    message = None
    if role is not None:
        message = {
            "id": node_id,
            "author": {"role": role},
            "content": {"content_type": "text", "parts": [text]},
            "recipient": "all",
            "create_time": 1_750_000_000.0,
        }
    return {"id": node_id, "message": message, "parent": parent, "children": []}


def conversation(
    conversation_id: str, update_time: float, *turns: tuple[str, str], title: str = "Chat"
) -> dict[str, Any]:
    """A small conversation: a root, then the given (role, text) turns in a chain."""
    mapping = {"root": node("root", None, None)}
    parent = "root"
    for number, (role, text) in enumerate(turns):
        mapping[f"n{number}"] = node(f"n{number}", parent, role, text)
        parent = f"n{number}"
    return {
        "id": conversation_id,
        "title": title,
        "create_time": 1_750_000_000.0,
        "update_time": update_time,
        "mapping": mapping,
        "current_node": parent,
    }


async def test_duplicates_across_shards_keep_only_the_winning_copy(
    conn: Conn, store: JobStore, settings: Settings, tmp_path: Path
) -> None:
    config = GeneratorConfig(
        seed=1,
        conversations=40,
        form=ExportForm.ZIP_SHARDS,
        shard_bytes=120_000,
        median_conversation_bytes=6_000,
        rates={Feature.DUPLICATES: 0.3, Feature.UNKNOWN_CONTENT_TYPES: 0.05},
    )
    summary = write_export(tmp_path / "export.zip", config, collect_facts=True)
    assert summary.expected is not None
    assert set(summary.duplicates.values()) == set(DuplicateKind), "every kind is exercised"
    members_of: dict[str, set[str]] = defaultdict(set)
    with zipfile.ZipFile(summary.path) as archive:
        for member in summary.members:
            for item in json.loads(archive.read(member)):
                members_of[item["id"]].add(member)
    assert any(len(members_of[i]) > 1 for i in summary.duplicates), "copies sit in other shards"

    job = await claimed_job(conn, store)
    run = await parse(store, settings, job, summary.path)

    winners = {i: f for i, f in summary.expected.items() if f.messages}
    result = run.result
    assert result["duplicate_conversations"] == summary.items_written - len(summary.expected)
    assert result["conversations"] == len(winners)
    assert result["messages"] == sum(len(f.messages) for f in winners.values())
    unknown: Counter[str] = Counter()
    for facts in winners.values():
        unknown.update(facts.unknown_content_types)
    assert result["unknown_content_types"] == dict(unknown), "counted once, for the kept copy"

    rows = await chunks_of(conn, job.id)
    assert len(rows) == result["chunks"] > 0
    by_conversation: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_conversation[row["conversation_id"]].append(row)
    assert set(by_conversation) == set(winners)
    for conversation_id, facts in winners.items():
        mine = by_conversation[conversation_id]
        indexes = [row["chunk_index"] for row in mine]
        assert indexes == list(range(indexes[0], indexes[0] + len(indexes))), "no foreign rows"
        found = tags(row["content"] for row in mine)
        # Exactly the winner's dialogue: the losing copy's extra turn (or missing one) shows.
        assert found == expected_tags(facts), (conversation_id, summary.duplicates.get(facts.id))

    # Replaced copies leave gaps in chunk_index, never a renumbering; the layout covers them.
    replaced = [
        i for i, kind in summary.duplicates.items() if kind is not DuplicateKind.NEWER_EARLIER
    ]
    highest = max(row["chunk_index"] for row in rows)
    assert highest + 1 > len(rows) or not replaced
    [artifact] = await fetch(
        conn,
        "select content from import_job_artifacts where job_id = %s and name = %s",
        job.id,
        PARSE_OUTPUT_ARTIFACT,
    )
    layout = artifact["content"]["chunk_layout"]
    assert len(layout["header_chars"]) == len(layout["overlap_chars"]) == highest + 1
    sample_ids = artifact["content"]["sample_conversation_ids"]
    assert len(sample_ids) == len(set(sample_ids)) and set(sample_ids) <= set(winners)

    [row] = await fetch(conn, "select * from import_jobs where id = %s", job.id)
    assert (row["stage"], row["progress_percent"]) == ("parse", 35)
    assert row["checkpoint"]["parse"] == {"done": True, "chunks": len(rows)}
    assert row["result"]["chunks"] == len(rows)
    assert row["result"]["stage_seconds"]["parse"] >= 0


async def test_replaced_copies_are_taken_back_out_of_every_count(
    conn: Conn, store: JobStore, settings: Settings, tmp_path: Path
) -> None:
    long_text = "A pasted document. " * 200  # ~3.8 KB, over the 1 KiB limit set below
    export = write_json(
        tmp_path / "conversations.json",
        [
            conversation("x", 100.0),  # no dialogue yet (an empty chat)
            conversation("y", 100.0, ("user", "Hello y."), ("assistant", "Hi y.")),
            conversation("x", 200.0, ("user", "Hello x."), ("assistant", "Hi x.")),
            conversation("z", 300.0, ("user", "Hello z."), ("assistant", long_text)),
            conversation("z", 400.0),  # the newer copy of z has lost its dialogue
            conversation("w", 500.0, ("user", long_text)),
            conversation("w", 400.0, ("user", long_text)),  # stale: counts nothing
        ],
    )
    job = await claimed_job(conn, store)
    run = await parse(store, settings.replace(max_message_bytes=1024), job, export)
    result = run.result
    assert result["conversations"] == 3  # x (second copy), y and w
    assert result["messages"] == 5
    assert result["conversations_without_dialogue"] == 1  # z's newer copy only
    assert result["duplicate_conversations"] == 3
    assert result["truncated_messages"] == 1  # w's; z's was undone, w's stale copy never counted
    rows = await chunks_of(conn, job.id)
    assert sorted({row["conversation_id"] for row in rows}) == ["w", "x", "y"]
    assert not any("Hello z." in row["content"] for row in rows), "z's older copy was undone"


async def test_text_reaches_postgres_without_nul_and_with_unicode_intact(
    conn: Conn, store: JobStore, settings: Settings, tmp_path: Path
) -> None:
    unicode_text = "Pain 🍞 au levain, 天気は晴れ。 שלום e\u0301 𝔘𝔫𝔦"
    raw = [
        conversation(
            "u1",
            100.0,
            ("user", f"before\x00after {unicode_text}"),
            ("assistant", "lone \ud83c surrogate and a backslash \\N and a tab\t."),
            title="Ti\x00tle ☕",
        )
    ]
    export = tmp_path / "conversations.json"
    # json.dumps escapes NUL as \u0000 and the lone surrogate as \ud83c, as a real export would.
    export.write_text(json.dumps(raw), encoding="ascii")
    job = await claimed_job(conn, store)
    await parse(store, settings, job, export)
    [row] = await chunks_of(conn, job.id)
    assert "\x00" not in row["content"] and "\x00" not in row["title"]
    assert row["title"] == "Title ☕"
    assert row["content"].startswith("# Title ☕\n")
    assert f"beforeafter {unicode_text}" in row["content"]
    assert "backslash \\N and a tab\t." in row["content"]
    row["content"].encode("utf-8")  # no lone surrogate survived
    assert row["message_count"] == 2


async def test_a_failure_at_the_end_of_the_export_leaves_the_previous_set_untouched(
    conn: Conn, store: JobStore, settings: Settings, tmp_path: Path
) -> None:
    user = uuid.uuid4()
    good = tmp_path / "good.json"
    write_json(good, [conversation(f"c{i}", 100.0, ("user", f"Hi {i}.")) for i in range(30)])
    first = await claimed_job(conn, store, user)
    await parse(store, settings, first, good)
    await store.succeed(first.fence, {})
    before = await chunks_of(conn, first.id)
    assert len(before) == 30

    data = good.read_bytes()
    damaged = tmp_path / "damaged.json"
    damaged.write_bytes(data[: len(data) - 40])  # the last conversation is cut off
    second = await claimed_job(conn, store, user)
    with pytest.raises(ExportError) as caught:
        await parse(store, settings, second, damaged)
    assert caught.value.code == "export_truncated"
    assert await chunks_of(conn, second.id) == [], "29 conversations were read, none committed"
    assert await chunks_of(conn, first.id) == before, "the chat keeps the previous set"
    [row] = await fetch(conn, "select checkpoint from import_jobs where id = %s", second.id)
    assert "parse" not in row["checkpoint"]
    artifacts = await fetch(conn, "select * from import_job_artifacts where job_id = %s", second.id)
    assert artifacts == []


async def test_an_export_whose_conversations_have_no_dialogue_is_empty(
    conn: Conn, store: JobStore, settings: Settings, tmp_path: Path
) -> None:
    export = write_json(
        tmp_path / "conversations.json", [conversation("a", 1.0), conversation("b", 2.0)]
    )
    job = await claimed_job(conn, store)
    with pytest.raises(EmptyExport) as caught:
        await parse(store, settings, job, export)
    assert caught.value.code == "empty_export"
    assert "2 conversations contain no messages" in caught.value.message


async def test_bad_entries_are_counted_and_skipped(
    conn: Conn, store: JobStore, settings: Settings, tmp_path: Path
) -> None:
    export = write_json(
        tmp_path / "conversations.json",
        [
            {"title": "no id and no dialogue: a conversation, not a bad entry", "mapping": {}},
            {"id": "m", "title": "mapping of the wrong type", "mapping": [1, 2]},
            42,
            "not a conversation",
            conversation("ok", 1.0, ("user", "Still here.")),
        ],
    )
    job = await claimed_job(conn, store)
    run = await parse(store, settings, job, export)
    assert run.result["bad_conversations"] == 1
    assert run.result["bad_conversation_reasons"] == {"bad_mapping": 1}
    assert run.result["skipped_items"] == 2
    assert run.result["conversations"] == 1
    assert run.result["conversations_without_dialogue"] == 1
    assert [row["conversation_id"] for row in await chunks_of(conn, job.id)] == ["ok"]
