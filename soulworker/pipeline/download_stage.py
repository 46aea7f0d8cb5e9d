"""Stage 1, download (0–20 % by bytes): the export from its source to a private temp file.

The source is the job's (``run.export_source``, docs/pipeline.md "Export sources"): Supabase
Storage for the daemon, which validates the storage path before any request (docs/contract.md),
or a local file for ``soulworker import``. The file lives only as long as the attempt, so this
stage keeps no checkpoint entry: it is done once its file is on hand in this attempt, or when no
stage still to run reads it (``ImportRun.export_needed``, which the pipeline sets from the
parse's own doneness). So a resumed job that has not finished the parse downloads again, and one
that has skips both stages. Its result is committed with the parse's checkpoint
(``ImportRun.carry``).

With ``SOULWORKER_PARSE_DURING_DOWNLOAD=on`` (the default) the fetch runs on as a task of its own
once this stage has started it, and the parse stage reads the file while it grows
(``download_in_flight``; docs/pipeline.md, "Parsing while the export downloads"): the parse then
reports the progress of both and commits the download's result with its own.
"""

from __future__ import annotations

import asyncio
import time

from soulworker.growing_file import GrowingFile
from soulworker.pipeline.download_in_flight import (
    DownloadInFlight,
    download_result_patch,
    fetch_following,
)
from soulworker.pipeline.import_run import ImportRun
from soulworker.pipeline.stages import DOWNLOAD, StageProgress
from soulworker.storage.download import DEFAULT_RETRY_POLICY, RetryPolicy


class DownloadStage:
    spec = DOWNLOAD
    keeps: tuple[str, ...] = ()

    def __init__(self, retry: RetryPolicy = DEFAULT_RETRY_POLICY) -> None:
        # The source's own retries (before the job-level retry); tests pass faster waits.
        self.retry = retry

    def is_done(self, run: ImportRun) -> bool:
        return run.downloaded or not run.export_needed

    async def run(self, run: ImportRun) -> None:
        started = time.monotonic()
        # Enter the stage first, so a refused path is recorded as a download failure in the
        # job's error history (not under no stage at all).
        progress = run.progress(DOWNLOAD)
        await progress.begin()
        if run.settings.parse_during_download:
            self._start_following(run, progress)
            return

        async def report(done: int, total: int | None) -> None:
            if total:
                await progress.report(done / total)

        download = await run.export_source.fetch(
            run.ctx.job,
            run.export_path,
            settings=run.settings,
            progress=report,
            retry=self.retry,
        )
        await progress.report(1.0)
        run.downloaded = True
        run.carry(
            {
                **download_result_patch(download),
                **run.record_stage_seconds(DOWNLOAD.name, time.monotonic() - started),
            }
        )

    def _start_following(self, run: ImportRun, progress: StageProgress) -> None:
        """Start the fetch as a task the parse follows (``run.download``); the parse stage
        collects its result, and the pipeline stops it if the attempt ends first."""
        flight = DownloadInFlight(GrowingFile(run.export_path), progress)
        fetch = run.export_source.fetch(
            run.ctx.job,
            run.export_path,
            settings=run.settings,
            progress=flight.progress,
            retry=self.retry,
            observer=flight.growing,
        )
        flight.task = asyncio.create_task(fetch_following(flight, fetch), name="download")
        run.download = flight
        run.downloaded = True
