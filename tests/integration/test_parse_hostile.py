"""The parse stage against hostile and extreme uploads, in-process on a real Postgres: what it
writes to the job result stays small, the duplicate registry moves to disk and still decides
right, the export's temp file goes as soon as it is read, a long stretch without dialogue
does not trip the statement timeout of an open COPY, the limits come from the settings, and a
stopped parse stops its thread."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from soulworker import db
from soulworker.conversations import duplicates
from soulworker.export.errors import ExportError
from soulworker.jobs.context import JobContext
from soulworker.jobs.job import ClaimedJob
from soulworker.jobs.store import JobStore
from soulworker.pipeline.export_source import LocalFileExportSource
from soulworker.pipeline.import_run import ImportRun
from soulworker.pipeline.parse_counts import MAX_CONTENT_TYPES
from soulworker.pipeline.parse_stage import ParseStage
from soulworker.settings import Settings
from tests.fakes.hostile_exports import tiny_conversation, write_tiny_conversations

pytestmark = pytest.mark.db

Conn = psycopg.AsyncConnection[DictRow]


@asynccontextmanager
async def job_store(settings: Settings) -> AsyncIterator[JobStore]:
    """A job store on its own pool, whose sessions get ``settings``' statement timeout."""
    pool: AsyncConnectionPool[Conn] = db.create_pool(settings, "test parse", max_size=4)
    await pool.open(wait=True)
    try:
        yield JobStore(pool, lease_seconds=30)
    finally:
        await pool.close()


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[JobStore]:
    async with job_store(settings) as opened:
        yield opened


async def claimed_job(conn: Conn, store: JobStore) -> ClaimedJob:
    user = uuid.uuid4()
    await conn.execute(
        "insert into import_jobs (user_id, storage_path) values (%s, %s)",
        (user, f"imports/{user}/export.zip"),
    )
    job = await store.claim("parse-test")
    assert job is not None
    return job


def import_run(store: JobStore, settings: Settings, job: ClaimedJob, export: Path) -> ImportRun:
    return ImportRun(
        ctx=JobContext(job, store, progress_interval_seconds=0),
        settings=settings,
        export_path=export,
        export_source=LocalFileExportSource(export),  # unused: the parse reads export_path
        result=dict(job.result),
    )


async def parse(store: JobStore, settings: Settings, job: ClaimedJob, export: Path) -> ImportRun:
    run = import_run(store, settings, job, export)
    await ParseStage().run(run)
    return run


async def chunk_rows(conn: Conn, job_id: uuid.UUID) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "select conversation_id, content from conversation_chunks where import_job_id = %s "
        "order by chunk_index",
        (job_id,),
    )
    return [dict(row) for row in await cur.fetchall()]


def typed_conversation(number: int, content_types: list[str], update_time: float = 1.0) -> Any:
    """A conversation whose user messages have the given (unknown) content types."""
    conversation = tiny_conversation(number)
    mapping: dict[str, Any] = {}
    parent = None
    for index, content_type in enumerate(content_types):
        mapping[f"u{index}"] = {
            "id": f"u{index}",
            "parent": parent,
            "message": {
                "author": {"role": "user"},
                "content": {"content_type": content_type, "parts": [f"text {index}"]},
            },
        }
        parent = f"u{index}"
    conversation.update(mapping=mapping, current_node=parent, update_time=update_time)
    return conversation


def write_json(path: Path, items: list[Any]) -> Path:
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


# -- the export's temp file ----------------------------------------------------------------------


async def test_the_export_file_is_removed_as_soon_as_it_is_parsed(
    conn: Conn, store: JobStore, settings: Settings, tmp_path: Path
) -> None:
    export = write_json(tmp_path / "job.export", [tiny_conversation(n) for n in range(3)])
    job = await claimed_job(conn, store)
    run = await parse(store, settings, job, export)
    assert run.result["conversations"] == 3
    assert not export.exists()
    assert list(tmp_path.iterdir()) == [], "nothing else of the parse is left behind either"


# -- what goes into the job result ---------------------------------------------------------------


async def test_unknown_content_types_in_the_result_are_bounded_and_the_rest_counted(
    conn: Conn, store: JobStore, settings: Settings, tmp_path: Path
) -> None:
    # 400 distinct valid names, 50 names of 10 KB, and names with characters no content type
    # has: before the bound this made a result row of several MB.
    names = [f"new_type_{n}" for n in range(400)]
    names += ["x" * 10_000 + str(n) for n in range(50)]
    names += ["white space", "semi;colon", "é"]
    conversations = [typed_conversation(n, [name]) for n, name in enumerate(names)]
    # A replaced copy's types leave the counts, whichever bucket they went to.
    conversations.append(typed_conversation(0, ["new_type_0", "x" * 10_000], update_time=2.0))
    conversations.append(typed_conversation(420, ["late_type"] * 3, update_time=2.0))
    job = await claimed_job(conn, store)
    run = await parse(store, settings, job, write_json(tmp_path / "job.export", conversations))
    named = run.result["unknown_content_types"]
    assert len(named) == MAX_CONTENT_TYPES
    assert named == {f"new_type_{n}": 1 for n in range(MAX_CONTENT_TYPES)}
    # One message per conversation, but copy 0 (one message) was replaced by a copy with two
    # and copy 420 (one, under a 10 KB name) by one with three ("late_type": no room left).
    assert run.result["unknown_content_types_omitted"] == len(names) - 1 + 2 - 1 + 3 - 50
    assert len(json.dumps(run.result)) < 8_000


