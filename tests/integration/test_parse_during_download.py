"""Parsing while the export downloads (docs/pipeline.md, "Parsing while the export downloads"):
the download and parse stages in-process, against a real Postgres and the fake Supabase Storage
on loopback, throttled so the parse really runs beside the download. Whatever happens to the
download (a dropped connection resumed with Range, a changed object, a failure), the parse's
result is exactly the sequential path's, or nothing is visible at all."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import struct
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import psycopg
import pytest
import structlog
import tenacity
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from soulworker import db
from soulworker.export.errors import ExportError
from soulworker.jobs.context import JobContext
from soulworker.jobs.job import ClaimedJob
from soulworker.jobs.store import JobStore
from soulworker.pipeline.download_stage import DownloadStage
from soulworker.pipeline.export_source import StorageExportSource
from soulworker.pipeline.import_run import ImportRun
from soulworker.pipeline.parse_stage import ParseStage
from soulworker.settings import Settings
from soulworker.storage.download import RetryPolicy, StorageConfig
from soulworker.storage.errors import StorageUnavailable
from soulworker.testing.export_generator import ExportForm, GeneratorConfig, write_export
from soulworker.testing.storage_server import (
    FAKE_SERVICE_JWT,
    DropConnection,
    StorageServer,
)
from tests.unit.test_zip_stream import with_descriptors

pytestmark = pytest.mark.db

Conn = psycopg.AsyncConnection[DictRow]
BUCKET = "imports"
RATE = 8 * 1024 * 1024
"""Bytes per second the fake Storage serves: a ~2 MB export takes ~0.25 s, so the parse (tens
of MB/s) catches up with the download and waits for it many times."""
FAST_RETRY = RetryPolicy(wait=tenacity.wait_none(), max_attempts_without_progress=3)

# The result keys that describe the export (not the timing or the download's own history).
SAME_RESULT_KEYS = (
    "conversations",
    "messages",
    "chunks",
    "duplicate_conversations",
    "bad_conversations",
    "uncompressed_bytes",
    "persona_signals",
)


FALLBACK_EVENT = "reading the ZIP export once it is whole"
"""What the parse stage logs when a ZIP read as it arrives must be read once whole."""


@contextlib.contextmanager
def captured_logs() -> Iterator[list[structlog.typing.EventDict]]:
    """Every structlog event at any level, whatever level the session configured."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**saved)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[JobStore]:
    pool: AsyncConnectionPool[Conn] = db.create_pool(settings, "test follow", max_size=6)
    await pool.open(wait=True)
    try:
        yield JobStore(pool, lease_seconds=30)
    finally:
        await pool.close()


@pytest.fixture
def storage() -> Iterator[StorageServer]:
    with StorageServer(service_key=FAKE_SERVICE_JWT) as server:
        server.throttle(RATE)
        yield server


def export(tmp_path: Path, form: ExportForm, *, seed: int = 1, size: int = 2_000_000) -> Path:
    suffix = {ExportForm.GZIP: ".json.gz", ExportForm.JSON: ".json"}.get(form, ".zip")
    path = tmp_path / f"export-{form.value}-{seed}-{size}{suffix}"
    if not path.exists():
        write_export(path, GeneratorConfig(seed=seed, target_bytes=size, form=form))
    return path


async def claimed_job(conn: Conn, store: JobStore, user: uuid.UUID) -> ClaimedJob:
    await conn.execute(
        "insert into import_jobs (user_id, storage_path) values (%s, %s)",
        (user, f"{BUCKET}/{user}/export.zip"),
    )
    job = await store.claim("follow-test")
    assert job is not None
    return job


async def import_through_storage(
    conn: Conn,
    store: JobStore,
    settings: Settings,
    storage: StorageServer,
    tmp_path: Path,
    export_file: Path,
    *,
    follow: bool,
    faults: list[DropConnection] = (),  # type: ignore[assignment]
) -> tuple[ImportRun, ClaimedJob]:
    """Download and parse ``export_file`` as the pipeline does; the run and its job."""
    user = uuid.uuid4()
    storage.put_file(BUCKET, f"{user}/export.zip", export_file)
    for fault in faults:
        storage.add_fault(fault)
    job = await claimed_job(conn, store, user)
    config = StorageConfig(base_url=storage.url, service_key=FAKE_SERVICE_JWT)
    async with httpx2.AsyncClient(timeout=config.timeout) as http:
        run = ImportRun(
            ctx=JobContext(job, store, progress_interval_seconds=0),
            settings=dataclasses.replace(settings, parse_during_download=follow),
            export_path=tmp_path / f"{job.id}.export",
            export_source=StorageExportSource(config, http),
            result=dict(job.result),
        )
        try:
            await DownloadStage(FAST_RETRY).run(run)
            assert (run.download is not None) is follow
            await ParseStage().run(run)
        finally:
            if run.download is not None:  # what the pipeline does when a stage fails
                await run.download.stop()
    return run, job


