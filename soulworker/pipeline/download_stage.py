"""Stage 1, download (0–20 % by bytes): the export from Supabase Storage to a private temp file.

The storage path is validated before any request (DESIGN §9). The file lives only as long as the
attempt, so this stage writes no checkpoint of its own: a resumed job that has not finished the
parse downloads again, and one that has skips both stages.
"""

from __future__ import annotations

import time

from soulworker.pipeline.import_run import ImportRun
from soulworker.pipeline.stages import DOWNLOAD, PARSE
from soulworker.pipeline.storage_download import download_export
from soulworker.pipeline.storage_path import parse_storage_path


class DownloadStage:
    spec = DOWNLOAD

    def is_done(self, run: ImportRun) -> bool:
        return run.stage_done(PARSE.name)

    async def run(self, run: ImportRun) -> None:
        started = time.monotonic()
        settings = run.settings
        job = run.ctx.job
        path = parse_storage_path(
            job.storage_path,
            user_id=job.user_id,
            allowed_buckets=settings.storage_buckets,
            require_user_folder=settings.require_user_folder,
        )
        progress = run.progress(DOWNLOAD)
        await progress.begin()

        async def report(done: int, total: int | None) -> None:
            if total:
                await progress.report(done / total)

        download = await download_export(
            run.storage,
            path,
            run.export_path,
            max_bytes=settings.max_export_bytes,
            progress=report,
            client=run.http,
        )
        await progress.report(1.0)
        run.downloaded = True
        run.result["export_bytes"] = download.bytes_written
        run.result["download"] = {
            "attempts": download.attempts,
            "resumes": download.resumes,
            "restarts": download.restarts,
            "mib_per_second": round(download.mib_per_second, 1),
        }
        run.record_stage_seconds(DOWNLOAD.name, time.monotonic() - started)
