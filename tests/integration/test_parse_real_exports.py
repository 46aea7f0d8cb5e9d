"""The parse stage on the traits of real exports (docs/export-format.md), against a real
Postgres: Canvas documents reach the chunks once with their final text, voice turns bring no
false ``[image]``, no marker character is stored, and conversations without an id are imported
once each, also when copies sit in different shards. Then the worst hostile variants."""

from __future__ import annotations

import json
import uuid
import zipfile
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from soulworker import db
from soulworker.conversations.citations import MARKER_CHARACTERS
from soulworker.conversations.derived_ids import DERIVED_ID_PREFIX
from soulworker.conversations.message_text import IMAGE_PLACEHOLDER, TRUNCATION_MARKER
from soulworker.jobs.store import JobStore
from soulworker.pipeline.handoffs import PARSE_OUTPUT_ARTIFACT
from soulworker.settings import Settings
from soulworker.testing.export_generator import ExportForm, Feature, GeneratorConfig, write_export
from tests.integration.test_parse_stage import (
    Conn,
    chunks_of,
    claimed_job,
    conversation,
    fetch,
    node,
    parse,
    tags,
)

pytestmark = pytest.mark.db


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[JobStore]:
    pool: AsyncConnectionPool[Conn] = db.create_pool(settings, "test parse", max_size=4)
    await pool.open(wait=True)
    try:
        yield JobStore(pool, lease_seconds=30)
    finally:
        await pool.close()


async def transcripts(conn: Conn, job_id: uuid.UUID) -> dict[str, str]:
    """Each conversation's transcript, rebuilt from its chunks without headers or overlaps,
    so that "exactly once" can be checked across chunk boundaries."""
    [artifact] = await fetch(
        conn,
        "select content from import_job_artifacts where job_id = %s and name = %s",
        job_id,
        PARSE_OUTPUT_ARTIFACT,
    )
    layout = artifact["content"]["chunk_layout"]
    pieces: dict[str, list[str]] = defaultdict(list)
    for row in await chunks_of(conn, job_id):
        index = row["chunk_index"]
        body = row["content"][layout["header_chars"][index] :]
        pieces[row["conversation_id"]].append(body[layout["overlap_chars"][index] :])
    return {key: "".join(parts) for key, parts in pieces.items()}


async def test_generated_real_export_traits_reach_the_chunks_faithfully(
    conn: Conn, store: JobStore, settings: Settings, tmp_path: Path
) -> None:
    config = GeneratorConfig(
        seed=21,
        conversations=60,
        form=ExportForm.ZIP_SHARDS,
        shard_bytes=150_000,
        median_conversation_bytes=8_000,
        rates={
            Feature.CANVAS: 0.4,
            Feature.BRANCHES: 0.2,
            Feature.HIGHLIGHTS: 0.4,
            Feature.VOICE: 0.3,
            Feature.VOICE_VIDEO: 0.3,
            Feature.MISSING_ID: 0.25,
            Feature.DUPLICATES: 0.25,
        },
    )
    summary = write_export(tmp_path / "export.zip", config, collect_facts=True)
    assert summary.expected is not None
    winners = {key: facts for key, facts in summary.expected.items() if facts.messages}
    id_less = {key for key, facts in winners.items() if not facts.has_id}
    duplicated_id_less = {key for key in summary.duplicates if key in id_less}
    assert duplicated_id_less, "some id-less conversation is written twice"
    with zipfile.ZipFile(summary.path) as archive:
        shards_of: dict[str, set[str]] = defaultdict(set)
        for member in summary.members:
            for item in json.loads(archive.read(member)):
                if "id" not in item:
                    shards_of[json.dumps(item, sort_keys=True)].add(member)
    assert any(len(shards) > 1 for shards in shards_of.values()), "copies in other shards"
    assert sum(len(facts.canvas_documents) for facts in winners.values()) >= 5

    job = await claimed_job(conn, store)
    run = await parse(store, settings, job, summary.path)

    result = run.result
    assert result["conversations"] == len(winners)
    assert result["messages"] == sum(len(facts.messages) for facts in winners.values())
    assert result["duplicate_conversations"] == summary.items_written - len(summary.expected)
    assert result["bad_conversations"] == 0
    assert result["canvas_updates_not_applied"] == 0
    assert result["canvas_documents"] >= sum(len(f.canvas_documents) for f in winners.values())

    texts = await transcripts(conn, job.id)
    stored = "\n".join(texts.values())
    assert not any(char in stored for char in MARKER_CHARACTERS), "no marker is stored"
    assert stored.count(IMAGE_PLACEHOLDER) == sum(
        part == IMAGE_PLACEHOLDER
        for facts in winners.values()
        for message in facts.messages
        for part in message.parts
    ), "an [image] for each picture and video, none for voice"

    by_tags = {frozenset(tags([text])): key for key, text in texts.items()}
    assert len(by_tags) == len(texts) == len(winners)
    for facts in winners.values():
        expected = {t for m in facts.messages for part in m.parts for t in tags([part])}
        stored_id = by_tags[frozenset(expected)]
        if facts.has_id:
            assert stored_id == facts.id
        else:
            assert stored_id.startswith(DERIVED_ID_PREFIX), "imported, under a derived id"
        transcript = texts[stored_id]
        for document in facts.canvas_documents:
            assert transcript.count(document) == 1, "each document once, final text"
        assert not [text for text in facts.hidden_texts if text.strip() in transcript]
        assert not [text for text in facts.dead_texts if text.strip() in transcript]