async def chunk_rows(conn: Conn, job_id: uuid.UUID) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "select chunk_index, conversation_id, content, message_count from conversation_chunks "
        "where import_job_id = %s order by chunk_index",
        (job_id,),
    )
    return [dict(row) for row in await cur.fetchall()]


async def artifact_of(conn: Conn, job_id: uuid.UUID) -> Any:
    cur = await conn.execute(
        "select content from import_job_artifacts where job_id = %s and name = 'parse_output'",
        (job_id,),
    )
    row = await cur.fetchone()
    return None if row is None else row["content"]


PROGRESS_LOG = """
create table test_progress_log (
    id bigserial primary key, job uuid not null, stage text, percent integer
);
create function test_log_progress() returns trigger language plpgsql as $$
begin
    insert into test_progress_log (job, stage, percent)
    values (new.id, new.stage, new.progress_percent);
    return new;
end $$;
create trigger test_log_progress after update on import_jobs for each row
    when (old.progress_percent is distinct from new.progress_percent
          or old.stage is distinct from new.stage)
    execute function test_log_progress();
"""


async def progress_writes(conn: Conn, job_id: uuid.UUID) -> list[tuple[str, int]]:
    cur = await conn.execute(
        "select stage, percent from test_progress_log where job = %s order by id", (job_id,)
    )
    return [(row["stage"], row["percent"]) for row in await cur.fetchall()]


def check_progress(writes: list[tuple[str, int]]) -> None:
    """Never back, each stage in its range, the download by bytes before the parse."""
    percents = [percent for _, percent in writes]
    assert percents == sorted(percents), writes
    stages = [stage for i, (stage, _) in enumerate(writes) if i == 0 or writes[i - 1][0] != stage]
    assert stages == ["download", "parse"], writes
    ranges = {"download": (0, 20), "parse": (20, 35)}
    for stage, percent in writes:
        low, high = ranges[stage]
        assert low <= percent <= high, writes


def same_result(run: ImportRun) -> dict[str, Any]:
    return {key: run.result.get(key) for key in SAME_RESULT_KEYS}


@pytest.mark.parametrize(
    "form",
    [
        ExportForm.JSON,
        ExportForm.GZIP,
        ExportForm.ZIP_SHARDS,  # read from its local headers as it arrives
        ExportForm.ZIP,
        ExportForm.ZIP_FOLDER,
    ],
)
async def test_following_the_download_gives_exactly_the_sequential_result(
    conn: Conn,
    store: JobStore,
    settings: Settings,
    storage: StorageServer,
    tmp_path: Path,
    form: ExportForm,
) -> None:
    path = export(tmp_path, form)
    sequential, first = await import_through_storage(
        conn, store, settings, storage, tmp_path, path, follow=False
    )
    with captured_logs() as logs:
        following, second = await import_through_storage(
            conn, store, settings, storage, tmp_path, path, follow=True
        )
    # Every ZIP our generator writes (zipfile, sizes in the local headers) is read as it arrives.
    assert not [log for log in logs if log["event"] == FALLBACK_EVENT]
    assert same_result(following) == same_result(sequential)
    assert following.result["chunks"] > 20
    expected = await chunk_rows(conn, first.id)
    assert await chunk_rows(conn, second.id) == expected
    assert await artifact_of(conn, second.id) == await artifact_of(conn, first.id)
    # The download's keys are committed with the parse, as on the sequential path.
    assert following.result["export_bytes"] == path.stat().st_size
    assert following.result["download"]["attempts"] == 1
    assert set(following.result["stage_seconds"]) == {"download", "parse"}
    cur = await conn.execute("select * from import_jobs where id = %s", (second.id,))
    row = await cur.fetchone()
    assert row is not None
    assert row["checkpoint"]["parse"] == {"done": True, "chunks": len(expected)}
    assert row["result"]["export_bytes"] == path.stat().st_size
    assert not any(tmp_path.glob("*.export")), "the export file is gone after the parse"