# -- the duplicate registry on disk ----------------------------------------------------------------


async def test_duplicates_are_resolved_the_same_once_the_registry_is_on_disk(
    conn: Conn,
    store: JobStore,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(duplicates, "DEFAULT_MEMORY_BYTES", 20 * duplicates.RECORD_BYTES)
    monkeypatch.setattr(duplicates, "WRITE_BUFFER_RECORDS", 32)
    first = [tiny_conversation(n) for n in range(300)]
    newer = []
    for n in range(0, 300, 3):  # every third conversation again, newer, with other text
        copy = tiny_conversation(n)
        copy["update_time"] = float(copy["update_time"]) + 10  # type: ignore[arg-type]
        copy["mapping"]["b"]["message"]["content"]["parts"] = [f"newer {n}"]  # type: ignore[index]
        newer.append(copy)
    older = [tiny_conversation(n) | {"update_time": 1.0} for n in range(1, 300, 3)]
    export = write_json(tmp_path / "job.export", first + newer + older)
    job = await claimed_job(conn, store)
    run = await parse(store, settings, job, export)
    assert run.result["conversations"] == 300
    assert run.result["duplicate_conversations"] == 200
    rows = await chunk_rows(conn, job.id)
    assert len(rows) == 300
    by_id = {row["conversation_id"]: row["content"] for row in rows}
    for n in range(300):
        expected = f"newer {n}" if n % 3 == 0 else "hello"
        assert expected in by_id[str(tiny_conversation(n)["id"])]
    assert list(tmp_path.iterdir()) == [], "the registry's file went with the export"


# -- a long stretch with nothing to write --------------------------------------------------------


async def test_a_long_stretch_without_dialogue_keeps_the_copy_within_the_statement_timeout(
    conn: Conn, settings: Settings, tmp_path: Path
) -> None:
    # 1 s is the smallest statement timeout the settings allow; the stretch of 250,000
    # conversations without dialogue takes longer than that to parse on any machine.
    strict = settings.replace(statement_timeout_seconds=1.0)
    silent = [{"id": f"s{n}", "title": "t", "mapping": {}} for n in range(250_000)]
    items = [tiny_conversation(0), *silent, tiny_conversation(1)]
    export = write_json(tmp_path / "job.export", items)
    async with job_store(strict) as store:
        job = await claimed_job(conn, store)
        run = await parse(store, strict, job, export)
    assert run.result["conversations"] == 2
    assert run.result["conversations_without_dialogue"] == 250_000
    assert len(await chunk_rows(conn, job.id)) == 2


# -- limits from the settings ------------------------------------------------------------------


async def test_the_conversation_size_limit_is_the_setting(
    conn: Conn, store: JobStore, settings: Settings, tmp_path: Path
) -> None:
    big = tiny_conversation(1) | {"padding": "p" * 300_000}
    export = write_json(tmp_path / "job.export", [tiny_conversation(0), big])
    job = await claimed_job(conn, store)
    with pytest.raises(ExportError) as caught:
        await parse(store, settings.replace(max_conversation_bytes=256 * 1024), job, export)
    assert caught.value.code == "conversation_too_large"
    assert "larger than 256 KiB" in caught.value.message


async def test_the_zip_entry_limit_is_the_setting(
    conn: Conn, store: JobStore, settings: Settings, tmp_path: Path
) -> None:
    from tests.fakes.hostile_exports import write_many_entry_zip

    export = write_many_entry_zip(tmp_path / "job.export", 101)
    job = await claimed_job(conn, store)
    with pytest.raises(ExportError) as caught:
        await parse(store, settings.replace(max_zip_entries=100), job, export)
    assert caught.value.code == "zip_too_many_entries"
    job = await claimed_job(conn, store)
    export = write_many_entry_zip(tmp_path / "job.export", 100)
    run = await parse(store, settings.replace(max_zip_entries=100), job, export)
    assert run.result["conversations"] == 3


# -- stopping --------------------------------------------------------------------------------------


async def test_a_cancelled_parse_stops_its_thread_and_writes_nothing(
    conn: Conn, store: JobStore, settings: Settings, tmp_path: Path
) -> None:
    export = write_tiny_conversations(tmp_path / "job.export", 100_000)  # ~20 s to parse
    job = await claimed_job(conn, store)
    run = import_run(store, settings, job, export)
    before = {thread.ident for thread in threading.enumerate()}
    task = asyncio.create_task(ParseStage().run(run))
    await asyncio.sleep(1.0)
    parse_threads = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert [t.name for t in parse_threads] == ["soulworker-parse"], "the parse runs in a thread"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    parse_threads[0].join(timeout=5)
    assert not parse_threads[0].is_alive()
    assert await chunk_rows(conn, job.id) == []
