"""Where a job's export comes from: one seam, chosen per job (docs/pipeline.md, "Export sources").

The download stage asks ``run.export_source`` to bring the export into the attempt's private
file; the pipeline picks the source for each job with its ``export_source_for``. Two sources:

* :class:`StorageExportSource`, the daemon's: the job's ``storage_path`` is validated
  (docs/contract.md), then the object is streamed from Supabase Storage with retries, resumes
  and the disk check (:func:`~soulworker.storage.download.download_export`); when a parse
  follows the download, in a helper process (``storage.download_process``).
* :class:`LocalFileExportSource`, ``soulworker import``'s: a file on this machine, copied with the
  same size limit, progress and errors (:func:`~soulworker.storage.local_file.copy_export`).
  The job's ``storage_path`` is then only a label.

Both return the download's :class:`~soulworker.storage.download.DownloadResult`, so the stage
records the same result keys whichever source ran.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import httpx2

from soulworker.jobs.job import ClaimedJob
from soulworker.settings import Settings
from soulworker.storage.download import (
    DownloadObserver,
    DownloadResult,
    ProgressCallback,
    RetryPolicy,
    StorageConfig,
    download_export,
)
from soulworker.storage.download_process import download_following
from soulworker.storage.local_file import copy_export
from soulworker.storage.path import parse_storage_path


class ExportSource(Protocol):
    async def fetch(
        self,
        job: ClaimedJob,
        destination: Path,
        *,
        settings: Settings,
        progress: ProgressCallback,
        retry: RetryPolicy,
        observer: DownloadObserver | None = None,
    ) -> DownloadResult:
        """Write ``job``'s export to ``destination``, reporting ``progress``; job errors
        (``soulworker.storage.errors``) when it cannot. ``retry`` paces a source's own retries.
        ``observer`` follows the bytes as they reach the file (a parse reading the file while
        it grows, docs/pipeline.md "Parsing while the export downloads")."""
        ...


ExportSourceFor = Callable[[ClaimedJob], ExportSource]
"""How a pipeline picks the source of each job it runs."""


class StorageExportSource:
    """Supabase Storage, through the pipeline's shared HTTP client."""

    def __init__(self, config: StorageConfig, http: httpx2.AsyncClient) -> None:
        self.config = config
        self.http = http

    async def fetch(
        self,
        job: ClaimedJob,
        destination: Path,
        *,
        settings: Settings,
        progress: ProgressCallback,
        retry: RetryPolicy,
        observer: DownloadObserver | None = None,
    ) -> DownloadResult:
        path = parse_storage_path(
            job.storage_path,
            user_id=job.user_id,
            allowed_buckets=settings.storage_buckets,
            require_user_folder=settings.require_user_folder,
        )
        if observer is not None:
            # A parse follows this download: a large one moves to a helper process, so that
            # its CPU does not take the parse's GIL (storage/download_process.py says why).
            return await download_following(
                self.config,
                path,
                destination,
                max_bytes=settings.max_export_bytes,
                progress=progress,
                retry=retry,
                client=self.http,
                observer=observer,
                process_min_bytes=settings.download_process_min_bytes,
            )
        return await download_export(
            self.config,
            path,
            destination,
            max_bytes=settings.max_export_bytes,
            progress=progress,
            client=self.http,
            retry=retry,
        )


class LocalFileExportSource:
    """A file on this machine; nothing is requested, so ``retry`` has nothing to pace."""

    def __init__(self, file: Path) -> None:
        self.file = file

    async def fetch(
        self,
        job: ClaimedJob,
        destination: Path,
        *,
        settings: Settings,
        progress: ProgressCallback,
        retry: RetryPolicy,
        observer: DownloadObserver | None = None,
    ) -> DownloadResult:
        return await copy_export(
            self.file,
            destination,
            max_bytes=settings.max_export_bytes,
            progress=progress,
            observer=observer,
        )