async def test_a_dropped_connection_resumes_under_the_parse(
    conn: Conn, store: JobStore, settings: Settings, storage: StorageServer, tmp_path: Path
) -> None:
    await conn.execute(PROGRESS_LOG)
    path = export(tmp_path, ExportForm.JSON)
    sequential, first = await import_through_storage(
        conn, store, settings, storage, tmp_path, path, follow=False
    )
    storage.clear_requests()
    half = path.stat().st_size // 2
    following, second = await import_through_storage(
        conn,
        store,
        settings,
        storage,
        tmp_path,
        path,
        follow=True,
        faults=[DropConnection(after_bytes=half)],
    )
    ranges = [request.range for request in storage.requests if request.method == "GET"]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert following.result["download"]["resumes"] == 1
    assert following.result["download"]["restarts"] == 0
    assert same_result(following) == same_result(sequential)
    assert await chunk_rows(conn, second.id) == await chunk_rows(conn, first.id)
    writes = await progress_writes(conn, second.id)
    check_progress(writes)
    assert any(stage == "download" and 0 < p < 20 for stage, p in writes), "by bytes"


# From 16 MB of JSON on, the structure guard runs in the scan helper, which follows the download
# too: a restart must end it and start a new one with the new pass.
@pytest.mark.parametrize("size", [2_000_000, 20_000_000], ids=["guard-in-process", "scan-helper"])
async def test_a_changed_object_restarts_download_and_parse_and_gives_the_new_export(
    conn: Conn,
    store: JobStore,
    settings: Settings,
    storage: StorageServer,
    tmp_path: Path,
    size: int,
) -> None:
    await conn.execute(PROGRESS_LOG)
    old = export(tmp_path, ExportForm.JSON, seed=1, size=size)
    new = export(tmp_path, ExportForm.JSON, seed=2, size=size)
    expected_run, expected_job = await import_through_storage(
        conn, store, settings, storage, tmp_path, new, follow=False
    )
    # The old object is replaced once 60 % of it was sent: by then the parse has read (and
    # sent rows of) most of what had arrived.
    cut = int(old.stat().st_size * 0.6)
    following, job = await import_through_storage(
        conn,
        store,
        settings,
        storage,
        tmp_path,
        old,
        follow=True,
        faults=[DropConnection(after_bytes=cut, replace_with=new)],
    )
    assert following.result["download"]["restarts"] == 1
    assert following.result["export_bytes"] == new.stat().st_size
    assert same_result(following) == same_result(expected_run)
    rows = await chunk_rows(conn, job.id)
    assert rows == await chunk_rows(conn, expected_job.id), "only the new object's chunks"
    assert await artifact_of(conn, job.id) == await artifact_of(conn, expected_job.id)
    # The download started over from 0 bytes; what the job showed never went back.
    check_progress(await progress_writes(conn, job.id))


async def test_a_download_failing_mid_parse_leaves_nothing_visible(
    conn: Conn, store: JobStore, settings: Settings, storage: StorageServer, tmp_path: Path
) -> None:
    path = export(tmp_path, ExportForm.JSON)
    size = path.stat().st_size
    # The first request brings 70 % of the export, then every retry drops before a byte:
    # the download gives up while the parse has already sent rows of what arrived.
    faults = [DropConnection(after_bytes=int(size * 0.7))] + [DropConnection(after_bytes=0)] * 5
    with pytest.raises(StorageUnavailable):
        await import_through_storage(
            conn, store, settings, storage, tmp_path, path, follow=True, faults=faults
        )
    cur = await conn.execute("select id, checkpoint, result from import_jobs")
    [row] = await cur.fetchall()
    assert "parse" not in row["checkpoint"]
    assert await chunk_rows(conn, row["id"]) == [], "rows sent before the failure rolled back"
    assert await artifact_of(conn, row["id"]) is None
    assert not any(tmp_path.glob("*.export.seen")), "the parse's scratch files are gone"


async def test_an_upload_that_is_no_export_fails_before_its_download_ends(
    conn: Conn, store: JobStore, settings: Settings, storage: StorageServer, tmp_path: Path
) -> None:
    await conn.execute(PROGRESS_LOG)
    upload = tmp_path / "not-an-export.txt"
    upload.write_bytes(b"Dear diary, " * 1_000_000)  # 12 MB of text: 1.5 s at the test's rate
    with pytest.raises(ExportError) as caught:
        await import_through_storage(conn, store, settings, storage, tmp_path, upload, follow=True)
    assert caught.value.code == "not_an_export"
    assert storage.wait_idle()
    [request] = storage.requests
    assert request.bytes_sent < upload.stat().st_size // 2, "the download was stopped early"
    cur = await conn.execute("select id, stage, checkpoint from import_jobs")
    [row] = await cur.fetchall()
    # The failure is the parse's: the job's stage says so (its error history records it).
    assert row["stage"] == "parse"
    assert await chunk_rows(conn, row["id"]) == []
    writes = await progress_writes(conn, row["id"])
    assert [percent for _, percent in writes] == sorted(percent for _, percent in writes)