def canvas_call(recipient: str, arguments: object) -> dict[str, Any]:
    return {
        "author": {"role": "assistant"},
        "recipient": recipient,
        "content": {"content_type": "code", "text": json.dumps(arguments)},
        "create_time": 1_750_000_100.0,
    }


def chain_conversation(
    conversation_id: str | None, messages: list[dict[str, Any]], *, title: str = "Chat"
) -> dict[str, Any]:
    mapping = {"root": node("root", None, None)}
    parent = "root"
    for number, message in enumerate(messages):
        mapping[f"n{number}"] = {"id": f"n{number}", "message": message, "parent": parent}
        parent = f"n{number}"
    raw: dict[str, Any] = {
        "title": title,
        "create_time": 1_750_000_000.0,
        "update_time": 1_750_000_500.0,
        "mapping": mapping,
        "current_node": parent,
    }
    if conversation_id is not None:
        raw["id"] = conversation_id
    return raw


def said(role: str, text: str) -> dict[str, Any]:
    return {
        "author": {"role": role},
        "recipient": "all",
        "content": {"content_type": "text", "parts": [text]},
        "create_time": 1_750_000_050.0,
    }


async def test_hostile_canvas_markers_and_id_less_copies_are_bounded_and_faithful(
    conn: Conn, store: JobStore, settings: Settings, tmp_path: Path
) -> None:
    edits = [
        {"updates": [{"pattern": "draft", "replacement": "final"}]},  # applies
        {"updates": [{"pattern": "(a+)+$", "replacement": "x"}]},  # catastrophic: refused
        {"updates": [{"pattern": "(unclosed", "replacement": "x"}]},  # does not compile
        {"updates": [{"pattern": "absent words", "replacement": "x"}]},  # does not match
        {"updates": [{"pattern": ".*", "replacement": "\\g<0>" * 50_000}]},  # would be huge
    ]
    many = [{"updates": [{"pattern": "word", "replacement": f"w{n}"}]} for n in range(10_000)]
    hostile = chain_conversation(
        "hostile",
        [
            said("user", "Write it \ue203please\ue204\ue206 \ue200cite\ue202turn0"),
            canvas_call("canmore.create_textdoc", {"name": "Essay", "content": "a draft " * 9}),
            *[canvas_call("canmore.update_textdoc", edit) for edit in edits],
            said("assistant", "\ue200\ue200nested\ue201 \ue204done\ue203 (#h.1)"),
            canvas_call("canmore.create_textdoc", {"name": "Words", "content": "word " * 5000}),
            *[canvas_call("canmore.update_textdoc", edit) for edit in many],
        ],
    )
    id_less = chain_conversation(
        None, [said("user", "No id here (#n.1)"), said("assistant", "Still kept (#n.2)")]
    )
    export = tmp_path / "export.zip"
    with zipfile.ZipFile(export, "w", zipfile.ZIP_DEFLATED) as archive:
        # The same id-less conversation in two shards, and an ordinary one.
        archive.writestr("conversations-000.json", json.dumps([id_less, hostile]))
        archive.writestr(
            "conversations-001.json",
            json.dumps([conversation("plain", 1.0, ("user", "Hi (#p.1)")), id_less]),
        )

    job = await claimed_job(conn, store)
    run = await parse(store, settings.replace(max_message_bytes=64 * 1024), job, export)

    result = run.result
    assert result["conversations"] == 3
    assert result["duplicate_conversations"] == 1, "the id-less copies are one conversation"
    assert result["bad_conversations"] == 0
    assert result["canvas_documents"] == 2
    applied_words = 10_000 - (result["canvas_updates_not_applied"] - 3)
    assert 0 < applied_words < 10_000, "the work budget stopped the flood of edits"

    texts = await transcripts(conn, job.id)
    [derived] = [key for key in texts if key.startswith(DERIVED_ID_PREFIX)]
    assert set(texts) == {"hostile", "plain", derived}
    assert texts[derived].count("No id here (#n.1)") == 1
    stored = "\n".join(texts.values())
    assert not any(char in stored for char in MARKER_CHARACTERS)
    essay = texts["hostile"]
    assert "User: Write it please" in essay
    assert essay.count("[canvas: Essay]") == 1
    # The last update that applied repeated the whole text, and was cut with the marker.
    assert "a draft a final a draft" in essay and TRUNCATION_MARKER.strip() in essay
    assert essay.count("[canvas: Words]\nw0 w1 w2 ") == 1
