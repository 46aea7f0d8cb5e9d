"""The two export sources of the download stage (docs/pipeline.md, "Export sources").

The local file source must behave like the Storage download wherever HTTP plays no part: the
same bytes in the same private file, the same progress calls' shape, the same refusal (class,
code and message) of an export over SOULWORKER_MAX_EXPORT_BYTES. The Storage side runs against
the loopback stand-in for Supabase Storage used by the download's own tests.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pytest
import tenacity

from soulworker.jobs.job import ClaimedJob, Fence
from soulworker.pipeline.export_source import LocalFileExportSource, StorageExportSource
from soulworker.settings import Settings
from soulworker.storage.download import (
    DEFAULT_RETRY_POLICY,
    StorageConfig,
    download_export,
)
from soulworker.storage.errors import ExportNotFound, ExportTooLarge, InvalidStoragePath
from soulworker.storage.local_file import copy_export
from soulworker.storage.path import parse_storage_path
from soulworker.testing.storage_server import FAKE_SERVICE_JWT, StorageServer

USER = uuid.UUID("0b7e2f4c-1d3a-4e5b-8c6d-9e0f1a2b3c4d")
OBJECT = f"{USER}/export.zip"
EXPORT_BYTES = 2 * 1024 * 1024 + 4321  # two write batches and a partial one
NO_RETRY_WAIT = dataclasses.replace(DEFAULT_RETRY_POLICY, wait=tenacity.wait_none())


class Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    async def __call__(self, done: int, total: int | None) -> None:
        self.calls.append((done, total))


@pytest.fixture
def export(tmp_path: Path) -> Path:
    path = tmp_path / "export.zip"
    path.write_bytes(os.urandom(EXPORT_BYTES))
    return path


@pytest.fixture
def destination(tmp_path: Path) -> Path:
    folder = tmp_path / "attempt"
    folder.mkdir(mode=0o700)
    return folder / "job.export"


def a_job(storage_path: str = f"imports/{OBJECT}") -> ClaimedJob:
    job_id = uuid.uuid4()
    return ClaimedJob(
        id=job_id,
        user_id=USER,
        storage_path=storage_path,
        file_type=None,
        stage=None,
        progress_percent=0,
        attempt=1,
        max_attempts=1,
        priority=0,
        cancel_requested_at=None,
        created_at=datetime.now(UTC),
        checkpoint={},
        result={},
        fence=Fence(job_id, 1, "test"),
        leased_at=0.0,
    )


async def test_the_local_file_lands_whole_and_private_with_the_downloads_progress(
    export: Path, destination: Path
) -> None:
    progress = Progress()
    result = await LocalFileExportSource(export).fetch(
        a_job(), destination, settings=Settings(), progress=progress, retry=NO_RETRY_WAIT
    )
    assert destination.read_bytes() == export.read_bytes()
    assert stat.S_IMODE(destination.stat().st_mode) == 0o600
    assert (result.bytes_written, result.attempts, result.resumes, result.restarts) == (
        EXPORT_BYTES,
        1,
        0,
        0,
    )
    assert progress.calls[0] == (0, EXPORT_BYTES)
    assert progress.calls[-1] == (EXPORT_BYTES, EXPORT_BYTES)
    done = [call[0] for call in progress.calls]
    assert done == sorted(done) and len(done) >= 3, "reported per batch, never going back"


async def test_both_sources_bring_the_same_bytes(export: Path, tmp_path: Path) -> None:
    via_storage = tmp_path / "storage.export"
    via_file = tmp_path / "file.export"
    with StorageServer(service_key=FAKE_SERVICE_JWT) as server:
        server.put_file("imports", OBJECT, export)
        async with httpx2.AsyncClient(timeout=5.0) as http:
            storage = StorageExportSource(StorageConfig(server.url, FAKE_SERVICE_JWT), http)
            stored = await storage.fetch(
                a_job(),
                via_storage,
                settings=Settings(),
                progress=Progress(),
                retry=NO_RETRY_WAIT,
            )
    copied = await LocalFileExportSource(export).fetch(
        a_job(), via_file, settings=Settings(), progress=Progress(), retry=NO_RETRY_WAIT
    )
    assert via_storage.read_bytes() == via_file.read_bytes() == export.read_bytes()
    assert stored.bytes_written == copied.bytes_written == EXPORT_BYTES


async def test_an_export_over_the_limit_is_refused_by_both_sources_alike(
    export: Path, tmp_path: Path
) -> None:
    limit = 1024 * 1024
    with StorageServer(service_key=FAKE_SERVICE_JWT) as server:
        server.put_file("imports", OBJECT, export)
        with pytest.raises(ExportTooLarge) as by_storage:
            await download_export(
                StorageConfig(server.url, FAKE_SERVICE_JWT),
                parse_storage_path(f"imports/{OBJECT}", user_id=USER),
                tmp_path / "storage.export",
                max_bytes=limit,
                retry=NO_RETRY_WAIT,
            )
    destination = tmp_path / "file.export"
    with pytest.raises(ExportTooLarge) as by_file:
        await LocalFileExportSource(export).fetch(
            a_job(),
            destination,
            settings=Settings().replace(max_export_bytes=limit),
            progress=Progress(),
            retry=NO_RETRY_WAIT,
        )
    assert by_file.value.code == by_storage.value.code == "export_too_large"
    assert by_file.value.message == by_storage.value.message
    assert "1.0 MiB" in by_file.value.message
    assert not destination.exists(), "refused before a byte is written"


async def test_a_file_that_grows_past_the_limit_is_stopped_by_counting(
    export: Path, destination: Path
) -> None:
    # The size is checked up front; the count while copying catches a file that grew since.
    progress = Progress()

    async def grow_then_report(done: int, total: int | None) -> None:
        await progress(done, total)
        if done == 0:
            with export.open("ab") as handle:
                handle.write(os.urandom(1024 * 1024))

    with pytest.raises(ExportTooLarge) as caught:
        await copy_export(export, destination, max_bytes=EXPORT_BYTES, progress=grow_then_report)
    assert caught.value.code == "export_too_large"
    assert destination.stat().st_size <= EXPORT_BYTES


async def test_a_missing_file_is_export_not_found(tmp_path: Path, destination: Path) -> None:
    with pytest.raises(ExportNotFound) as caught:
        await copy_export(tmp_path / "gone.zip", destination, max_bytes=1024)
    assert caught.value.code == "export_not_found"
    assert str(tmp_path) not in caught.value.message, "no local path in the job's error"


async def test_only_the_storage_source_checks_the_storage_path(
    export: Path, destination: Path
) -> None:
    outside = a_job(storage_path=f"imports/{uuid.uuid4()}/export.zip")
    async with httpx2.AsyncClient() as http:
        storage = StorageExportSource(StorageConfig("http://127.0.0.1:9", FAKE_SERVICE_JWT), http)
        with pytest.raises(InvalidStoragePath):
            await storage.fetch(
                outside, destination, settings=Settings(), progress=Progress(), retry=NO_RETRY_WAIT
            )
    # For the local source the storage path is only the job's label.
    result = await LocalFileExportSource(export).fetch(
        outside, destination, settings=Settings(), progress=Progress(), retry=NO_RETRY_WAIT
    )
    assert result.bytes_written == EXPORT_BYTES