async def test_a_truncated_export_fails_as_the_parse_s_once_the_download_is_done(
    conn: Conn, store: JobStore, settings: Settings, storage: StorageServer, tmp_path: Path
) -> None:
    data = export(tmp_path, ExportForm.JSON).read_bytes()
    damaged = tmp_path / "damaged.json"
    damaged.write_bytes(data[: len(data) - 40])  # the last conversation is cut off
    with pytest.raises(ExportError) as caught:
        await import_through_storage(conn, store, settings, storage, tmp_path, damaged, follow=True)
    assert caught.value.code == "export_truncated"
    cur = await conn.execute("select id, stage, checkpoint from import_jobs")
    [row] = await cur.fetchall()
    assert row["stage"] == "parse", "the error history will name the parse"
    assert "parse" not in row["checkpoint"]
    assert await chunk_rows(conn, row["id"]) == []


def _rewritten(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def reordered(data: bytes) -> bytes:
    """The same archive with its conversation shards in reverse archive order."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        infos = source.infolist()
        shards = [info for info in infos if info.filename.startswith("conversations-")]
        assert len(shards) > 1
        rest = [info for info in infos if info not in shards]
        for info in [*rest, *reversed(shards)]:
            target.writestr(info, source.read(info))
    return out.getvalue()


# Layouts of a ZIP export, from tests/unit/test_zip_stream.py: a data descriptor after each
# deflated member (streams), after each stored member (cannot: read once whole), shards out of
# the order they are read in (read once whole).
ZIP_LAYOUTS = {
    "deflate-descriptors": with_descriptors,
    "stored-descriptors": lambda data: with_descriptors(data, zipfile.ZIP_STORED),
    "shards-out-of-order": reordered,
}


STREAMING_LAYOUTS = {"deflate-descriptors"}


@pytest.mark.parametrize("layout", list(ZIP_LAYOUTS))
async def test_zip_layouts_give_the_sequential_result_whether_they_stream_or_not(
    conn: Conn,
    store: JobStore,
    settings: Settings,
    storage: StorageServer,
    tmp_path: Path,
    layout: str,
) -> None:
    source = tmp_path / "sharded.zip"
    config = GeneratorConfig(
        seed=4, target_bytes=3_000_000, form=ExportForm.ZIP_SHARDS, shard_bytes=500_000
    )
    write_export(source, config)
    data = source.read_bytes()
    path = _rewritten(tmp_path, f"{layout}.zip", ZIP_LAYOUTS[layout](data))
    sequential, first = await import_through_storage(
        conn, store, settings, storage, tmp_path, path, follow=False
    )
    with captured_logs() as logs:
        following, second = await import_through_storage(
            conn, store, settings, storage, tmp_path, path, follow=True
        )
    fallbacks = [log for log in logs if log["event"] == FALLBACK_EVENT]
    assert len(fallbacks) == (0 if layout in STREAMING_LAYOUTS else 1), fallbacks
    assert same_result(following) == same_result(sequential)
    assert following.result["chunks"] > 20
    assert await chunk_rows(conn, second.id) == await chunk_rows(conn, first.id)
    assert await artifact_of(conn, second.id) == await artifact_of(conn, first.id)
    assert following.result["download"]["attempts"] == 1, "a fallback downloads once"


async def test_a_directory_disagreeing_with_the_local_headers_fails_as_sequentially(
    conn: Conn, store: JobStore, settings: Settings, storage: StorageServer, tmp_path: Path
) -> None:
    data = export(tmp_path, ExportForm.ZIP_SHARDS).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo("conversations-000.json")
    directory = data.index(b"PK\x01\x02")
    crc = struct.pack("<I", info.CRC)
    wrong = struct.pack("<I", info.CRC ^ 0xFFFF)
    # The shard's CRC-32 in the central directory only: its local header keeps the right one.
    patched = data[:directory] + data[directory:].replace(crc, wrong, 1)
    assert patched != data
    path = _rewritten(tmp_path, "crc.zip", patched)
    errors = []
    for follow in (False, True):
        with pytest.raises(ExportError) as caught:
            await import_through_storage(
                conn, store, settings, storage, tmp_path, path, follow=follow
            )
        errors.append((caught.value.code, str(caught.value)))
    assert errors[0] == errors[1]
    assert errors[0][0] == "corrupt_archive"
    cur = await conn.execute("select id from import_jobs")
    for row in await cur.fetchall():
        assert await chunk_rows(conn, row["id"]) == []
