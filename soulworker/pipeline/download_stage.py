"""Stage 1, download (0–20 % by bytes): the export from its source to a private temp file.

The source is the job's (``run.export_source``, docs/pipeline.md "Export sources"): Supabase
Storage for the daemon, which validates the storage path before any request (docs/contract.md),
or a local file for ``soulworker import``. The file lives only as long as the attempt, so this
stage keeps no checkpoint entry: it is done once its file is on hand in this attempt, or when no
stage still to run reads it (``ImportRun.export_needed``, which the pipeline sets from the
parse's own doneness). So a resumed job that has not finished the parse downloads again, and one
that has skips both stages. Its result is committed with the parse's checkpoint
(``ImportRun.carry``).
"""

from __future__ import annotations

import time

from soulworker.pipeline.import_run import ImportRun
from soulworker.pipeline.stages import DOWNLOAD
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
                "export_bytes": download.bytes_written,
                "download": {
                    "attempts": download.attempts,
                    "resumes": download.resumes,
                    "restarts": download.restarts,
                    "mib_per_second": round(download.mib_per_second, 1),
                },
                **run.record_stage_seconds(DOWNLOAD.name, time.monotonic() - started),
            }
        )
